// Servers sharing one database, each with a state directory of its own
// (issue 8: front ends and a dispatcher, maybe on several machines): who
// runs an evaluation is read from the database, not from a directory.

import assert from "node:assert/strict";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import {
  abortStaleEvaluations,
  runEvaluation,
} from "../../../lib/server/evaluation_runner.ts";
import {
  HEARTBEAT_INTERVAL_MS,
  STALE_AFTER_MS,
  thisHost,
} from "../../../lib/server/evaluation_owner.ts";
import { removeLeftWorkDirs } from "../../../lib/server/evaluation_work.ts";
import { EvaluationStatus, type Store } from "../../../lib/store/types.ts";
import {
  evaluationOptions,
  fakeGuix,
  testSpecification,
} from "./_guix_fixture.ts";
import { FakeClock } from "./_dispatch_fixture.ts";
import {
  type Backend,
  backends,
  type SharedDatabase,
  sharedDatabase as sharedOne,
} from "./_shared_database.ts";
import {
  makeDaemon,
  makeRoot,
  writeScenario,
} from "../../fake-guix/test_env.ts";

const SPEC = testSpecification("s");

/**
 * A fresh database shared by two servers, with SPEC, closed (on
 * PostgreSQL its schema dropped) when the test's `await using` ends.
 */
async function sharedDatabase(
  backend: Backend,
): Promise<SharedDatabase & AsyncDisposable> {
  const db = await sharedOne(backend, SPEC, "lorica_ownership");
  return Object.assign(db, { [Symbol.asyncDispose]: () => db.close() });
}

/** The id of the first evaluation `store` shows: polls (bounded). */
async function firstEvaluation(store: Store): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const [evaluation] = await store.listEvaluations({ limit: 1 });
    if (evaluation) return evaluation.id;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error("Cannot find the evaluation: none was added in 10 s");
}

for (const { name, ignore, needs } of backends) {
  Deno.test({
    name:
      `abortStaleEvaluations() on ${name} leaves alone the evaluation a live server with another state directory runs${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      const daemon = await makeDaemon(db.root, "a", {
        FAKE_GUIX_SCENARIO: await writeScenario(db.root, {
          evaluationSeconds: 2,
          packages: [{ name: "p", version: "1" }],
        }),
      });
      const clock = new FakeClock();
      const running = runEvaluation(SPEC, {
        ...evaluationOptions(`${db.root}/a`, db.a, fakeGuix(daemon)),
        clock,
      });
      const id = await firstEvaluation(db.b);
      // Machine B starts while A evaluates: A's heartbeat is fresh.
      await clock.advance(10_000);
      assert.equal(
        await abortStaleEvaluations(
          db.b,
          clock,
          silentLogger,
          `${db.root}/b/state`,
        ),
        0,
      );
      assert.equal(
        (await db.b.getEvaluation(id))?.status,
        EvaluationStatus.started,
      );
      const outcome = await running;
      assert.equal(outcome.status, EvaluationStatus.succeeded);
      assert.equal(
        (await db.b.getEvaluation(id))?.status,
        EvaluationStatus.succeeded,
      );
    },
  });
}

/** Machine A's evaluation options on `db`, its evaluator playing `scenario`. */
async function machineA(db: SharedDatabase, scenario: unknown) {
  const daemon = await makeDaemon(db.root, "a", {
    FAKE_GUIX_SCENARIO: await writeScenario(db.root, scenario),
  });
  const clock = new FakeClock();
  const lines: string[] = [];
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  return {
    clock,
    lines,
    options: {
      ...evaluationOptions(`${db.root}/a`, db.a, fakeGuix(daemon)),
      clock,
      logger,
    },
  };
}

/**
 * Machine A's evaluation on `db` of an evaluator that never ends, once
 * its row is there: A's clock and log lines, the evaluation's `id` and the
 * `running` evaluation, which ends once A shuts down (`shutdown()`, or at
 * the latest when the test's `using` ends).
 */
async function hangingEvaluationOnA(db: SharedDatabase) {
  const a = await machineA(db, {
    evaluationHang: true,
    packages: [{ name: "p", version: "1" }],
  });
  const shutdown = new AbortController();
  const running = runEvaluation(SPEC, {
    ...a.options,
    signal: shutdown.signal,
  });
  try {
    const id = await firstEvaluation(db.b);
    return {
      ...a,
      id,
      running,
      shutdown: () => shutdown.abort(),
      [Symbol.dispose]: () => shutdown.abort(),
    };
  } catch (error) {
    shutdown.abort();
    throw error;
  }
}

/** Machine B's start, its clock `ms` ahead of `clock`. */
async function startMachineB(db: SharedDatabase, clock: FakeClock, ms: number) {
  const later = new FakeClock();
  await later.step(clock.now() - later.now() + ms);
  return await abortStaleEvaluations(
    db.b,
    later,
    silentLogger,
    `${db.root}/b/state`,
  );
}

/** `promise`, or a rejection after `ms` of real time. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

for (const { name, ignore, needs } of backends) {
  Deno.test({
    name:
      `abortStaleEvaluations() on ${name} aborts the evaluation of a server elsewhere once its heartbeat is older than ${STALE_AFTER_MS} ms${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      const clock = new FakeClock();
      const owner = { host: "build-a", pid: Deno.pid, started: "1" };
      const id = await db.a.addEvaluation("s", [], clock.now() / 1000, {
        owner,
      });
      // Silent for less than the limit: still its owner's.
      assert.equal(await startMachineB(db, clock, STALE_AFTER_MS), 0);
      assert.equal(
        (await db.b.getEvaluation(id))?.status,
        EvaluationStatus.started,
      );
      assert.equal(await startMachineB(db, clock, STALE_AFTER_MS + 1000), 1);
      assert.equal(
        (await db.b.getEvaluation(id))?.status,
        EvaluationStatus.aborted,
      );
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} renews its heartbeat, so that a server starting minutes later leaves it alone${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      using a = await hangingEvaluationOnA(db);
      const { id, running } = a;
      for (let i = 0; i < 4; i++) {
        // Time passes once the heartbeat waits for it: the row appears
        // before the heartbeat's first sleep, and a loaded machine may
        // run the test's advance in between (the heartbeat then lagged
        // an interval behind, and the test failed).
        const sleeping = Date.now() + 20_000;
        while (
          a.clock.sleepersDueWithin(HEARTBEAT_INTERVAL_MS) === 0 &&
          Date.now() < sleeping
        ) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await a.clock.advance(HEARTBEAT_INTERVAL_MS);
        // The renewal is one database write: let it land (a loaded
        // machine may take a while; a missing renewal fails below).
        const deadline = Date.now() + 20_000;
        while (Date.now() < deadline) {
          const [row] = await db.b.listRunningEvaluations();
          if (row?.heartbeat === a.clock.now() / 1000) break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      const [row] = await db.b.listRunningEvaluations();
      assert.equal(row.id, id);
      assert.equal(row.heartbeat, a.clock.now() / 1000);
      assert.equal(row.owner?.pid, Deno.pid);
      // Two minutes after it started, B finds it fresh.
      assert.equal(await startMachineB(db, a.clock, 1000), 0);
      a.shutdown();
      const outcome = await within(running, 20_000, "runEvaluation()");
      assert.equal(outcome.status, EvaluationStatus.aborted);
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} aborted by another server while it evaluates stops, stays aborted and registers nothing${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      using a = await hangingEvaluationOnA(db);
      const { id, running } = a;
      // A is cut off from the database (or paused) for longer than the
      // limit: B, starting then, takes the evaluation for abandoned.
      assert.equal(
        await startMachineB(db, a.clock, STALE_AFTER_MS + 1000),
        1,
      );
      // A's next renewal finds it aborted, and A gives it up.
      await a.clock.advance(HEARTBEAT_INTERVAL_MS);
      const outcome = await within(running, 20_000, "runEvaluation()");
      assert.equal(outcome.status, EvaluationStatus.aborted);
      assert.equal(
        (await db.b.getEvaluation(id))?.status,
        EvaluationStatus.aborted,
      );
      assert.deepEqual(await db.b.queue({}, 10), []);
      assert.match(
        a.lines.join("\n"),
        new RegExp(`evaluation aborted elsewhere evaluation=${id}`),
      );
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} canceled through another server while it evaluates stops, registers nothing and logs the cancel${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      using a = await hangingEvaluationOnA(db);
      const { id, running } = a;
      // An administrator cancels it through B's web interface.
      await db.b.cancelEvaluation(id, a.clock.now() / 1000);
      // A's next renewal finds it ended, and A gives it up.
      await a.clock.advance(HEARTBEAT_INTERVAL_MS);
      const outcome = await within(running, 20_000, "runEvaluation()");
      assert.equal(outcome.status, EvaluationStatus.aborted);
      assert.deepEqual(await db.b.queue({}, 10), []);
      const lines = a.lines.join("\n");
      assert.match(lines, new RegExp(`evaluation canceled evaluation=${id}`));
      assert.doesNotMatch(lines, /aborted elsewhere/);
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} aborted by another server just before it registers builds registers none and leaves it aborted${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      const a = await machineA(db, {
        packages: [{ name: "p", version: "1" }],
      });
      // B's abort lands between the evaluator's end and the
      // registration, the narrowest of windows.
      const store: Store = {
        ...db.a,
        registerBuilds: async (...args) => {
          assert.equal(
            await startMachineB(db, a.clock, STALE_AFTER_MS + 1000),
            1,
          );
          return await db.a.registerBuilds(...args);
        },
      };
      const outcome = await runEvaluation(SPEC, { ...a.options, store });
      assert.equal(outcome.status, EvaluationStatus.aborted);
      assert.equal(
        (await db.b.getEvaluation(outcome.id))?.status,
        EvaluationStatus.aborted,
      );
      assert.deepEqual(await db.b.queue({}, 10), []);
      assert.match(a.lines.join("\n"), /evaluation aborted elsewhere/);
      assert.doesNotMatch(a.lines.join("\n"), /ERROR/);
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} whose registration outlasts ${STALE_AFTER_MS} ms is not taken for abandoned by a server judging it as it ends${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      const a = await machineA(db, {
        packages: [{ name: "p", version: "1" }],
      });
      // The registration holds the evaluation's row: a renewal issued
      // meanwhile lands after it, with the time it was issued at, as
      // behind PostgreSQL's row lock or SQLite's one writer. Renewals
      // wait while `held` is pending.
      let held: Promise<void> = Promise.resolve();
      const renewals: Promise<boolean>[] = [];
      let waitedBehind = 0;
      let abortedByB: number | undefined;
      const store: Store = {
        ...db.a,
        renewEvaluationHeartbeat: (id, now) => {
          const renewal = held.then(() =>
            db.a.renewEvaluationHeartbeat(id, now)
          );
          renewals.push(renewal);
          return renewal;
        },
        registerBuilds: async (...args) => {
          const done = Promise.withResolvers<void>();
          held = done.promise;
          try {
            // 250,000 jobs on a slow database: over three minutes.
            for (let i = 0; i < 7; i++) {
              await a.clock.advance(HEARTBEAT_INTERVAL_MS);
            }
            return await db.a.registerBuilds(...args);
          } finally {
            done.resolve();
          }
        },
        finishEvaluation: async (...args) => {
          // The renewals that waited behind the registration land
          // (called before they do: no I/O since its end); one issued
          // after them waits for B, who must judge what the
          // registration and they left.
          const swept = Promise.withResolvers<void>();
          held = swept.promise;
          const waited = [...renewals];
          waitedBehind = waited.length;
          await Promise.all(waited);
          // B sweeps as A is about to record the success.
          abortedByB = await startMachineB(db, a.clock, 1000);
          swept.resolve();
          return await db.a.finishEvaluation(...args);
        },
      };
      const outcome = await runEvaluation(SPEC, { ...a.options, store });
      assert.equal(abortedByB, 0, "B took it for abandoned");
      assert.equal(outcome.status, EvaluationStatus.succeeded);
      assert.equal(
        (await db.b.getEvaluation(outcome.id))?.status,
        EvaluationStatus.succeeded,
      );
      assert.equal(
        waitedBehind,
        1,
        "renewals issued during the registration",
      );
      assert.doesNotMatch(a.lines.join("\n"), /aborted elsewhere|ERROR/);
    },
  });

  Deno.test({
    name:
      `runEvaluation() on ${name} whose heartbeat renewal lands after its own end status does not take it for aborted elsewhere${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      const a = await machineA(db, {
        packages: [{ name: "p", version: "1" }],
      });
      const renewals: Promise<boolean>[] = [];
      const store: Store = {
        ...db.a,
        renewEvaluationHeartbeat: (...args) => {
          const renewal = db.a.renewEvaluationHeartbeat(...args);
          renewals.push(renewal);
          return renewal;
        },
        finishEvaluation: async (...args) => {
          const recorded = await db.a.finishEvaluation(...args);
          // The heartbeat's interval ends as the success is recorded.
          await a.clock.advance(HEARTBEAT_INTERVAL_MS);
          assert.deepEqual(await Promise.all(renewals), [false]);
          return recorded;
        },
      };
      const outcome = await runEvaluation(SPEC, { ...a.options, store });
      assert.equal(outcome.status, EvaluationStatus.succeeded);
      assert.deepEqual(
        a.lines.filter((line) => !line.startsWith("info")),
        [],
      );
    },
  });

  Deno.test({
    name:
      `abortStaleEvaluations() on ${name} asks /proc about owners on this host: a dead one's evaluation ends at once, a live one's stays${needs}`,
    ignore,
    async fn() {
      await using db = await sharedDatabase(name);
      // Another server process of this host, sharing the state directory.
      const other = new Deno.Command("sleep", { args: ["60"] }).spawn();
      try {
        const clock = new FakeClock();
        const now = clock.now() / 1000;
        const host = thisHost();
        const live = await db.a.addEvaluation("s", [], now, {
          owner: { host, pid: other.pid, started: startTime(other.pid) },
        });
        // The same pid, reused by a process started later.
        const dead = await db.a.addEvaluation("s", [], now, {
          owner: { host, pid: other.pid, started: "1" },
        });
        // The live one's heartbeat is old (its database writes fail, say):
        // /proc vouches for it all the same. The dead one's is fresh.
        const later = new FakeClock();
        await later.step(STALE_AFTER_MS * 10);
        await db.a.renewEvaluationHeartbeat(dead, later.now() / 1000);
        const stateDir = `${db.root}/state`;
        assert.equal(
          await abortStaleEvaluations(db.b, later, silentLogger, stateDir),
          1,
        );
        const status = async (id: number) =>
          (await db.b.getEvaluation(id))?.status;
        assert.equal(await status(live), EvaluationStatus.started);
        assert.equal(await status(dead), EvaluationStatus.aborted);
      } finally {
        other.kill();
        await other.status;
      }
    },
  });
}

Deno.test("removeLeftWorkDirs() keeps the work directory of an evaluation still started in the database, whoever owns it", async () => {
  const root = await makeRoot();
  try {
    const work = `${root}/evaluation-work`;
    // Written by a server on another machine sharing the directory (NFS).
    for (const id of [7, 8]) {
      Deno.mkdirSync(`${work}/${id}`, { recursive: true });
      Deno.writeTextFileSync(
        `${work}/${id}/owner.json`,
        JSON.stringify({ host: "build-a", pid: 1, started: "1" }),
      );
    }
    assert.equal(
      await removeLeftWorkDirs(root, silentLogger, { running: new Set([7]) }),
      1,
    );
    assert.deepEqual(
      [...Deno.readDirSync(work)].map((entry) => entry.name),
      ["7"],
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Field 22 of /proc/PID/stat: when the process started. */
function startTime(pid: number): string {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}
