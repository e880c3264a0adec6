// Store procedures that lock several builds never wait for each other on
// PostgreSQL (lib/store/sql_build_locks.ts), when LORICA_TEST_POSTGRES
// names a server.
//
// Each case lines two procedures up, on two stores sharing a schema,
// behind two "gates", transactions of the test's own holding builds: the
// first procedure comes to wait behind them, then the second; the gate
// holding the build with the lower id opens, then the other. A procedure
// that took the higher id first then holds it while it waits for the
// lower, which the other (taking them in id order) holds while it waits
// for the higher: PostgreSQL breaks the cycle only after deadlock_timeout
// (1 s by default), aborting one, which the store runs again. The test
// watches for that cycle until both procedures end.

import assert from "node:assert/strict";
import type postgres from "postgres";
import { BuildStatus } from "../../../lib/store/types.ts";
import { drv, job } from "./store_contract.ts";
import { eventuallyWaiting, openBuildGate } from "./_postgres_gates.ts";
import type { Store } from "../../../lib/store/types.ts";
import { withSharedSchema } from "./_shared_schema.ts";
import { NEEDS_POSTGRES, WITHOUT_POSTGRES } from "../../_test_postgres.ts";

/** How the two procedures of a case went. */
interface Race {
  /** Whether they were seen waiting for each other. */
  deadlocked: boolean;
  first: unknown;
  second: unknown;
}

/** What one case stages, on the first store, and races. */
interface LockCase {
  name: string;
  /** The builds, by job name, each in job order: ids 1, 2, … */
  jobs: { name: string; inputs?: string[] }[];
  /**
   * Brings the builds to the state the race starts from (`sql`: a
   * connection on the case's schema).
   */
  prepare(store: Store, sql: postgres.Sql): Promise<void>;
  /**
   * The procedure lined up first: without its rows locked in id order,
   * it takes build 2 before build 1.
   */
  first(store: Store, evaluation: number): Promise<unknown>;
  /** The other, which takes build 1 before build 2. */
  second(store: Store, evaluation: number): Promise<unknown>;
  /** The state both left, checked on the first store. */
  check(store: Store, race: Race): Promise<void>;
}

const CASES: LockCase[] = [
  {
    // A success locked its build, then the dependent; the restart locked
    // the evaluation's builds in id order, the dependent first.
    name:
      "completeBuild() of a success and restartEvaluation(), a dependent having a lower id than its input",
    jobs: [{ name: "app", inputs: ["lib"] }, { name: "lib" }],
    async prepare(store) {
      await store.cancelBuild(1, 2);
      await popped(store, "lib", "w1");
    },
    first: (store) =>
      store.completeBuild(drv("lib"), BuildStatus.succeeded, {
        worker: "w1",
        now: 3,
      }),
    second: (store, evaluation) => store.restartEvaluation(evaluation, 4),
    async check(store, race) {
      assert.deepEqual(race.first, { changed: true, dependentsFailed: 0 });
      // The restart came second: both builds are scheduled again, and
      // "app" goes out only once "lib" succeeded again.
      assert.equal(
        (await store.popBuild("w2", ["x86_64-linux"], 5))?.jobName,
        "lib",
      );
      assert.equal(await store.popBuild("w3", ["x86_64-linux"], 5), null);
    },
  },
  {
    // A failure locked its build, then walked to the dependent it fails;
    // the cancel locked the evaluation's pending builds in id order.
    name:
      "completeBuild() of a failure and cancelEvaluation(), a dependent having a lower id than its input",
    jobs: [{ name: "app", inputs: ["lib"] }, { name: "lib" }],
    async prepare(store) {
      await popped(store, "lib", "w1");
    },
    first: (store) =>
      store.completeBuild(drv("lib"), BuildStatus.failed, {
        worker: "w1",
        now: 3,
      }),
    second: (store, evaluation) => store.cancelEvaluation(evaluation, 4),
    async check(store, race) {
      assert.deepEqual(race.first, { changed: true, dependentsFailed: 1 });
      assert.equal(await statusOf(store, "lib"), BuildStatus.failed);
      assert.equal(await statusOf(store, "app"), BuildStatus.failedDependency);
    },
  },
  {
    // A restart of a success locked it, then its dependent to count it
    // pending again.
    name:
      "restartBuild() of a success and restartEvaluation(), a dependent having a lower id than its input",
    jobs: [{ name: "app", inputs: ["lib"] }, { name: "lib" }],
    async prepare(store) {
      await popped(store, "lib", "w1");
      await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
        worker: "w1",
        now: 2,
      });
      await store.cancelBuild(1, 2);
    },
    first: (store) => store.restartBuild(2, 3),
    second: (store, evaluation) => store.restartEvaluation(evaluation, 4),
    async check(store) {
      // Counted pending once: handed out after "lib" only.
      assert.equal(
        (await store.popBuild("w2", ["x86_64-linux"], 5))?.jobName,
        "lib",
      );
      assert.equal(await store.popBuild("w3", ["x86_64-linux"], 5), null);
    },
  },
  {
    // Starts reported in another order than the builds' ids.
    name:
      "markStartedMany() and cancelEvaluation(), the starts reported in descending id order",
    jobs: [{ name: "a" }, { name: "b" }],
    async prepare(store, sql) {
      await popped(store, "a", "w1");
      await popped(store, "b", "w1");
      await lastWritten(sql, "a");
    },
    first: (store) =>
      store.markStartedMany([
        { derivation: drv("b"), worker: "w1", log: "/b.log" },
        { derivation: drv("a"), worker: "w1", log: "/a.log" },
      ], 3),
    second: (store, evaluation) => store.cancelEvaluation(evaluation, 4),
    async check(store, race) {
      assert.deepEqual(race.first, [true, true]);
      assert.equal(await statusOf(store, "a"), BuildStatus.canceled);
      assert.equal(await statusOf(store, "b"), BuildStatus.canceled);
    },
  },
  {
    // A worker's builds, requeued in the order of the index of held
    // builds (status first) or of the table.
    name:
      "removeWorker() requeuing a worker's builds and cancelEvaluation(), the builds' ids descending in the index of held builds",
    jobs: [{ name: "a" }, { name: "b" }],
    async prepare(store) {
      await store.upsertWorker({
        name: "w1",
        address: "127.0.0.1",
        machine: "m",
        systems: ["x86_64-linux"],
        lastSeen: 1,
        timeoutSeconds: 120,
      });
      await popped(store, "a", "w1");
      await popped(store, "b", "w1");
      // "a" started (-1), "b" submitted (-3): "b" first in Builds_held.
      await store.markStarted(drv("a"), "w1", "/a.log", 2);
    },
    first: (store) => store.removeWorker("w1", 3),
    second: (store, evaluation) => store.cancelEvaluation(evaluation, 4),
    async check(store) {
      assert.equal(await statusOf(store, "a"), BuildStatus.canceled);
      assert.equal(await statusOf(store, "b"), BuildStatus.canceled);
    },
  },
  {
    // A registration holds the inputs it counts FOR SHARE until its
    // commit, which a restart of their evaluation waits for.
    name:
      "registerBuilds() locking existing inputs and restartEvaluation() of theirs, the inputs named in descending id order",
    jobs: [{ name: "a" }, { name: "b" }],
    async prepare(store, sql) {
      await store.cancelBuild(1, 2);
      await store.cancelBuild(2, 2);
      await lastWritten(sql, "a");
    },
    async first(store) {
      const next = await store.addEvaluation("guix", [], 3);
      return store.registerBuilds(next, [job("c", { inputs: ["b", "a"] })], {
        priority: 9,
        now: 3,
      });
    },
    second: (store, evaluation) => store.restartEvaluation(evaluation, 4),
    async check(store, race) {
      // Registered while its inputs were canceled (so failed-dependency),
      // then scheduled again with them.
      assert.deepEqual(race.first, { created: 1, known: 0, blocked: 1 });
      assert.equal(await statusOf(store, "a"), BuildStatus.scheduled);
      assert.equal(await statusOf(store, "c"), BuildStatus.scheduled);
    },
  },
];

for (const lockCase of CASES) {
  Deno.test({
    name: `${lockCase.name} never wait for each other${NEEDS_POSTGRES}`,
    ignore: WITHOUT_POSTGRES,
    fn: () =>
      withSharedSchema(
        "lorica_lock_test",
        async ({ url, schema, stores: [store, other], sql }) => {
          const evaluation = await store.addEvaluation("guix", [], 1);
          await store.registerBuilds(
            evaluation,
            lockCase.jobs.map((j) => job(j.name, { inputs: j.inputs })),
            { priority: 9, now: 1 },
          );
          await lockCase.prepare(store, sql);
          const [low, high] = lockCase.jobs.map((j) => j.name);
          assert.equal((await store.getBuildByDerivation(drv(low)))?.id, 1);
          assert.equal((await store.getBuildByDerivation(drv(high)))?.id, 2);
          const race = await raceBehindGates(
            url,
            schema,
            sql,
            [drv(low), drv(high)],
            () => lockCase.first(store, evaluation),
            () => lockCase.second(other, evaluation),
          );
          assert.equal(
            race.deadlocked,
            false,
            "the two procedures waited for each other (a deadlock)",
          );
          await lockCase.check(store, race);
        },
      ),
  });
}

/** Pops the next build ready, that of job `name`, to `worker`. */
async function popped(store: Store, name: string, worker: string) {
  const build = await store.popBuild(worker, ["x86_64-linux"], 2);
  assert.equal(build?.jobName, name, `pop of ${name}`);
}

async function statusOf(store: Store, name: string) {
  return (await store.getBuildByDerivation(drv(name)))?.status;
}

/**
 * Writes the row of job `name` again, unchanged: its newest version then
 * comes last in the table, and a plan reading the table whole (as one
 * does a table this small) meets it after the others.
 */
async function lastWritten(sql: postgres.Sql, name: string) {
  await sql.unsafe(
    "UPDATE Builds SET priority = priority WHERE derivation = $1",
    [drv(name)],
  );
}

/**
 * Runs `first` and `second` lined up behind gates on `held` (the build
 * with the lower id first), as the header says, and tells whether they
 * were ever seen waiting for each other.
 */
async function raceBehindGates(
  url: string,
  schema: string,
  watcher: postgres.Sql,
  held: [string, string],
  first: () => Promise<unknown>,
  second: () => Promise<unknown>,
): Promise<Race> {
  const low = await openBuildGate(url, schema, held[0]);
  const high = await openBuildGate(url, schema, held[1]);
  let firstRun: Promise<unknown> | undefined;
  let secondRun: Promise<unknown> | undefined;
  try {
    firstRun = first();
    firstRun.catch(() => {});
    const [one] = await eventuallyWaiting(watcher, [low.pid, high.pid], 1);
    secondRun = second();
    secondRun.catch(() => {});
    const both = await eventuallyWaiting(watcher, [low.pid, high.pid], 2);
    const two = both.find((pid) => pid !== one)!;
    await low.open();
    await eventuallyWaiting(watcher, [high.pid], 2);
    await high.open();
    const deadlocked = await watchForCycle(watcher, one, two, [
      firstRun,
      secondRun,
    ]);
    return { deadlocked, first: await firstRun, second: await secondRun };
  } finally {
    await low.open();
    await high.open();
    await Promise.allSettled([firstRun, secondRun]);
  }
}

/**
 * Polls until `runs` settle whether backends `one` and `two` wait for
 * each other at some point; bounded to some 20 s.
 */
async function watchForCycle(
  watcher: postgres.Sql,
  one: number,
  two: number,
  runs: Promise<unknown>[],
): Promise<boolean> {
  let settled = false;
  const all = Promise.allSettled(runs).then(() => settled = true);
  let cycle = false;
  for (let i = 0; i < 2000 && !settled; i++) {
    const rows = await watcher.unsafe(
      `SELECT pid, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity
       WHERE pid IN ($1, $2)`,
      [one, two],
    );
    const blockers = new Map(
      rows.map((
        row,
      ) => [Number(row.pid), (row.blockers as number[]).map(Number)]),
    );
    if (
      blockers.get(one)?.includes(two) && blockers.get(two)?.includes(one)
    ) {
      cycle = true;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await all;
  return cycle;
}
