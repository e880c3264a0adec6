import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { listWorkerStatuses } from "../../../lib/web/worker_status.ts";
import { servedSystems } from "../../../lib/web/queue_reasons.ts";

Deno.test("listWorkerStatuses() shows a worker silent for most of the timeout as unresponsive, before the server forgets it", async () => {
  const store = openSqliteStore(":memory:");
  try {
    const now = 10_000;
    for (const [name, silent] of [["pinging", 61], ["fading", 95]] as const) {
      await store.upsertWorker({
        name,
        address: "127.0.0.1",
        machine: "box",
        systems: ["x86_64-linux"],
        lastSeen: now - silent,
        timeoutSeconds: 120,
      });
    }
    const statuses = await listWorkerStatuses(store, now, 120);
    assert.deepEqual(
      statuses.map(({ worker, unresponsive }) => [worker.name, unresponsive]),
      [["fading", true], ["pinging", false]],
    );
  } finally {
    await store.close();
  }
});

Deno.test("listWorkerStatuses() and servedSystems() judge each worker by the timeout its row records, this server's only for rows recording none", async () => {
  const store = openSqliteStore(":memory:");
  try {
    const now = 10_000;
    // Silent 200 s: heard by a server of 600 s (a bad link), by one of
    // 120 s, and by a server that recorded no timeout.
    const rows = [
      ["far", 600, "aarch64-linux"],
      ["near", 120, "x86_64-linux"],
      ["old", null, "i686-linux"],
    ] as const;
    for (const [name, timeoutSeconds, system] of rows) {
      await store.upsertWorker({
        name,
        address: "127.0.0.1",
        machine: "box",
        systems: [system],
        lastSeen: now - 200,
        timeoutSeconds,
      });
    }
    const statuses = await listWorkerStatuses(store, now, 300);
    assert.deepEqual(
      statuses.map(({ worker, unresponsive }) => [worker.name, unresponsive]),
      [["far", false], ["near", true], ["old", false]],
    );
    const served = servedSystems(await store.listWorkers(), now, 300);
    assert.deepEqual([...served].sort(), ["aarch64-linux", "i686-linux"]);
  } finally {
    await store.close();
  }
});
