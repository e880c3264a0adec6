import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { listWorkerStatuses } from "../../../lib/web/worker_status.ts";

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
