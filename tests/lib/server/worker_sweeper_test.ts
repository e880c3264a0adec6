import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import { sweepWorkers } from "../../../lib/server/worker_sweeper.ts";
import { eventually, job, startFixture } from "./_dispatch_fixture.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...opts,
  name:
    "sweepWorkers() expires a silent worker on its clock and requeues its submitted and started builds",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    try {
      const [a, b] = await f.addJobs([job("a", 1), job("b", 2)]);
      const now = Math.floor(f.clock.now() / 1000);
      for (const name of ["SILENT", "CHATTY"]) {
        await f.store.upsertWorker({
          name,
          address: "127.0.0.1",
          machine: "m",
          systems: ["x86_64-linux"],
          lastSeen: now,
        });
      }
      await f.store.popBuild("SILENT", ["x86_64-linux"], now);
      await f.store.popBuild("SILENT", ["x86_64-linux"], now);
      await f.store.markStarted(a, "SILENT", "/log", now);
      const sweeping = sweepWorkers({
        store: f.store,
        clock: f.clock,
        logger: f.logger,
        timeoutSeconds: 120,
      }, abort.signal);
      // Every 30 s (a quarter of the timeout) a sweep; CHATTY keeps pinging.
      for (let t = 0; t < 5; t++) {
        await f.clock.advance(30_000);
        await f.store.touchWorker("CHATTY", Math.floor(f.clock.now() / 1000));
      }
      await eventually(async () =>
        (await f.store.getWorker("SILENT")) === null
      );
      assert.equal(await f.status(a), BuildStatus.scheduled);
      assert.equal(await f.status(b), BuildStatus.scheduled);
      assert.ok(await f.store.getWorker("CHATTY"));
      assert.ok(
        f.lines.some((l) => l.startsWith("warn worker expired worker=SILENT")),
      );
      abort.abort();
      await sweeping;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name: "sweepWorkers() survives a failing store and keeps sweeping",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    try {
      let calls = 0;
      const store = Object.create(f.store);
      store.expireWorkers = () => {
        calls++;
        return calls === 1
          ? Promise.reject(new Error("disk I/O error"))
          : Promise.resolve([]);
      };
      const sweeping = sweepWorkers({
        store,
        clock: f.clock,
        logger: f.logger,
        timeoutSeconds: 4,
        intervalMs: 1000,
      }, abort.signal);
      for (let i = 0; i < 3; i++) await f.clock.advance(1000);
      await eventually(() => calls >= 3);
      assert.ok(f.lines.some((l) => l.startsWith("error worker sweep failed")));
      abort.abort();
      await sweeping;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "sweepWorkers() sweeps as soon as it starts: frequent server restarts cannot starve it",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    try {
      const [a] = await f.addJobs([job("a", 1)]);
      const now = Math.floor(f.clock.now() / 1000);
      await f.store.upsertWorker({
        name: "DEAD",
        address: "127.0.0.1",
        machine: "m",
        systems: ["x86_64-linux"],
        lastSeen: now - 121,
      });
      await f.store.popBuild("DEAD", ["x86_64-linux"], now);
      const sweeping = sweepWorkers({
        store: f.store,
        clock: f.clock,
        logger: f.logger,
        timeoutSeconds: 120,
      }, abort.signal);
      // No clock advance at all.
      await eventually(async () =>
        (await f.status(a)) === BuildStatus.scheduled
      );
      assert.equal(await f.store.getWorker("DEAD"), null);
      abort.abort();
      await sweeping;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});
