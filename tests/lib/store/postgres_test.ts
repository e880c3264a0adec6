// The store contract on PostgreSQL, when LORICA_TEST_POSTGRES names a
// server (a URL such as postgres://postgres@127.0.0.1:54329/postgres).
// Each test gets a schema of its own. Without the variable, the tests are
// ignored, their names saying why: there is no PostgreSQL to talk to.

import assert from "node:assert/strict";
import postgres from "postgres";
import {
  openPostgresStore,
  parsePostgresTarget,
  PostgresTargetError,
} from "../../../lib/store/postgres.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { STATISTICS_REFRESH_MIN } from "../../../lib/store/sql_register.ts";
import {
  cancelEvaluation,
  completeBuild,
  restartBuild,
} from "../../../lib/store/sql_builds.ts";
import { markStartedMany, popBuilds } from "../../../lib/store/sql_dispatch.ts";
import { latestBuilds, queue } from "../../../lib/store/sql_catalog.ts";
import {
  expireWorkers,
  requeueWorker,
} from "../../../lib/store/sql_workers.ts";
import {
  getDashboard,
  MAX_DASHBOARDS,
} from "../../../lib/store/sql_dashboards.ts";
import { postgresDialect, type Step } from "../../../lib/store/sql_query.ts";
import { isDatabaseUnavailable } from "../../../lib/store/unavailable.ts";
import {
  drv,
  holderRow,
  job,
  specification,
  storeContract,
} from "./store_contract.ts";
import {
  addSweptWorkers,
  assertSweptWorkersExpired,
  assertUntimedWorkersUpgraded,
  SWEEP_OF_SWEPT_WORKERS,
  UNTIMED_WORKER_ROWS,
} from "./_worker_rows.ts";
import { startTcpRelay } from "./_tcp_relay.ts";
import { within } from "../server/_dispatch_fixture.ts";
import { chunkedRegistrationContract } from "./chunked_registration_contract.ts";
import type { Store } from "../../../lib/store/types.ts";
import {
  NEEDS_POSTGRES as needs,
  TEST_POSTGRES_URL as url,
  WITHOUT_POSTGRES as ignore,
} from "../../_test_postgres.ts";

const run = `${Date.now().toString(36)}_${Deno.pid}`;
let schemas = 0;
const created: string[] = [];

function freshSchema(): string {
  const name = `lorica_test_${run}_${++schemas}`;
  created.push(name);
  return name;
}

/** Runs `work` on a connection of its own, closed afterwards. */
async function withSql<T>(work: (sql: postgres.Sql) => Promise<T>) {
  const sql = postgres(url!, { max: 1, onnotice: () => {} });
  try {
    return await work(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function dropSchemas(): Promise<void> {
  if (url === undefined || created.length === 0) return;
  await withSql(async (sql) => {
    for (const name of created.splice(0)) {
      await sql.unsafe(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
    }
  });
}

storeContract(
  "postgres",
  () => openPostgresStore(url!, { schema: freshSchema() }),
  { ignore, needs },
);
chunkedRegistrationContract(
  "postgres",
  () => openPostgresStore(url!, { schema: freshSchema() }),
  { ignore, needs },
);

Deno.test({
  name: "parsePostgresTarget() reads URLs and conninfo strings",
  fn() {
    const cases: [string, object][] = [
      ["postgres://ci:s3cret@127.0.0.1:5433/farm", {
        host: "127.0.0.1",
        port: 5433,
        database: "farm",
        user: "ci",
        password: "s3cret",
      }],
      ["dbname=cuirass host=/var/run/postgresql", {
        host: "/var/run/postgresql",
        port: 5432,
        database: "cuirass",
        user: undefined,
        password: undefined,
      }],
      ["dbname='my farm' port=6000 user=ci", {
        host: "/var/run/postgresql",
        port: 6000,
        database: "my farm",
        user: "ci",
        password: undefined,
      }],
    ];
    for (const [text, expected] of cases) {
      assert.deepEqual(parsePostgresTarget(text), expected, text);
    }
    for (
      const bad of [
        "dbname=x port=99999",
        "dbname=x !!",
        "password=hunter2 ?",
        "dbname=x PASSWORD=hunter2",
      ]
    ) {
      assert.throws(
        () => parsePostgresTarget(bad),
        (error: unknown) =>
          error instanceof PostgresTargetError &&
          !error.message.includes("hunter2"),
        bad,
      );
    }
  },
});

Deno.test({
  name:
    "parsePostgresTarget() reads a URL's user, password, database and port from its query too, as libpq does",
  fn() {
    assert.deepEqual(
      parsePostgresTarget(
        "postgres:///farm?host=/run/postgresql&port=6000&user=ci&password=s3cret",
      ),
      {
        host: "/run/postgresql",
        port: 6000,
        database: "farm",
        user: "ci",
        password: "s3cret",
      },
    );
    assert.deepEqual(
      parsePostgresTarget("postgresql://127.0.0.1?dbname=farm"),
      {
        host: "127.0.0.1",
        port: 5432,
        database: "farm",
        user: undefined,
        password: undefined,
      },
    );
  },
});

Deno.test({
  name:
    "parsePostgresTarget() refuses a port that is no number and an sslmode asking for TLS, in either form, naming them",
  fn() {
    const cases: [string, RegExp][] = [
      [
        "postgres://ci@127.0.0.1/farm?port=abc&password=hunter2",
        /^Cannot read database URL "postgres:\/\/ci@127\.0\.0\.1\/farm\?port=abc&password=\*\*\*": port "abc" is not a port number$/,
      ],
      ["dbname=x port=99999", /: port "99999" is not a port number$/],
      ["dbname=x port=5432x", /: port "5432x" is not a port number$/],
      [
        "postgres://127.0.0.1/farm?sslmode=require",
        /: sslmode "require" asks for TLS, which Lorica does not use/,
      ],
      [
        "dbname=farm host=127.0.0.1 sslmode=verify-full",
        /^Cannot read conninfo "dbname=farm host=127\.0\.0\.1 sslmode=verify-full": sslmode "verify-full" asks for TLS/,
      ],
    ];
    for (const [bad, message] of cases) {
      assert.throws(
        () => parsePostgresTarget(bad),
        (error: unknown) =>
          error instanceof PostgresTargetError && message.test(error.message),
        bad,
      );
    }
    // What libpq would also do without TLS is taken.
    for (const mode of ["disable", "allow", "prefer"]) {
      parsePostgresTarget(`dbname=farm sslmode=${mode}`);
    }
  },
});

Deno.test({
  name:
    "parsePostgresTarget() refuses a conninfo value whose quote is not closed, naming the fault and hiding a password",
  fn() {
    for (
      const [bad, key] of [
        ["dbname='my farm host=127.0.0.1", "dbname"],
        ["dbname=lorica password='hunter2 host=127.0.0.1", "password"],
      ]
    ) {
      assert.throws(
        () => parsePostgresTarget(bad),
        (error: unknown) =>
          error instanceof PostgresTargetError &&
          /: a quoted value is not closed$/.test(error.message) &&
          !error.message.includes("hunter2"),
        `${bad} (${key})`,
      );
    }
  },
});

async function withStore(fn: (store: Store, schema: string) => Promise<void>) {
  const schema = freshSchema();
  const store = await openPostgresStore(url!, { schema, queuePollMs: 60_000 });
  try {
    await fn(store, schema);
  } finally {
    await store.close();
  }
}

/** {@link withStore}, with a connection of its own on the store's schema. */
function withSchemaSql(
  settings: Record<string, string>,
  fn: (store: Store, sql: postgres.Sql) => Promise<void>,
): Promise<void> {
  return withStore(async (store, schema) => {
    const sql = postgres(url!, {
      max: 1,
      onnotice: () => {},
      connection: { search_path: schema, ...settings },
    });
    try {
      await fn(store, sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
}

Deno.test({
  name:
    `C17: stores in two processes' worth of pools never dispatch one build twice${needs}`,
  ignore,
  async fn() {
    await withStore(async (first, schema) => {
      const second = await openPostgresStore(url!, { schema });
      try {
        await first.upsertSpecification(specification("guix"));
        const id = await first.addEvaluation("guix", [], 1);
        const jobs = Array.from({ length: 200 }, (_, i) => job(`j${i}`));
        await first.registerBuilds(id, jobs, { priority: 9, now: 1 });
        const take = async (store: Store, name: string) => {
          const ids: number[] = [];
          for (;;) {
            const build = await store.popBuild(name, ["x86_64-linux"], 2);
            if (build === null) return ids;
            ids.push(build.id);
            await store.completeBuild(build.derivation, BuildStatus.succeeded, {
              worker: name,
              now: 3,
            });
          }
        };
        const results = await Promise.all(
          Array.from(
            { length: 8 },
            (_, i) => take(i % 2 === 0 ? first : second, `w${i}`),
          ),
        );
        const ids = results.flat();
        assert.equal(ids.length, 200);
        assert.equal(new Set(ids).size, 200);
        assert.deepEqual(
          await second.countBuildsByStatus(),
          new Map([[0, 200]]),
        );
      } finally {
        await second.close();
      }
    });
  },
});

Deno.test({
  name:
    `C17: watchQueue() hears new builds, and again after pg_terminate_backend${needs}`,
  ignore,
  async fn() {
    await withStore(async (store, schema) => {
      const other = await openPostgresStore(url!, { schema });
      const admin = postgres(url!, { max: 1, onnotice: () => {} });
      const controller = new AbortController();
      let heard = 0;
      let wake: (() => void) | undefined;
      const next = () => new Promise<void>((resolve) => wake = resolve);
      try {
        let ready = next();
        store.watchQueue!(() => {
          heard++;
          wake?.();
        }, controller.signal);
        await ready; // the first LISTEN is up
        await other.upsertSpecification(specification("guix"));
        const id = await other.addEvaluation("guix", [], 1);

        ready = next();
        const before = heard;
        await other.registerBuilds(id, [job("a")], { priority: 9, now: 1 });
        await ready;
        assert.ok(heard > before);

        // Kill the listening connection; the store listens again.
        const channel = `lorica_queue_${schema}`;
        const killed = await admin.unsafe(
          `SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
           WHERE query ILIKE $1`,
          [`%listen%${channel}%`],
        );
        assert.equal(killed.length, 1);
        ready = next();
        await ready; // listening again
        ready = next();
        const after = heard;
        await other.registerBuilds(id, [job("b")], { priority: 9, now: 2 });
        await ready;
        assert.ok(heard > after);
        assert.equal(
          (await store.popBuild("w", ["x86_64-linux"], 3))?.derivation,
          drv("a"),
        );
      } finally {
        controller.abort();
        await admin.end({ timeout: 1 });
        await other.close();
      }
    });
  },
});

Deno.test({
  name:
    `C17: a success that makes a dependent dispatchable wakes the other processes' dispatchers; one that does not stays quiet${needs}`,
  ignore,
  async fn() {
    await withStore(async (store, schema) => {
      const other = await openPostgresStore(url!, {
        schema,
        queuePollMs: 60_000,
      });
      const controller = new AbortController();
      let heard = 0;
      let wake: (() => void) | undefined;
      const next = () => new Promise<void>((resolve) => wake = resolve);
      try {
        await store.upsertSpecification(specification("guix"));
        const id = await store.addEvaluation("guix", [], 1);
        await store.registerBuilds(id, [
          job("lib"),
          job("app", { inputs: ["lib", "tool"] }),
          job("tool"),
        ], { priority: 9, now: 1 });
        const [lib, tool] = await store.popBuilds([
          { worker: "w1", systems: ["x86_64-linux"] },
          { worker: "w2", systems: ["x86_64-linux"] },
        ], 2);
        let ready = next();
        other.watchQueue!(() => {
          heard++;
          wake?.();
        }, controller.signal);
        await ready; // listening
        const quiet = heard;
        await store.completeBuild(lib!.derivation, BuildStatus.succeeded, {
          worker: "w1",
          now: 3,
        });
        // "app" still waits for "tool": nothing to hear. A round trip of
        // the listener's own lets a notification arrive first, if any.
        await other.listWorkers();
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(heard, quiet);
        ready = next();
        await store.completeBuild(tool!.derivation, BuildStatus.succeeded, {
          worker: "w2",
          now: 4,
        });
        // Well before the 60 s poll.
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          ready,
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error("no notification")),
              5000,
            );
          }),
        ]).finally(() => clearTimeout(timer));
        assert.ok(heard > quiet);
        assert.equal(
          (await other.popBuild("w3", ["x86_64-linux"], 5))?.jobName,
          "app",
        );
      } finally {
        controller.abort();
        await other.close();
      }
    });
  },
});

Deno.test({
  name:
    `a success recorded in one statement is retried after a deadlock, not lost${needs}`,
  ignore,
  async fn() {
    await withStore(async (store, schema) => {
      await store.upsertSpecification(specification("guix"));
      const id = await store.addEvaluation("guix", [], 1);
      await store.registerBuilds(id, [
        job("lib"),
        job("app", { inputs: ["lib"] }),
      ], { priority: 9, now: 1 });
      const lib = await store.popBuild("w1", ["x86_64-linux"], 2);
      await withSql((watcher) =>
        withSql(async (admin) => {
          // The other transaction holds the dependent, then wants the build
          // the completion holds: PostgreSQL aborts the completion, whose
          // deadlock_timeout (1 s) runs out first, and it runs again. The
          // other transaction waits 60 s before it looks for a deadlock, so
          // that it is never the one aborted on a busy machine (the setting
          // needs a superuser, as CI's is).
          const completion = await admin.begin(async (tx) => {
            await tx.unsafe("SET LOCAL deadlock_timeout = '60s'");
            await tx.unsafe(
              `SELECT id FROM ${schema}.Builds WHERE derivation = $1 FOR UPDATE`,
              [drv("app")],
            );
            const completion = store.completeBuild(
              lib!.derivation,
              BuildStatus.succeeded,
              { worker: "w1", now: 3 },
            );
            completion.catch(() => {});
            await eventuallyWaiting(watcher, "WITH sweep_targets");
            await tx.unsafe(
              `UPDATE ${schema}.Builds SET priority = priority
             WHERE derivation = $1`,
              [lib!.derivation],
            );
            return [completion];
          });
          const result = await completion[0];
          assert.equal(result.changed, true);
        })
      );
      assert.equal(
        (await store.getBuildByDerivation(drv("lib")))?.status,
        BuildStatus.succeeded,
      );
      assert.equal(
        (await store.popBuild("w2", ["x86_64-linux"], 4))?.jobName,
        "app",
      );
    });
  },
});

Deno.test({
  name:
    `cancelEvaluation() and restartEvaluation() name the worker a build was handed to while they waited for its row${needs}`,
  ignore,
  async fn() {
    for (const action of ["cancel", "restart"] as const) {
      await withStore(async (store, schema) => {
        await store.upsertSpecification(specification("guix"));
        const id = await store.addEvaluation("guix", [], 1);
        await store.registerBuilds(id, [job("a"), job("b")], {
          priority: 9,
          now: 1,
        });
        // A restart changes the builds that are not scheduled: "a" is
        // held by w1 first, and passes to w2 in the other transaction.
        if (action === "restart") {
          assert.equal(
            (await store.popBuild("w1", ["x86_64-linux"], 2))?.derivation,
            drv("a"),
          );
        }
        const held = await withSql((watcher) =>
          withSql(async (dispatcher) => {
            const [change] = await dispatcher.begin(async (tx) => {
              // As a dispatch in another process: the row is locked until
              // its commit, which the evaluation's change waits for.
              await tx.unsafe(
                `UPDATE ${schema}.Builds SET status = -3, worker = 'w2'
                 WHERE derivation = $1`,
                [drv("a")],
              );
              const change = action === "cancel"
                ? store.cancelEvaluation(id, 3)
                : store.restartEvaluation(id, 3);
              change.catch(() => {});
              await eventuallyWaiting(watcher, "WITH RECURSIVE sweep_targets");
              return [change];
            });
            return (await change).held;
          })
        );
        assert.deepEqual(held, [{
          id: (await store.getBuildByDerivation(drv("a")))!.id,
          derivation: drv("a"),
          worker: "w2",
        }], action);
      });
    }
  },
});

/** Runs store procedure `steps` on `tx`, a transaction of the test's own. */
async function runSteps<T>(
  tx: postgres.TransactionSql,
  steps: Step<T>,
): Promise<T> {
  let next = steps.next();
  while (!next.done) {
    let index = 0;
    const text = next.value.sql.replace(/\?/g, () => `$${++index}`);
    const result = await tx.unsafe(
      text,
      next.value.params as postgres.ParameterOrJSON<never>[],
    );
    next = steps.next({ rows: result, changes: result.count ?? 0 });
  }
  return next.value;
}

/** Waits until some query waits for a lock that backend `pid` holds. */
async function eventuallyBlockedBy(sql: postgres.Sql, pid: number) {
  for (let i = 0; i < 200; i++) {
    const rows = await sql.unsafe(
      `SELECT 1 FROM pg_stat_activity
       WHERE CAST($1 AS integer) = ANY(pg_blocking_pids(pid))`,
      [pid],
    );
    if (rows.length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no query waits for backend ${JSON.stringify(pid)}`);
}

Deno.test({
  name:
    `restartEvaluation() counts what a dependent waits for again from the builds as they are once it holds them, whatever another transaction committed while it waited${needs}`,
  ignore,
  async fn() {
    const d = postgresDialect("unused");
    // What another transaction does to "lib" ("app" depends on it) and
    // keeps uncommitted until the restart waits for its rows. Before the
    // fix, the restart counted the dependents' inputs from a read taken
    // before it waited: a success committed meanwhile left "app" with
    // nothing to wait for (handed out before "lib"), a restart meanwhile
    // with two (never handed out).
    const cases: [string, (store: Store) => Promise<void>, Step<unknown>][] = [
      [
        "a success",
        async (store) => {
          await store.popBuild("w1", ["x86_64-linux"], 2);
        },
        completeBuild(d, drv("lib"), BuildStatus.succeeded, {
          worker: "w1",
          now: 3,
        }),
      ],
      [
        "a restart",
        async (store) => {
          await store.popBuild("w1", ["x86_64-linux"], 2);
          await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
            worker: "w1",
            now: 3,
          });
        },
        // The id of "lib", the first registered.
        restartBuild(d, 1),
      ],
    ];
    for (const [name, before, meanwhile] of cases) {
      await withSchemaSql({}, async (store, sql) => {
        await store.upsertSpecification(specification("guix"));
        const id = await store.addEvaluation("guix", [], 1);
        await store.registerBuilds(id, [
          job("lib"),
          job("app", { inputs: ["lib"] }),
        ], { priority: 9, now: 1 });
        assert.equal((await store.getBuildByDerivation(drv("lib")))?.id, 1);
        await before(store);
        await withSql(async (watcher) => {
          const [restart] = await sql.begin(async (tx) => {
            const [{ pid }] = await tx.unsafe("SELECT pg_backend_pid() AS pid");
            await runSteps(tx, meanwhile);
            const restart = store.restartEvaluation(id, 4);
            restart.catch(() => {});
            await eventuallyBlockedBy(watcher, Number(pid));
            return [restart];
          });
          await restart;
        });
        const [{ pending }] = await sql.unsafe(
          "SELECT pending_deps AS pending FROM Builds WHERE derivation = $1",
          [drv("app")],
        );
        assert.equal(Number(pending), 1, name);
        // "app" goes out once "lib" succeeded, not before.
        const lib = await store.popBuild("w2", ["x86_64-linux"], 5);
        assert.equal(lib?.derivation, drv("lib"), name);
        assert.equal(await store.popBuild("w3", ["x86_64-linux"], 5), null);
        await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
          worker: "w2",
          now: 6,
        });
        assert.equal(
          (await store.popBuild("w3", ["x86_64-linux"], 7))?.derivation,
          drv("app"),
          name,
        );
      });
    }
  },
});

/** Requests of the local-mode holder "local@box". */
const HOLDER_REQUEST = { worker: "local@box", systems: ["x86_64-linux"] };

/**
 * Runs `fn` on a store with builds "a" and "b" scheduled and the row of
 * "local@box" at address "pid=1", with a connection of its own (`sql`) and
 * one to watch locks with (`watcher`).
 */
async function withHolderRow(
  fn: (store: Store, sql: postgres.Sql, watcher: postgres.Sql) => Promise<void>,
) {
  await withSchemaSql({}, async (store, sql) => {
    await store.upsertSpecification(specification("guix"));
    const id = await store.addEvaluation("guix", [], 1);
    await store.registerBuilds(id, [job("a"), job("b")], {
      priority: 9,
      now: 1,
    });
    await store.upsertWorker(holderRow("pid=1"));
    await withSql((watcher) => fn(store, sql, watcher));
  });
}

/**
 * Runs `first` in a transaction of `sql`, then `second` (on the store,
 * another connection), which must wait for that transaction: once it does,
 * the transaction commits. Returns what `second` gives.
 */
async function waitingBehind<T>(
  sql: postgres.Sql,
  watcher: postgres.Sql,
  first: (tx: postgres.TransactionSql) => Promise<void>,
  second: () => Promise<T>,
): Promise<T> {
  const [waiting] = await sql.begin(async (tx) => {
    const [{ pid }] = await tx.unsafe("SELECT pg_backend_pid() AS pid");
    await first(tx);
    const waiting = second();
    waiting.catch(() => {});
    await eventuallyBlockedBy(watcher, Number(pid));
    return [waiting];
  });
  return await waiting;
}

/** A claim of "local@box" by another server, as its UPDATE makes it. */
async function claimToPid2(tx: postgres.TransactionSql) {
  await tx.unsafe(
    "UPDATE Workers SET address = 'pid=2' WHERE name = 'local@box'",
  );
}

Deno.test({
  name:
    `popBuilds() with a holder address and a claim of the holder's row wait for each other: a pop after the claim takes nothing, a claim after the pop finds the builds to requeue${needs}`,
  ignore,
  async fn() {
    const d = postgresDialect("unused");
    await withHolderRow(async (store, sql, watcher) => {
      // A claim by another server, not yet committed: the pop of the old
      // holder waits for it, then finds the row changed.
      const late = await waitingBehind(
        sql,
        watcher,
        claimToPid2,
        () => store.popBuilds([HOLDER_REQUEST], 2, { holderAddress: "pid=1" }),
      );
      assert.deepEqual(late, [null]);

      // A pop under the row, not yet committed: a claim waits for it, and
      // the requeue that follows a claim finds what it took.
      const claimed = await waitingBehind(sql, watcher, async (tx) => {
        const taken = await runSteps(
          tx,
          popBuilds(d, [HOLDER_REQUEST, HOLDER_REQUEST], 3, {
            holderAddress: "pid=2",
          }),
        );
        assert.equal(taken.filter((build) => build !== null).length, 2);
      }, () => store.claimWorker(holderRow("pid=3"), { address: "pid=2" }));
      assert.equal(claimed, true);
      assert.equal(await store.requeueWorkerBuilds("local@box", 4), 2);
    });
  },
});

Deno.test({
  name:
    `completeBuild() with a holder address and a claim of the holder's row wait for each other: a completion after the claim changes nothing, a claim after the completion finds nothing left to requeue${needs}`,
  ignore,
  async fn() {
    const d = postgresDialect("unused");
    await withHolderRow(async (store, sql, watcher) => {
      const [a, b] =
        (await store.popBuilds([HOLDER_REQUEST, HOLDER_REQUEST], 2, {
          holderAddress: "pid=1",
        })).map((build) => build!.derivation);
      const success = (address: string) => ({
        worker: "local@box",
        now: 3,
        holderAddress: address,
      });
      // A claim by another server, not yet committed: the old holder's
      // completion waits for it, then finds the row changed.
      const late = await waitingBehind(
        sql,
        watcher,
        claimToPid2,
        () => store.completeBuild(a, BuildStatus.succeeded, success("pid=1")),
      );
      assert.equal(late.changed, false);
      assert.equal(
        (await store.getBuildByDerivation(a))?.status,
        BuildStatus.submitted,
      );

      // A completion under the row, not yet committed: a claim waits for
      // it, and the requeue that follows finds only the other build.
      const claimed = await waitingBehind(sql, watcher, async (tx) => {
        const done = await runSteps(
          tx,
          completeBuild(d, b, BuildStatus.succeeded, success("pid=2")),
        );
        assert.equal(done.changed, true);
      }, () => store.claimWorker(holderRow("pid=3"), { address: "pid=2" }));
      assert.equal(claimed, true);
      assert.equal(await store.requeueWorkerBuilds("local@box", 4), 1);
      assert.equal(
        (await store.getBuildByDerivation(b))?.status,
        BuildStatus.succeeded,
      );
    });
  },
});

Deno.test({
  name:
    `watchHoldings() hears another store's cancel and restart of a held build, and its requeue of all a worker's builds (a sweep's expiry, a claim of a holder name), not a cancel or restart of a scheduled one, nor a requeue of one build (the holder's own)${needs}`,
  ignore,
  async fn() {
    await withStore(async (store, schema) => {
      const other = await openPostgresStore(url!, { schema });
      const stop = new AbortController();
      try {
        let heard = 0;
        let next = Promise.withResolvers<void>();
        store.watchHoldings!(() => {
          heard++;
          next.resolve();
        }, stop.signal);
        // The first call comes once LISTEN is in place (as after a lost
        // connection, where a change may have been missed).
        await within(next.promise, 10_000, "call once LISTEN is in place");
        await store.upsertSpecification(specification("guix"));
        const id = await store.addEvaluation("guix", [], 1);
        await store.registerBuilds(
          id,
          ["a", "b", "idle"].map((name) => job(name)),
          { priority: 9, now: 1 },
        );
        const hold = async () =>
          (await store.popBuild("w", ["x86_64-linux"], 2))!;
        const idle = (await store.getBuildByDerivation(drv("idle")))!;
        const changes: [string, () => Promise<unknown>][] = [
          ["cancelBuild", async () => other.cancelBuild((await hold()).id, 4)],
          [
            "restartBuild",
            async () => other.restartBuild((await hold()).id, 4),
          ],
          [
            "expireWorkers",
            async () => {
              await hold();
              await store.upsertWorker({
                name: "w",
                address: "127.0.0.1",
                machine: "m",
                systems: ["x86_64-linux"],
                lastSeen: 1,
                timeoutSeconds: 120,
              });
              assert.equal(
                (await other.expireWorkers(200, { timeoutSeconds: 120 }))
                  .length,
                1,
              );
            },
          ],
          [
            "requeueWorkerBuilds",
            async () => {
              await hold();
              assert.equal(await other.requeueWorkerBuilds("w", 4), 1);
            },
          ],
        ];
        for (const [name, change] of changes) {
          // Each after a cancel and a restart of a scheduled build and a
          // requeue of a held one, which say nothing: heard, they would put
          // the count ahead.
          const before = heard;
          next = Promise.withResolvers<void>();
          assert.equal((await other.cancelBuild(idle.id, 4)).changed, true);
          assert.equal((await other.restartBuild(idle.id, 4)).changed, true);
          const requeued = await hold();
          assert.equal(await store.requeueBuild(requeued.derivation, 4), true);
          await change();
          await within(next.promise, 10_000, `notification after ${name}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
          assert.equal(heard, before + 1, name);
        }
      } finally {
        stop.abort();
        await other.close();
      }
    });
  },
});

/** Waits until a query starting with `prefix` waits for a lock. */
async function eventuallyWaiting(sql: postgres.Sql, prefix: string) {
  for (let i = 0; i < 200; i++) {
    const rows = await sql.unsafe(
      `SELECT 1 FROM pg_stat_activity
       WHERE wait_event_type = 'Lock' AND query LIKE $1`,
      [`${prefix}%`],
    );
    if (rows.length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no query ${JSON.stringify(prefix)} waits for a lock`);
}

Deno.test({
  name: `openPostgresStore() refuses a schema newer than its own${needs}`,
  ignore,
  async fn() {
    const schema = freshSchema();
    await (await openPostgresStore(url!, { schema })).close();
    await withSql((sql) =>
      sql.unsafe(`UPDATE ${schema}.SchemaVersion SET version = 99`)
    );
    await assert.rejects(
      openPostgresStore(url!, { schema }),
      (error: unknown) =>
        error instanceof Error && error.name === "StoreError" &&
        error.message.includes("99"),
    );
  },
});

Deno.test({
  name:
    `openPostgresStore() refuses Cuirass's tables, of a newer or an older schema version, changing nothing${needs}`,
  ignore,
  async fn() {
    for (const version of [15, 5]) {
      const schema = freshSchema();
      // What matters of Cuirass's schema: the same table names, its own
      // SchemaVersion, none of Lorica's own tables.
      await withSql((sql) =>
        sql.unsafe(`CREATE SCHEMA ${schema};
          CREATE TABLE ${schema}.SchemaVersion (version INTEGER NOT NULL);
          INSERT INTO ${schema}.SchemaVersion VALUES (${version});
          CREATE TABLE ${schema}.Builds (id SERIAL PRIMARY KEY,
            derivation TEXT NOT NULL UNIQUE, worker TEXT,
            status INTEGER NOT NULL)`)
      );
      await assert.rejects(
        openPostgresStore(url!, { schema }),
        (error: unknown) =>
          error instanceof Error && error.name === "StoreError" &&
          (error as { code?: string }).code === "foreign-schema" &&
          error.message.includes(
            `schema version ${version} without Lorica's DispatcherStops table; Cuirass's database?`,
          ),
        String(version),
      );
      const [row] = await withSql((sql) =>
        sql.unsafe(
          `SELECT (SELECT version FROM ${schema}.SchemaVersion) AS version,
             to_regclass('${schema}.dispatcherstops') IS NULL AS untouched`,
        )
      );
      assert.deepEqual({ ...row }, { version, untouched: true });
    }
  },
});

Deno.test({
  name:
    `openPostgresStore() upgrades a version 1 schema (DispatcherStops, no index on nix_name, InterruptedFetches, weather-change indexes, a worker's builds in order, notification claims, dashboard keys and uses, a system's finished builds in order, evaluation owners, canceled evaluations, workers' own timeouts, a success's count of dependents read anew)${needs}`,
  ignore,
  async fn() {
    const schema = freshSchema();
    await (await openPostgresStore(url!, { schema })).close();
    await withSql((sql) =>
      sql.unsafe(`DROP TABLE ${schema}.DispatcherStops;
        DROP TABLE ${schema}.InterruptedFetches;
        CREATE INDEX Builds_nix_name ON ${schema}.Builds(nix_name);
        DROP INDEX ${schema}.Builds_weather_changes;
        DROP INDEX ${schema}.Builds_weather_changes_specification;
        DROP INDEX ${schema}.Builds_worker;
        DROP INDEX ${schema}.Builds_held;
        CREATE INDEX Builds_worker ON ${schema}.Builds(worker, status)
          WHERE worker IS NOT NULL;
        ALTER TABLE ${schema}.Notifications DROP COLUMN claimed_at;
        DROP INDEX ${schema}.Dashboards_jobs_key;
        DROP INDEX ${schema}.Dashboards_last_used;
        ALTER TABLE ${schema}.Dashboards DROP COLUMN jobs_key,
          DROP COLUMN last_used;
        DROP INDEX ${schema}.Builds_finished_system;
        DROP INDEX ${schema}.Evaluations_started;
        ALTER TABLE ${schema}.Evaluations DROP COLUMN owner_host,
          DROP COLUMN owner_pid, DROP COLUMN owner_start,
          DROP COLUMN heartbeat, DROP COLUMN canceled;
        DROP INDEX ${schema}.Workers_deadline;
        ALTER TABLE ${schema}.Workers DROP COLUMN timeout;
        DROP FUNCTION ${schema}.input_succeeded(INTEGER);
        INSERT INTO ${schema}.Workers VALUES ${UNTIMED_WORKER_ROWS};
        UPDATE ${schema}.SchemaVersion SET version = 1`)
    );
    const fresh = freshSchema();
    await (await openPostgresStore(url!, { schema: fresh })).close();
    const store = await openPostgresStore(url!, { schema });
    try {
      // The same columns and indexes as a schema created at this version.
      for (
        const table of ["notifications", "dashboards", "evaluations", "workers"]
      ) {
        assert.deepEqual(
          await columnsOf(schema, table),
          await columnsOf(fresh, table),
        );
      }
      const indexesOf = (name: string, table: string) =>
        withSql((sql) =>
          sql.unsafe(
            `SELECT indexname, replace(indexdef, $1, '') AS indexdef
             FROM pg_indexes WHERE schemaname = $1
             AND tablename = $2 ORDER BY indexname`,
            [name, table],
          )
        );
      for (const table of ["dashboards", "workers"]) {
        assert.deepEqual(
          await indexesOf(schema, table),
          await indexesOf(fresh, table),
        );
      }
      const indexes = await withSql((sql) =>
        sql.unsafe(
          "SELECT indexname FROM pg_indexes WHERE schemaname = $1",
          [schema],
        )
      );
      assert.ok(indexes.length > 0);
      const names = new Set(indexes.map((row) => row.indexname));
      assert.ok(!names.has("builds_nix_name"));
      assert.ok(names.has("builds_weather_changes"));
      assert.ok(names.has("builds_weather_changes_specification"));
      assert.ok(names.has("builds_held"));
      assert.ok(names.has("builds_finished_system"));
      assert.ok(names.has("evaluations_started"));
      const [worker] = await withSql((sql) =>
        sql.unsafe(
          `SELECT indexdef FROM pg_indexes
           WHERE schemaname = $1 AND indexname = 'builds_worker'`,
          [schema],
        )
      );
      assert.match(worker.indexdef, /\(worker, evaluation DESC, id DESC\)/);
      // Rows from before timeouts were recorded.
      await assertUntimedWorkersUpgraded(store);
      await store.upsertWorker({
        name: "w",
        address: "127.0.0.1",
        machine: "m",
        systems: ["x86_64-linux"],
        lastSeen: 10,
        timeoutSeconds: 120,
      });
      await store.stopWorkerClock(20);
      assert.equal(await store.resumeWorkerClock(25), 5);
      assert.equal((await store.getWorker("w"))?.lastSeen, 15);
      const fetch = { drv: "/gnu/store/x.drv", worker: "w", url: "http://w" };
      await store.saveOwedFetches([fetch]);
      assert.deepEqual(await store.owedFetches(), [fetch]);
      await store.upsertSpecification(specification("guix"));
      const dashboard = {
        id: "A".repeat(16),
        specification: "guix",
        jobs: ["a"],
      };
      assert.equal(
        await store.addDashboard(dashboard, { now: 5 }),
        dashboard.id,
      );
      assert.equal(
        await store.addDashboard({ ...dashboard, id: "B".repeat(16) }, {
          now: 6,
        }),
        dashboard.id,
      );
      // A success's bookkeeping of its dependents (input_succeeded()).
      const evaluation = await store.addEvaluation("guix", [], 7);
      await store.registerBuilds(evaluation, [
        job("lib"),
        job("app", { inputs: ["lib"] }),
      ], { priority: 9, now: 7 });
      assert.equal(
        (await store.popBuild("w", ["x86_64-linux"], 8))?.jobName,
        "lib",
      );
      await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
        worker: "w",
        now: 9,
      });
      assert.equal(
        (await store.popBuild("w", ["x86_64-linux"], 10))?.jobName,
        "app",
      );
    } finally {
      await store.close();
    }
  },
});

/**
 * Each column of `table` in `schema`: name, type, nullability, default
 * (the schema's name taken out of sequence names).
 */
function columnsOf(schema: string, table: string) {
  return withSql((sql) =>
    sql.unsafe(
      `SELECT column_name, data_type, is_nullable,
       replace(column_default, $1, '') AS column_default
       FROM information_schema.columns
       WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
      [schema, table],
    )
  ).then((rows) => rows.map((row) => ({ ...row })));
}

Deno.test({
  name:
    `markStartedMany() finds builds by derivation even when the statistics predate every hand-out${needs}`,
  ignore,
  async fn() {
    // A small table would be scanned whole: the index is what a big one
    // is read by. Past some 10,000 builds, even a scan of the primary key
    // (in the order the rows are locked in) costs more than looking the
    // reports up.
    await withSchemaSql({ enable_seqscan: "off" }, async (store, sql) => {
      await store.upsertSpecification(specification("guix"));
      const evaluation = await store.addEvaluation("guix", [], 1);
      await store.registerBuilds(
        evaluation,
        Array.from({ length: 20_000 }, (_, i) => job(`job-${i}`)),
        { priority: 9, now: 1 },
      );
      // Statistics of a queue no worker was handed anything from yet.
      await sql.unsafe("ANALYZE Builds");
      const popped = await store.popBuilds(
        Array.from({ length: 50 }, (_, i) => ({
          worker: `w${i}`,
          systems: ["x86_64-linux"],
        })),
        2,
      );
      const starts = popped.slice(0, 3).map((build) => ({
        derivation: build!.derivation,
        worker: build!.worker!,
        log: "/log",
      }));
      // The statement the store runs, explained with its parameters.
      const { indexes, plan } = await indexesRead(
        sql,
        markStartedMany(postgresDialect("unused"), starts, 3),
      );
      // Each report's build by its derivation, then the locked row again
      // by its id, as the UPDATE joins it.
      assert.deepEqual(indexes, ["builds_derivation_key", "builds_pkey"], plan);
    });
  },
});

Deno.test({
  name:
    `a worker sweep finds the rows past their own deadline through Workers_deadline, and those recording no timeout through Workers_last_seen${needs}`,
  ignore,
  async fn() {
    await withSchemaSql({ enable_seqscan: "off" }, async (store, sql) => {
      await addSweptWorkers(store);
      await sql.unsafe("ANALYZE Workers");
      const { now, sweep } = SWEEP_OF_SWEPT_WORKERS;
      const { indexes, plan } = await indexesRead(
        sql,
        expireWorkers(postgresDialect("unused"), now, sweep),
      );
      assert.deepEqual(
        indexes.sort(),
        ["workers_deadline", "workers_last_seen"],
        plan,
      );
      // The rows that plan finds: each past its own deadline.
      await assertSweptWorkersExpired(store);
    });
  },
});

/** The indexes PostgreSQL reads for the first statement of `steps`. */
async function indexesRead(
  sql: postgres.Sql,
  steps: Step<unknown>,
  skip = 0,
): Promise<{ indexes: string[]; plan: string }> {
  // The first `skip` statements are passed over, as though they changed
  // and returned nothing.
  let next = steps.next();
  for (let i = 0; i < skip; i++) next = steps.next({ changes: 0, rows: [] });
  const query = next.value as { sql: string; params: unknown[] };
  let index = 0;
  const text = query.sql.replace(/\?/g, () => `$${++index}`);
  const [row] = await sql.unsafe(
    `EXPLAIN (FORMAT JSON) ${text}`,
    query.params as postgres.ParameterOrJSON<never>[],
  );
  const plan = JSON.stringify(row["QUERY PLAN"]);
  const indexes = [...plan.matchAll(/"Index Name":"([a-z_]+)"/g)]
    .map((match) => match[1]);
  return { indexes, plan };
}

Deno.test({
  name:
    `canceling an evaluation finds its builds through Builds_evaluation, then locks and joins them by id, scanning no table of builds whole${needs}`,
  ignore,
  async fn() {
    await withSchemaSql({}, async (store, sql) => {
      await fourEvaluations(store, 2000);
      await sql.unsafe("ANALYZE Builds");
      const { indexes, plan } = await indexesRead(
        sql,
        cancelEvaluation(postgresDialect("unused"), 2, 9),
        // The evaluation's own row first.
        1,
      );
      assert.equal(indexes[0], "builds_evaluation", plan);
      assert.deepEqual(
        [...new Set(indexes.slice(1))].sort(),
        ["builds_pkey"],
        plan,
      );
      assert.doesNotMatch(
        plan,
        /"Node Type":"Seq Scan"[^}]*"Relation Name":"builds"/,
      );
    });
  },
});

/** Specification "guix" with four evaluations of `jobs` jobs each (job-E-I). */
async function fourEvaluations(store: Store, jobs: number): Promise<void> {
  await store.upsertSpecification(specification("guix"));
  for (let e = 0; e < 4; e++) {
    const evaluation = await store.addEvaluation("guix", [], e);
    await store.registerBuilds(
      evaluation,
      Array.from({ length: jobs }, (_, i) => job(`job-${e}-${i}`)),
      { priority: 9, now: e },
    );
  }
}

Deno.test({
  name:
    `a worker's latest builds are read in the order of Builds_worker, its held builds through Builds_held${needs}`,
  ignore,
  async fn() {
    await withSchemaSql({ enable_seqscan: "off" }, async (store, sql) => {
      await fourEvaluations(store, 300);
      // Twenty workers' builds, most finished, some still held: the
      // finished builds of one worker are a twentieth of all.
      const popped = await store.popBuilds(
        Array.from({ length: 1000 }, (_, i) => ({
          worker: `w${i % 20}`,
          systems: ["x86_64-linux"],
        })),
        5,
      );
      for (const build of popped.slice(0, 900)) {
        await store.completeBuild(build!.derivation, BuildStatus.succeeded, {
          worker: build!.worker!,
          now: 6,
        });
      }
      await sql.unsafe("ANALYZE");
      const d = postgresDialect("unused");
      const latest = await indexesRead(
        sql,
        latestBuilds(d, { worker: "w3" }, 10),
      );
      assert.equal(latest.indexes[0], "builds_worker", latest.plan);
      assert.ok(!latest.plan.includes('"Sort"'), latest.plan);
      for (
        const [label, steps] of [
          ["queue", queue(d, { worker: "w3" }, 64)],
          ["requeue", requeueWorker(d, "w3")],
        ] as const
      ) {
        const { indexes, plan } = await indexesRead(sql, steps);
        assert.ok(indexes.includes("builds_held"), `${label}: ${plan}`);
      }
    });
  },
});

Deno.test({
  name:
    `the id and oldevaluation filters and dashboards are read through indexes${needs}`,
  ignore,
  async fn() {
    // A small table would be scanned whole: the indexes are what a big
    // one is read by, so the test asks that one can serve each query.
    await withSchemaSql({ enable_seqscan: "off" }, async (store, sql) => {
      await fourEvaluations(store, 500);
      for (let i = 0; i < 250; i++) {
        await store.completeBuild(drv(`job-0-${i}`), BuildStatus.succeeded, {
          now: 9,
        });
      }
      // Dashboards used at many times: their last_used index (which holds
      // the id too) is no match for the key.
      await sql.unsafe(`INSERT INTO Dashboards (id, specification, jobs,
        last_used) SELECT lpad(CAST(i AS text), 16, 'a'), 'guix', 'a', i
        FROM generate_series(1, 300) AS i`);
      await sql.unsafe("ANALYZE");
      const d = postgresDialect("unused");
      // Each query and the indexes of Builds that may serve it: a range
      // of evaluations is read in evaluation order, so the LIMIT stops it.
      const cases: [string, Step<unknown>, string[]][] = [
        ["latest id", latestBuilds(d, { id: 7 }, 100), ["builds_pkey"]],
        ["queue id", queue(d, { id: 7 }, 100), ["builds_pkey"]],
        [
          "latest older",
          latestBuilds(d, { beforeEvaluation: 3 }, 100),
          ["builds_finished", "builds_evaluation"],
        ],
        [
          "latest older of a jobset",
          latestBuilds(d, { beforeEvaluation: 3, specification: "guix" }, 100),
          ["builds_finished_specification", "builds_evaluation"],
        ],
        [
          "queue older",
          queue(d, { beforeEvaluation: 3 }, 100),
          ["builds_pending", "builds_evaluation"],
        ],
        [
          "dashboard",
          getDashboard(d, "AbCdEfGh01234567"),
          ["dashboards_pkey"],
        ],
      ];
      for (const [label, steps, expected] of cases) {
        const { indexes, plan } = await indexesRead(sql, steps);
        assert.ok(expected.includes(indexes[0]), `${label}: ${plan}`);
        assert.ok(!plan.includes("Seq Scan"), `${label}: ${plan}`);
      }
    });
  },
});

Deno.test({
  name:
    `filters that may match few builds are read through their own indexes, not by walking the listing's order${needs}`,
  ignore,
  async fn() {
    await withSchemaSql({ enable_seqscan: "off" }, async (store, sql) => {
      await fourEvaluations(store, 200);
      // An evaluation of a system with a few builds, one of them finished,
      // after two evaluations of many finished builds.
      const rare = await store.addEvaluation("guix", [], 5);
      await store.registerBuilds(
        rare,
        ["a", "b", "c"].map((name) =>
          job(`rare-${name}`, { system: "powerpc64le-linux" })
        ),
        { priority: 9, now: 5 },
      );
      const finished = ["rare-a"];
      for (let i = 0; i < 200; i++) finished.push(`job-0-${i}`, `job-1-${i}`);
      for (const name of finished) {
        await store.completeBuild(drv(name), BuildStatus.succeeded, {
          now: 9,
        });
      }
      await sql.unsafe("ANALYZE");
      const d = postgresDialect("unused");
      // Each listing, the indexes of Builds or Jobs it may read first, and
      // whether its order comes from that index (else a sort of the few
      // matching builds; null: either).
      const cases: [string, Step<unknown>, string[], boolean | null][] = [
        [
          "latest system",
          latestBuilds(d, { system: "powerpc64le-linux" }, 100),
          ["builds_finished_system"],
          true,
        ],
        [
          "latest evaluation",
          latestBuilds(d, { evaluation: rare }, 100),
          ["jobs_pkey"],
          false,
        ],
        [
          "latest job of a jobset",
          latestBuilds(d, { specification: "guix", job: "job-1-7" }, 100),
          ["builds_specification_job", "builds_job_name"],
          false,
        ],
        [
          "queue jobset",
          queue(d, { specification: "guix" }, 100),
          // Either index of the pending builds, sorted or in order: the
          // queue is read, not every build of the jobset.
          ["builds_pending", "builds_status_system"],
          null,
        ],
        [
          "queue evaluation",
          queue(d, { evaluation: rare }, 100),
          ["jobs_pkey"],
          false,
        ],
        [
          "queue job",
          queue(d, { job: "job-1-7" }, 100),
          ["builds_job_name", "builds_specification_job"],
          false,
        ],
      ];
      for (const [label, steps, expected, ordered] of cases) {
        const { indexes, plan } = await indexesRead(sql, steps);
        assert.ok(expected.includes(indexes[0]), `${label}: ${plan}`);
        if (ordered !== null) {
          assert.equal(!plan.includes('"Sort"'), ordered, `${label}: ${plan}`);
        }
        assert.ok(!plan.includes("Seq Scan"), `${label}: ${plan}`);
      }
    });
  },
});

Deno.test({
  name:
    `markStartedMany() starts no build that has no worker, whatever the name reported${needs}`,
  ignore,
  async fn() {
    await withSchemaSql({}, async (store, sql) => {
      await store.upsertSpecification(specification("guix"));
      const evaluation = await store.addEvaluation("guix", [], 1);
      await store.registerBuilds(evaluation, [job("orphan"), job("named")], {
        priority: 9,
        now: 1,
      });
      // Submitted builds, one without a worker (no store procedure leaves
      // one so; an administrator's UPDATE could) and one to worker "".
      await sql.unsafe(
        `UPDATE Builds SET status = -3,
           worker = CASE WHEN job_name = 'named' THEN '' END`,
      );
      const recorded = await store.markStartedMany([
        { derivation: drv("orphan"), worker: "", log: "/hostile" },
        { derivation: drv("named"), worker: "", log: "/named" },
      ], 2);
      assert.deepEqual(recorded, [false, true]);
      const orphan = await store.getBuildByDerivation(drv("orphan"));
      assert.equal(orphan?.status, BuildStatus.submitted);
      assert.equal(orphan?.log, "");
    });
  },
});

Deno.test({
  name:
    `queries to a database that stops answering fail past the deadline as unavailable, and the store works again once it answers${needs}`,
  ignore,
  async fn() {
    const target = new URL(url!);
    const relay = startTcpRelay(Number(target.port || 5432));
    target.port = String(relay.port);
    const store = await openPostgresStore(target.href, {
      schema: freshSchema(),
      queryTimeoutSeconds: 1,
      queuePollMs: 60_000,
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await store.upsertSpecification(specification("before"));
      const closed = relay.closedByClients;
      relay.blackHole();
      const started = performance.now();
      // A read on the pool, and a write in a transaction beside it.
      const queries = [
        store.listSpecifications(),
        store.upsertSpecification(specification("during")),
      ].map((query) => query.then(() => "answered", (error) => error));
      const hanging = new Promise((resolve) => {
        timer = setTimeout(() => resolve("still waiting"), 20_000);
      });
      for (
        const outcome of await Promise.all(
          queries.map((query) => Promise.race([query, hanging])),
        )
      ) {
        assert.ok(outcome instanceof Error, String(outcome));
        assert.ok(isDatabaseUnavailable(outcome), outcome.stack);
        // In the operator's words: the option to change, not the driver's.
        assert.match(outcome.message, /\(--database-timeout, 1 s\)/);
      }
      // The deadline, then the cancel's 5 s wait for an answer.
      const elapsed = performance.now() - started;
      assert.ok(
        elapsed >= 1000 && elapsed < 1000 + 5000 + 3000,
        `${elapsed} ms`,
      );
      // Closed, not kept for the next query (the relay sees it soon after).
      for (let i = 0; i < 50 && relay.closedByClients === closed; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(relay.closedByClients > closed, "connection closed");
      relay.resume();
      await store.upsertSpecification(specification("after"));
      const names = (await store.listSpecifications()).map((s) => s.name);
      assert.ok(
        names.includes("before") && names.includes("after"),
        `${names}`,
      );
    } finally {
      clearTimeout(timer);
      relay.resume();
      await store.close();
      await relay.close();
    }
  },
});

Deno.test({
  name:
    `openPostgresStore() waits past the query deadline for another process's migration${needs}`,
  ignore,
  async fn() {
    const schema = freshSchema();
    await withSql(async (sql) => {
      // The lock a migrating process holds, for longer than the deadline.
      const holder = sql.begin(async (tx) => {
        await tx.unsafe("SELECT pg_advisory_xact_lock(7419001)");
        await tx.unsafe("SELECT pg_sleep(2)");
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const store = await openPostgresStore(url!, {
        schema,
        queryTimeoutSeconds: 1,
      });
      await holder;
      await store.listWorkers();
      await store.close();
    });
  },
});

Deno.test({
  name:
    `deleteSpecification() of a specification whose builds take longer than the query deadline to delete as one statement${needs}`,
  ignore,
  async fn() {
    // One statement cascading over every build of a specification grows
    // with the farm (1.3 s for 50,000 builds here; a main branch's years
    // of builds are millions): a deadline made it fail every time. The
    // deadline here is cut to fit a test-sized specification.
    const schema = freshSchema();
    const filler = await openPostgresStore(url!, { schema });
    const count = 60_000;
    let kept: number;
    try {
      await filler.upsertSpecification(specification("big"));
      await filler.upsertSpecification(specification("kept"));
      const evaluation = await filler.addEvaluation("big", [], 1);
      await filler.registerBuilds(
        evaluation,
        Array.from(
          { length: count },
          (_, i) => job(`big-${i}`, { inputs: i > 0 ? [`big-${i - 1}`] : [] }),
        ),
        { priority: 9, now: 1 },
      );
      // A build of another specification that depends on one of them.
      const other = await filler.addEvaluation("kept", [], 1);
      await filler.registerBuilds(other, [job("c", { inputs: ["big-7"] })], {
        priority: 9,
        now: 1,
      });
      kept = (await filler.getBuildByDerivation(drv("c")))!.id;
    } finally {
      await filler.close();
    }
    const store = await openPostgresStore(url!, {
      schema,
      queryTimeoutSeconds: 0.5,
      queuePollMs: 60_000,
    });
    try {
      assert.equal(await store.deleteSpecification("big"), true);
      assert.equal(await store.getBuildByDerivation(drv("big-7")), null);
      assert.deepEqual(await store.buildDependencies(kept), []);
      // Its dependency gone, the other specification's build may go.
      assert.equal(
        (await store.popBuild("w", ["x86_64-linux"], 2))?.id,
        kept,
      );
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name:
    `addDashboard() on a table that a flood of registrations filled before the bound: each registration drops a bounded number, within the query deadline${needs}`,
  ignore,
  async fn() {
    // Upgraded from schema 7 after /api/dashboard/register saved a row per
    // call: 400,000 rows here (a day of a request loop is millions). One
    // statement dropping all but 10,000 outlasted the deadline (cut here to
    // fit a test-sized table), and as it rolled back every registration
    // failed the same way.
    const schema = freshSchema();
    const store = await openPostgresStore(url!, {
      schema,
      queryTimeoutSeconds: 0.5,
      queuePollMs: 60_000,
    });
    try {
      await store.upsertSpecification(specification("guix"));
      const old = 400_000;
      await withSql((sql) =>
        sql.unsafe(`INSERT INTO ${schema}.Dashboards (id, specification, jobs)
          SELECT 'old' || g, 'guix', 'job-' || g
          FROM generate_series(1, ${old}) g`)
      );
      const add = (id: string) =>
        store.addDashboard({ id, specification: "guix", jobs: [id] }, {
          now: 1000,
        });
      assert.equal(await add("A".repeat(16)), "A".repeat(16));
      assert.equal(await add("B".repeat(16)), "B".repeat(16));
      const left = await withSql(async (sql) =>
        Number(
          (await sql.unsafe(`SELECT count(*) AS n FROM ${schema}.Dashboards`))[
            0
          ]
            .n,
        )
      );
      // Two new rows in, the least recently used (the old ones) going.
      assert.ok(left < old && left > MAX_DASHBOARDS, `${left} rows`);
      assert.notEqual(await store.getDashboard("A".repeat(16)), null);
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: `postgres test schemas are dropped${needs}`,
  ignore,
  fn: dropSchemas,
});

Deno.test({
  name:
    `registerBuilds() analyzes the build tables when it outgrew their statistics${needs}`,
  ignore,
  async fn() {
    const schema = freshSchema();
    const store = await openPostgresStore(url!, { schema });
    const sql = postgres(url!, { max: 1, onnotice: () => {} });
    const knownRows = async () =>
      Number(
        (await sql.unsafe(
          `SELECT reltuples FROM pg_class WHERE oid = '${schema}.builds'::regclass`,
        ))[0].reltuples,
      );
    try {
      await store.upsertSpecification(specification("big"));
      const register = async (from: number, count: number) => {
        const evaluation = await store.addEvaluation("big", [], from);
        const jobs = Array.from(
          { length: count },
          (_, i) => job(`big-${from + i}`),
        );
        await store.registerBuilds(evaluation, jobs, { priority: 9, now: 1 });
      };
      // A fresh table was never analyzed (-1, or 0 before PostgreSQL 14).
      assert.ok(await knownRows() <= 0);
      // More new builds than the statistics know of: analyzed at once,
      // within the registration (autovacuum waits up to a minute).
      await register(0, 2 * STATISTICS_REFRESH_MIN);
      assert.equal(await knownRows(), 2 * STATISTICS_REFRESH_MIN);
    } finally {
      await sql.end({ timeout: 1 });
      await store.close();
    }
  },
});
