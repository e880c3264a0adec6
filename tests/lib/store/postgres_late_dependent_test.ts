// Changes of a build's status on PostgreSQL reach the dependents
// registered while they waited for their locks, when LORICA_TEST_POSTGRES
// names a server (see succeedPostgresSql in sql_builds.ts).
//
// A registration reads each existing input's status under FOR SHARE and
// counts the input pending unless it succeeded; a success, a failure, a
// cancel or a restart of the input that comes to lock it after that
// registration committed must change the new dependent's count or status
// as it does its older dependents'. The success is one statement, whose
// snapshot (taken at its start) may predate the registration's commit.
// Each case lines the two up behind a gate (a transaction of the test's
// own, see _postgres_gates.ts) so that the registration commits after
// the change began and before it holds its build.

import assert from "node:assert/strict";
import type postgres from "postgres";
import { BuildStatus } from "../../../lib/store/types.ts";
import { drv, job } from "./store_contract.ts";
import {
  eventuallyWaiting,
  openBuildGate,
  openGate,
} from "./_postgres_gates.ts";
import type { Gate } from "./_postgres_gates.ts";
import type { Store } from "../../../lib/store/types.ts";
import { withSharedSchema } from "./_shared_schema.ts";
import { NEEDS_POSTGRES, WITHOUT_POSTGRES } from "../../_test_postgres.ts";

/** Two stores on a schema of their own (two processes), and a watcher. */
interface Farm {
  url: string;
  schema: string;
  /** Where evaluations register their builds. */
  evaluator: Store;
  /** Where workers' results are recorded. */
  dispatcher: Store;
  sql: postgres.Sql;
}

/** Runs `body` on a farm of a fresh schema, dropped afterwards. */
function withFarm(body: (farm: Farm) => Promise<void>): Promise<void> {
  return withSharedSchema(
    "lorica_late_test",
    ({ url, schema, stores: [evaluator, dispatcher], sql }) =>
      body({ url, schema, evaluator, dispatcher, sql }),
    // One connection for the queue's LISTEN, one for queries meanwhile.
    { connections: 2 },
  );
}

/** A change of build "lib" that meets a registration of a dependent. */
interface LateCase {
  name: string;
  /** Brings "lib" (just registered) to the state the change starts from. */
  prepare(store: Store): Promise<void>;
  /** The change, made on the dispatcher's store. */
  change(store: Store): Promise<unknown>;
  /** What the change returns. */
  returns: unknown;
  /** Checks "app", the dependent registered while the change waited. */
  check(store: Store, sql: postgres.Sql): Promise<void>;
}

const LATE_CASES: LateCase[] = [
  {
    name: "completeBuild() of a success",
    prepare: (store) => popped(store, "lib", "w1"),
    change: (store) =>
      store.completeBuild(drv("lib"), BuildStatus.succeeded, {
        worker: "w1",
        now: 4,
      }),
    returns: { changed: true, dependentsFailed: 0 },
    async check(store, sql) {
      assert.equal(await pendingOf(sql, "app"), 0);
      await popped(store, "app", "w2");
    },
  },
  {
    name: "completeBuild() of a failure",
    prepare: (store) => popped(store, "lib", "w1"),
    change: (store) =>
      store.completeBuild(drv("lib"), BuildStatus.failed, {
        worker: "w1",
        now: 4,
      }),
    returns: { changed: true, dependentsFailed: 1 },
    async check(store) {
      assert.equal(
        (await store.getBuildByDerivation(drv("app")))?.status,
        BuildStatus.failedDependency,
      );
    },
  },
  {
    name: "cancelBuild()",
    prepare: (store) => popped(store, "lib", "w1"),
    change: (store) => store.cancelBuild(1, 4),
    returns: { changed: true, worker: "w1" },
    async check(store) {
      assert.equal(
        (await store.getBuildByDerivation(drv("app")))?.status,
        BuildStatus.failedDependency,
      );
    },
  },
  {
    name: "restartBuild() of a success",
    async prepare(store) {
      await popped(store, "lib", "w1");
      await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
        worker: "w1",
        now: 2,
      });
    },
    change: (store) => store.restartBuild(1, 4),
    returns: { changed: true, worker: null },
    async check(store, sql) {
      // Registered after a success, it waits for the build anew.
      assert.equal(await pendingOf(sql, "app"), 1);
      await popped(store, "lib", "w2");
      assert.equal(await store.popBuild("w3", ["x86_64-linux"], 5), null);
    },
  },
];

for (const lateCase of LATE_CASES) {
  Deno.test({
    name:
      `${lateCase.name} that waited for a registration's lock on its build reaches the dependent registered${NEEDS_POSTGRES}`,
    ignore: WITHOUT_POSTGRES,
    async fn() {
      await withFarm(async ({ url, schema, evaluator, dispatcher, sql }) => {
        const first = await evaluator.addEvaluation("guix", [], 1);
        await evaluator.registerBuilds(first, [job("lib")], {
          priority: 9,
          now: 1,
        });
        await lateCase.prepare(dispatcher);
        const second = await evaluator.addEvaluation("guix", [], 3);
        // The registration locks "lib" FOR SHARE, then waits at its first
        // insert (which checks the evaluation's row) behind the gate.
        const gate = await openGate(
          url,
          schema,
          "SELECT id FROM Evaluations WHERE id = $1 FOR UPDATE",
          [second],
        );
        let registration: Promise<unknown> | undefined;
        let change: Promise<unknown> | undefined;
        try {
          registration = evaluator.registerBuilds(second, [
            job("app", { inputs: ["lib"] }),
          ], { priority: 9, now: 3 });
          registration.catch(() => {});
          await eventuallyWaiting(sql, [gate.pid], 1);
          // The change begins, then waits for the registration's lock.
          change = lateCase.change(dispatcher);
          change.catch(() => {});
          await eventuallyWaiting(sql, [gate.pid], 2);
          await gate.open();
          assert.deepEqual(await registration, {
            created: 1,
            known: 0,
            blocked: 0,
          });
          assert.deepEqual(await change, lateCase.returns);
        } finally {
          await gate.open();
          await Promise.allSettled([registration, change]);
        }
        await lateCase.check(dispatcher, sql);
      });
    },
  });
}

Deno.test({
  name:
    `completeBuild() of a success held up by another dependent counts a dependent registered meanwhile, and tells the queue's watchers${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    await withFarm(async ({ url, schema, evaluator, dispatcher, sql }) => {
      const first = await evaluator.addEvaluation("guix", [], 1);
      // "dep" has the lowest id, so the success's sweep locks it first;
      // "other", never built here, keeps it waiting after the success.
      await evaluator.registerBuilds(first, [
        job("dep", { inputs: ["lib", "other"] }),
        job("lib"),
        job("other", { system: "aarch64-linux" }),
      ], { priority: 9, now: 1 });
      assert.equal((await evaluator.getBuildByDerivation(drv("dep")))?.id, 1);
      await popped(dispatcher, "lib", "w1");
      const second = await evaluator.addEvaluation("guix", [], 3);
      const gate: Gate = await openBuildGate(url, schema, drv("dep"));
      let success: Promise<unknown> | undefined;
      const woken: string[] = [];
      let listening: postgres.ListenMeta | undefined;
      try {
        success = dispatcher.completeBuild(drv("lib"), BuildStatus.succeeded, {
          worker: "w1",
          now: 4,
        });
        success.catch(() => {});
        await eventuallyWaiting(sql, [gate.pid], 1);
        // Registered and committed whole while the success waits, before
        // it has locked "lib".
        assert.deepEqual(
          await evaluator.registerBuilds(second, [
            job("app", { inputs: ["lib"] }),
          ], { priority: 9, now: 3 }),
          { created: 1, known: 0, blocked: 0 },
        );
        assert.equal(await pendingOf(sql, "app"), 1);
        // From here on only the success makes a build dispatchable.
        listening = await sql.listen(
          `lorica_queue_${schema}`,
          (payload) => woken.push(payload),
        );
        await gate.open();
        assert.deepEqual(await success, { changed: true, dependentsFailed: 0 });
      } finally {
        await gate.open();
        await Promise.allSettled([success]);
      }
      try {
        assert.equal(await pendingOf(sql, "app"), 0);
        assert.equal(await pendingOf(sql, "dep"), 1);
        for (let i = 0; i < 250 && woken.length === 0; i++) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        assert.equal(woken.length, 1, "one queue notification");
        await popped(dispatcher, "app", "w2");
      } finally {
        await listening?.unlisten();
      }
    });
  },
});

/** Pops the next build ready, that of job `name`, to `worker`. */
async function popped(store: Store, name: string, worker: string) {
  const build = await store.popBuild(worker, ["x86_64-linux"], 5);
  assert.equal(build?.jobName, name, `pop of ${name}`);
}

/** The count of inputs the build of job `name` waits for. */
async function pendingOf(sql: postgres.Sql, name: string): Promise<number> {
  const [row] = await sql.unsafe(
    "SELECT pending_deps FROM Builds WHERE derivation = $1",
    [drv(name)],
  );
  return Number(row.pending_deps);
}
