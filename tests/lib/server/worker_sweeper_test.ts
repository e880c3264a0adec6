import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  MIN_SWEEP_INTERVAL_MS,
  sweepInterval,
  sweepOnce,
  SweepState,
  sweepWorkers,
  type WorkerSweeperOptions,
} from "../../../lib/server/worker_sweeper.ts";
import { eventually, type Fixture, job } from "./_dispatch_fixture.ts";
import { withFixture } from "./_with_fixture.ts";
import { connectionRefused, failingStore } from "../store/_failing_store.ts";

/**
 * Starts the sweeper loop; disposing of it aborts the loop and waits for it
 * to end, so that no sweep outlives its test's fixture (nor hides an error
 * the loop threw).
 */
function startSweeping(options: WorkerSweeperOptions): AsyncDisposable {
  const abort = new AbortController();
  const sweeping = sweepWorkers(options, abort.signal);
  return {
    async [Symbol.asyncDispose]() {
      abort.abort();
      await sweeping;
    },
  };
}

/** The fixture's clock in whole seconds, as the store counts time. */
function seconds(f: Fixture): number {
  return Math.floor(f.clock.now() / 1000);
}

/** Sweeps of the fixture's store and clock, with a 120 s timeout. */
function sweepOptions(f: Fixture): WorkerSweeperOptions {
  return {
    store: f.store,
    clock: f.clock,
    logger: f.logger,
    timeoutSeconds: 120,
  };
}

/**
 * Registers an x86_64 worker `name` heard now with a 120 s timeout, or as
 * `row` says otherwise (a null timeout: a row from before they were
 * recorded).
 */
function addWorker(
  f: Fixture,
  name: string,
  row: { lastSeen?: number; timeoutSeconds?: number | null } = {},
): Promise<void> {
  return f.store.upsertWorker({
    name,
    address: "127.0.0.1",
    machine: "m",
    systems: ["x86_64-linux"],
    lastSeen: row.lastSeen ?? seconds(f),
    timeoutSeconds: row.timeoutSeconds === undefined ? 120 : row.timeoutSeconds,
  });
}

/** Hands `worker` the best scheduled build, and starts `drv` (one it holds). */
async function startOn(f: Fixture, worker: string, drv: string) {
  await f.store.popBuild(worker, ["x86_64-linux"], seconds(f));
  await f.store.markStarted(drv, worker, "/log", seconds(f));
}

Deno.test({
  name:
    "sweepWorkers() expires a silent worker on its clock and requeues its submitted and started builds",
  fn: () =>
    withFixture(async (f) => {
      const [a, b] = await f.addJobs([job("a", 1), job("b", 2)]);
      for (const name of ["SILENT", "CHATTY"]) await addWorker(f, name);
      await f.store.popBuild("SILENT", ["x86_64-linux"], seconds(f));
      await startOn(f, "SILENT", a);
      await using _sweeping = startSweeping(sweepOptions(f));
      // Every 30 s (a quarter of the timeout) a sweep; CHATTY keeps pinging.
      // A sweep still running when the clock moves on sleeps from the next
      // step (a loaded machine): time goes on until SILENT is expired.
      const step = async () => {
        await f.clock.advance(30_000);
        await f.store.touchWorker("CHATTY", seconds(f), 120);
      };
      for (let t = 0; t < 5; t++) await step();
      await eventually(async () => {
        if ((await f.store.getWorker("SILENT")) === null) return true;
        await step();
        return false;
      });
      assert.equal(await f.status(a), BuildStatus.scheduled);
      assert.equal(await f.status(b), BuildStatus.scheduled);
      assert.ok(await f.store.getWorker("CHATTY"));
      assert.ok(
        f.lines.includes(
          "warn worker expired worker=SILENT timeout=120 requeued=2",
        ),
        f.lines.join("\n"),
      );
    }),
});

Deno.test({
  name: "sweepWorkers() survives a failing store and keeps sweeping",
  fn: () =>
    withFixture(async (f) => {
      let calls = 0;
      const store = Object.create(f.store);
      store.expireWorkers = () => {
        calls++;
        return calls === 1
          ? Promise.reject(new Error("disk I/O error"))
          : Promise.resolve([]);
      };
      await using _sweeping = startSweeping({
        store,
        clock: f.clock,
        logger: f.logger,
        timeoutSeconds: 4,
        intervalMs: 1000,
      });
      for (let i = 0; i < 3; i++) await f.clock.advance(1000);
      await eventually(() => calls >= 3);
      assert.ok(f.lines.some((l) => l.startsWith("error worker sweep failed")));
    }),
});

Deno.test({
  name:
    "sweepWorkers() sweeps as soon as it starts: frequent server restarts cannot starve it",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      await addWorker(f, "DEAD", { lastSeen: seconds(f) - 121 });
      await f.store.popBuild("DEAD", ["x86_64-linux"], seconds(f));
      await using _sweeping = startSweeping(sweepOptions(f));
      // No clock advance at all.
      await eventually(async () =>
        (await f.status(a)) === BuildStatus.scheduled
      );
      assert.equal(await f.store.getWorker("DEAD"), null);
    }),
});

Deno.test("sweepInterval() is a quarter of the shortest timeout, this server's or one recorded, and never under a second for another's", () => {
  assert.equal(sweepInterval(600, null), 150_000);
  assert.equal(sweepInterval(600, 600), 150_000);
  assert.equal(sweepInterval(120, 600), 30_000);
  assert.equal(sweepInterval(600, 20), 5000);
  assert.equal(sweepInterval(600, 1), MIN_SWEEP_INTERVAL_MS);
  // This server's own short timeout is its own business.
  assert.equal(sweepInterval(2, 1), 500);
});

Deno.test({
  name:
    "sweepWorkers() of a server with a long timeout sweeps at the pace of a shorter one its database records: a stopped server's worker goes in time",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      const heard = seconds(f);
      // Last heard by a server of 20 s, stopped since; the one sweeping
      // waits 600 s for its own workers.
      await addWorker(f, "SHORT", { timeoutSeconds: 20 });
      await f.store.popBuild("SHORT", ["x86_64-linux"], heard);
      await using _sweeping = startSweeping({
        ...sweepOptions(f),
        timeoutSeconds: 600,
      });
      // Five seconds at a time, for a minute at most: a sweep every 150 s
      // (a quarter of 600) would find the row only then.
      await eventually(async () => {
        if ((await f.store.getWorker("SHORT")) === null) return true;
        if (seconds(f) - heard < 60) await f.clock.advance(5000);
        return false;
      }, "the 20-s worker expired within a minute");
      assert.ok(seconds(f) - heard <= 30, `expired at ${seconds(f) - heard} s`);
      assert.equal(await f.status(a), BuildStatus.scheduled);
      assert.ok(
        f.lines.includes(
          "warn worker expired worker=SHORT timeout=20 requeued=1",
        ),
        f.lines.join("\n"),
      );
    }),
});

Deno.test({
  name:
    "sweepOnce() judges each worker by the timeout its row records: another server's longer one, and its own only for a row recording none",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      // Heard now: LONG by a server of 600 s, building a; OWN by this one
      // (120 s); NONE by a server from before timeouts were recorded.
      await addWorker(f, "LONG", { timeoutSeconds: 600 });
      await addWorker(f, "OWN");
      await addWorker(f, "NONE", { timeoutSeconds: null });
      await startOn(f, "LONG", a);
      const options = sweepOptions(f);
      const state = new SweepState();
      await f.clock.advance(121_000);
      assert.deepEqual(await sweepOnce(options, state), ["NONE", "OWN"]);
      assert.equal(await f.status(a), BuildStatus.started);
      for (const name of ["NONE", "OWN"]) {
        assert.ok(
          f.lines.includes(
            `warn worker expired worker=${name} timeout=120 requeued=0`,
          ),
          f.lines.join("\n"),
        );
      }
      // Silent for its whole 600 s, not longer: kept; then gone.
      await f.clock.advance(479_000);
      assert.deepEqual(await sweepOnce(options, state), []);
      await f.clock.advance(1000);
      assert.deepEqual(await sweepOnce(options, state), ["LONG"]);
      assert.equal(await f.status(a), BuildStatus.scheduled);
      assert.ok(
        f.lines.includes(
          "warn worker expired worker=LONG timeout=600 requeued=1",
        ),
        f.lines.join("\n"),
      );
    }),
});

Deno.test({
  name:
    "sweepOnce(): a forward step of the wall clock expires no worker, and silence after it still counts",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      await addWorker(f, "BUSY");
      await addWorker(f, "IDLE");
      await startOn(f, "BUSY", a);
      const options = sweepOptions(f);
      const state = new SweepState();
      assert.deepEqual(await sweepOnce(options, state), []);
      // 60 s pass; half-way NTP steps the wall clock a day ahead.
      await f.clock.advance(30_000);
      await f.clock.step(86_400_000);
      await f.clock.advance(30_000);
      assert.deepEqual(await sweepOnce(options, state), []);
      assert.equal(await f.status(a), BuildStatus.started);
      assert.ok(
        f.lines.includes("warn wall clock stepped seconds=86400 credited=2"),
        f.lines.join("\n"),
      );
      // BUSY talks, IDLE stays silent: 121 s of silence in all expire it.
      await f.store.touchWorker("BUSY", seconds(f), 120);
      await f.clock.advance(61_000);
      assert.deepEqual(await sweepOnce(options, state), ["IDLE"]);
      assert.equal(await f.status(a), BuildStatus.started);
      assert.ok(await f.store.getWorker("BUSY"));
    }),
});

Deno.test({
  name:
    "sweepOnce(): a step of the wall clock back an hour expires no worker and is logged",
  fn: () =>
    withFixture(async (f) => {
      await addWorker(f, "W");
      const options = sweepOptions(f);
      const state = new SweepState();
      assert.deepEqual(await sweepOnce(options, state), []);
      await f.clock.advance(30_000);
      await f.clock.step(-3_600_000);
      assert.deepEqual(await sweepOnce(options, state), []);
      assert.ok(f.lines.includes("warn wall clock stepped seconds=-3600"));
      assert.equal((await f.store.getWorker("W"))?.lastSeen, seconds(f) + 3570);
    }),
});

Deno.test({
  name:
    "sweepOnce(): --max-build-wait counts the time that passed, not a forward step of the wall clock",
  fn: () =>
    withFixture(async (f) => {
      const [early] = await f.addJobs([job("early", 1, "aarch64-linux")]);
      const options = { ...sweepOptions(f), maxWaitSeconds: 600 };
      const state = new SweepState();
      await sweepOnce(options, state);
      await f.clock.advance(30_000);
      await f.clock.step(86_400_000);
      await f.clock.advance(30_000);
      // 60 s of waiting, whatever the wall clock says.
      await sweepOnce(options, state);
      assert.equal(await f.status(early), BuildStatus.scheduled);
      const [late] = await f.addJobs([job("late", 2, "aarch64-linux")]);
      await f.clock.advance(541_000);
      await sweepOnce(options, state);
      assert.equal(await f.status(early), BuildStatus.failedOther);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith(`error build expired drv=${early} `) &&
          l.includes(" waited=601 ")
        ),
        f.lines.join("\n"),
      );
      // Queued after the step: 541 s of its own.
      assert.equal(await f.status(late), BuildStatus.scheduled);
      await f.clock.advance(60_000);
      await sweepOnce(options, state);
      assert.equal(await f.status(late), BuildStatus.failedOther);
    }),
});

Deno.test({
  name:
    "sweepWorkers() after a database outage longer than the timeout expires no worker until each had a whole timeout to be heard",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      for (const name of ["BUSY", "DEAD"]) await addWorker(f, name);
      await startOn(f, "BUSY", a);
      // PostgreSQL down for 200 s: every store call fails.
      let down = true;
      let calls = 0;
      const store = failingStore(f.store, () => {
        calls++;
        return down ? connectionRefused() : null;
      });
      await using _sweeping = startSweeping({ ...sweepOptions(f), store });
      for (let t = 0; t < 7; t++) {
        await eventually(() => calls > t, `sweep ${t}`);
        await f.clock.advance(30_000);
      }
      down = false;
      // Back: the sweeps work, BUSY's held ping is served 10 s later.
      await eventually(() => calls >= 8, "a sweep after the outage");
      await f.clock.advance(10_000);
      await f.store.touchWorker("BUSY", seconds(f), 120);
      await f.clock.advance(20_000);
      await eventually(() => calls >= 9, "a second sweep");
      assert.ok(await f.store.getWorker("BUSY"));
      assert.ok(await f.store.getWorker("DEAD"));
      assert.equal(await f.status(a), BuildStatus.started);
      // DEAD stays silent past a whole timeout from the outage's end.
      for (let t = 0; t < 5; t++) {
        await f.clock.advance(30_000);
        await f.store.touchWorker("BUSY", seconds(f), 120);
      }
      await eventually(async () => (await f.store.getWorker("DEAD")) === null);
      assert.ok(await f.store.getWorker("BUSY"));
      assert.equal(await f.status(a), BuildStatus.started);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("error worker sweep failed") &&
          l.includes("ECONNREFUSED") && l.includes("silentFrom=")
        ),
      );
    }),
});

Deno.test({
  name:
    "sweepWorkers() woken late by a pause of its own process (SIGSTOP) takes no live worker for gone: its pings waited unread",
  fn: () =>
    withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1)]);
      await addWorker(f, "LIVE");
      await startOn(f, "LIVE", a);
      let sweeps = 0;
      const store = new Proxy(f.store, {
        get(target, property) {
          if (property === "expireWorkers") {
            return (...args: Parameters<typeof target.expireWorkers>) => {
              sweeps++;
              return target.expireWorkers(...args);
            };
          }
          const value = Reflect.get(target, property, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      await using _sweeping = startSweeping({ ...sweepOptions(f), store });
      await eventually(() => sweeps === 1, "the first sweep");
      await eventually(() => f.clock.sleepersDueWithin(30_000) > 0);
      // Stopped for 150 s, past the timeout: the sweeper's timer and LIVE's
      // pings are both due when the process runs again.
      await f.clock.advance(150_000);
      await eventually(() => sweeps === 2, "the sweep after the pause");
      assert.ok(await f.store.getWorker("LIVE"), f.lines.join("\n"));
      assert.equal(await f.status(a), BuildStatus.started);
      assert.ok(
        f.lines.some((l) => l.startsWith("warn sweep woke late seconds=120 ")),
        f.lines.join("\n"),
      );
      // Silence after the pause still counts: a worker that stays silent
      // goes a timeout later.
      await eventually(async () => {
        if ((await f.store.getWorker("LIVE")) === null) return true;
        await f.clock.advance(30_000);
        return false;
      }, "LIVE expired once silent for a timeout after the pause");
      assert.equal(await f.status(a), BuildStatus.scheduled);
    }),
});
