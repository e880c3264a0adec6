import assert from "node:assert/strict";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import {
  DELETE_CHUNK,
  deleteSpecification,
  FILTER_PROBE_LIMIT,
  latestBuilds,
  queue,
} from "../../../lib/store/sql_catalog.ts";
import {
  expireWorkers,
  requeueWorker,
  stillHeld,
} from "../../../lib/store/sql_workers.ts";
import { cancelEvaluation } from "../../../lib/store/sql_builds.ts";
import {
  addDashboard,
  getDashboard,
} from "../../../lib/store/sql_dashboards.ts";
import {
  type Query,
  type QueryResult,
  sqliteDialect,
  type Step,
} from "../../../lib/store/sql_query.ts";
import { SCHEMA_VERSION } from "../../../lib/store/sqlite_schema.ts";
import { BuildStatus, StoreError } from "../../../lib/store/types.ts";
import { drv, job, specification, storeContract } from "./store_contract.ts";
import {
  addSweptWorkers,
  assertSweptWorkersExpired,
  assertUntimedWorkersUpgraded,
  SWEEP_OF_SWEPT_WORKERS,
  UNTIMED_WORKER_ROWS,
} from "./_worker_rows.ts";
import type { Store } from "../../../lib/store/types.ts";
import type {
  ConcurrencyJob,
  ConcurrencyReport,
} from "./sqlite_concurrency_worker.ts";
import { sqliteTempFiles } from "./_sqlite_fixture.ts";
import { chunkedRegistrationContract } from "./chunked_registration_contract.ts";

const { tempFile } = sqliteTempFiles("lorica-sqlite-test-");

storeContract("sqlite file", () => openSqliteStore(tempFile()));
storeContract("sqlite memory", () => openSqliteStore(":memory:"));
chunkedRegistrationContract("sqlite file", () => openSqliteStore(tempFile()));
// As the server opens it: a thread checkpoints the log meanwhile, another
// runs the counts.
storeContract(
  "sqlite file, checkpoint and scan threads",
  () =>
    openSqliteStore(tempFile(), {
      backgroundCheckpoints: true,
      backgroundScans: true,
    }),
);

async function withStore(
  path: string,
  fn: (store: Store) => Promise<void>,
): Promise<void> {
  const store = openSqliteStore(path);
  try {
    await fn(store);
  } finally {
    await store.close();
  }
}

async function seed(store: Store, count: number): Promise<number> {
  await store.upsertSpecification(specification("guix"));
  const id = await store.addEvaluation("guix", [], 1);
  const jobs = Array.from({ length: count }, (_, i) => job(`job-${i}`));
  await store.registerBuilds(id, jobs, { priority: 9, now: 1 });
  return id;
}

Deno.test("openSqliteStore() creates a WAL database with its schema version", async () => {
  const path = tempFile();
  await withStore(path, async (store) => {
    await store.upsertSpecification(specification("guix"));
  });
  const raw = new DatabaseSync(path);
  try {
    assert.deepEqual(
      { ...raw.prepare("SELECT version FROM SchemaVersion").get() },
      { version: SCHEMA_VERSION },
    );
    assert.equal(
      raw.prepare("PRAGMA journal_mode").get()?.journal_mode,
      "wal",
    );
  } finally {
    raw.close();
  }
  // Reopening keeps the data and does not recreate the schema.
  await withStore(path, async (store) => {
    assert.equal((await store.getSpecification("guix"))?.name, "guix");
  });
});

Deno.test("openSqliteStore() refuses a database from a newer schema", async () => {
  const path = tempFile();
  await openSqliteStore(path).close();
  const raw = new DatabaseSync(path);
  raw.exec("UPDATE SchemaVersion SET version = 99");
  raw.close();
  assert.throws(
    () => openSqliteStore(path),
    (error: unknown) =>
      error instanceof StoreError && error.code === "schema-too-new" &&
      error.value === 99 && error.message.includes(JSON.stringify(path)),
  );
});

Deno.test("openSqliteStore() upgrades a version 1 database, counting pending dependencies and keeping workers without a timeout", async () => {
  const path = tempFile();
  const raw = new DatabaseSync(path);
  raw.exec(
    Deno.readTextFileSync(
      new URL("./fixtures/sqlite_schema_v1.sql", import.meta.url),
    ),
  );
  raw.exec(`
    INSERT INTO Specifications VALUES
      ('guix', '{"type":"all","params":[]}', '[]', '[]', '[]', 0, 9, '[]', 1);
    INSERT INTO Evaluations VALUES (1, 'guix', 0, 1, 1, 2);
    INSERT INTO Checkouts VALUES (1, 'guix', 'guix', 'r1', '/d1', 1);
    INSERT INTO Checkouts VALUES (1, 'extra', 'guix', 'x1', '/d2', 1);
    INSERT INTO Builds (id, derivation, evaluation, specification, job_name,
      system, nix_name, status, timestamp)
    VALUES (1, '/a.drv', 1, 'guix', 'a', 'x86_64-linux', 'a', 0, 1),
           (2, '/b.drv', 1, 'guix', 'b', 'x86_64-linux', 'b', -2, 1),
           (3, '/c.drv', 1, 'guix', 'c', 'x86_64-linux', 'c', -2, 0);
    INSERT INTO BuildDependencies VALUES (3, 1), (3, 2);
    INSERT INTO Dashboards VALUES ('AbCdEfGh01234567', 'guix', 'b,a,b');
    INSERT INTO Workers VALUES ${UNTIMED_WORKER_ROWS};
  `);
  raw.close();
  await withStore(path, async (store) => {
    assert.deepEqual(
      (await store.getEvaluationCheckouts(1)).map((c) => c.channel),
      ["guix", "extra"],
    );
    // c is older but waits for b.
    assert.equal((await store.popBuild("w", ["x86_64-linux"], 5))?.id, 2);
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 5), null);
    await store.completeBuild("/b.drv", 0, { worker: "w", now: 6 });
    assert.equal((await store.popBuild("w", ["x86_64-linux"], 7))?.id, 3);
    // Version 3: the dispatcher's clean stops.
    await store.stopWorkerClock(8);
    assert.equal(await store.resumeWorkerClock(10), 2);
    // Version 6: the output fetches owed.
    const fetch = { drv: "/c.drv", worker: "w", url: "http://w" };
    await store.saveOwedFetches([fetch]);
    assert.deepEqual(await store.owedFetches(), [fetch]);
    // Version 10: a dashboard saved before is kept, never used since;
    // its names saved again make a new one (it has no key).
    assert.deepEqual(await store.getDashboard("AbCdEfGh01234567"), {
      id: "AbCdEfGh01234567",
      specification: "guix",
      jobs: ["b", "a", "b"],
      lastUsed: 0,
    });
    const again = { id: "Z".repeat(16), specification: "guix", jobs: ["a"] };
    assert.equal(await store.addDashboard(again, { now: 11 }), again.id);
    assert.equal(
      await store.addDashboard({ ...again, id: "Y".repeat(16) }, { now: 12 }),
      again.id,
    );
    // Version 14: rows from before timeouts were recorded.
    await assertUntimedWorkersUpgraded(store);
  });
  const fresh = tempFile();
  await withStore(fresh, () => Promise.resolve());
  const upgraded = new DatabaseSync(path);
  const created = new DatabaseSync(fresh);
  try {
    assert.equal(
      upgraded.prepare("SELECT version FROM SchemaVersion").get()?.version,
      SCHEMA_VERSION,
    );
    // The same indexes as a database created at this version.
    assert.deepEqual(indexesOf(upgraded), indexesOf(created));
    // And the same columns (version 9: notification claims; 10: dashboard
    // keys and uses; 12: evaluation owners and heartbeats; 13: canceled
    // evaluations; 14: workers' timeouts).
    for (
      const table of [
        "Builds",
        "Notifications",
        "Workers",
        "Dashboards",
        "Evaluations",
      ]
    ) {
      assert.deepEqual(columnsOf(upgraded, table), columnsOf(created, table));
    }
  } finally {
    upgraded.close();
    created.close();
  }
});

/** The column names of `table`, in order. */
function columnsOf(db: DatabaseSync, table: string): string[] {
  return db.prepare(`SELECT name FROM pragma_table_info(?)`).all(table)
    .map((row) => String(row.name));
}

/** Each index's name and definition, whitespace collapsed. */
function indexesOf(db: DatabaseSync): string[] {
  return db.prepare(
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name",
  ).all().map((row) =>
    `${row.name}: ${String(row.sql ?? "(implicit)").replace(/\s+/g, " ")}`
  );
}

/** SQLite's plan of the first statement `steps` would run. */
function planOf(db: DatabaseSync, steps: Step<unknown>): string {
  return queryPlan(db, steps.next().value as Query);
}

/** SQLite's plan of `query`. */
function queryPlan(db: DatabaseSync, query: Query): string {
  return db.prepare(`EXPLAIN QUERY PLAN ${query.sql}`)
    .all(...(query.params as SQLInputValue[]))
    .map((row) => String(row.detail)).join("; ");
}

/**
 * SQLite's plan of each statement `steps` runs, given the results of
 * each in turn.
 */
function plansOf(
  db: DatabaseSync,
  steps: Step<unknown>,
  results: QueryResult[],
): string[] {
  const plans = [];
  let next = steps.next();
  for (const result of results) {
    if (next.done) break;
    plans.push(queryPlan(db, next.value));
    next = steps.next(result);
  }
  return plans;
}

Deno.test("registering a dashboard finds its names and the least recently used through indexes", async () => {
  const path = tempFile();
  await withStore(path, () => Promise.resolve());
  const db = new DatabaseSync(path);
  try {
    const dashboard = { id: "A".repeat(16), specification: "g", jobs: ["a"] };
    const [_spec, saved, _insert, _count, evict] = plansOf(
      db,
      addDashboard(sqliteDialect, dashboard, 100, 10),
      [
        { rows: [{ found: 1 }], changes: 0 },
        { rows: [], changes: 0 },
        { rows: [], changes: 1 },
        { rows: [{ n: 12 }], changes: 0 },
        { rows: [], changes: 2 },
      ],
    );
    assert.match(
      saved,
      /^SEARCH Dashboards USING INDEX Dashboards_jobs_key \(specification=\? AND jobs_key=\?\)/,
    );
    assert.match(
      evict,
      /SCAN Dashboards USING COVERING INDEX Dashboards_last_used/,
    );
    assert.doesNotMatch(evict, /TEMP B-TREE/);
  } finally {
    db.close();
  }
});

Deno.test("a worker sweep finds the rows past their own deadline through Workers_deadline, and those recording no timeout through Workers_last_seen", async () => {
  const path = tempFile();
  await withStore(path, async (store) => {
    await addSweptWorkers(store);
  });
  const db = new DatabaseSync(path);
  try {
    db.exec("ANALYZE");
    const { now, sweep } = SWEEP_OF_SWEPT_WORKERS;
    const plan = planOf(db, expireWorkers(sqliteDialect, now, sweep));
    assert.match(
      plan,
      /^MULTI-INDEX OR; INDEX 1; SEARCH Workers USING INDEX Workers_deadline \(<expr><\?\); INDEX 2; SEARCH Workers USING INDEX Workers_last_seen \(last_seen<\?\)/,
    );
  } finally {
    db.close();
  }
  // The rows that plan finds: each past its own deadline.
  await withStore(path, assertSweptWorkersExpired);
});

Deno.test("a worker's latest builds are read in the order of Builds_worker, its held builds through Builds_held", async () => {
  const path = tempFile();
  await withStore(path, () => Promise.resolve());
  const db = new DatabaseSync(path);
  try {
    const latest = planOf(
      db,
      latestBuilds(sqliteDialect, { worker: "w" }, 100),
    );
    assert.match(latest, /USING INDEX Builds_worker \(worker=\?\)/);
    assert.doesNotMatch(latest, /TEMP B-TREE FOR ORDER BY/);
    for (
      const held of [
        queue(sqliteDialect, { worker: "w" }, 64),
        requeueWorker(sqliteDialect, "w"),
      ]
    ) {
      assert.match(planOf(db, held), /INDEX Builds_held \(worker=\? AND/);
    }
  } finally {
    db.close();
  }
});

Deno.test("the id and oldevaluation filters and dashboards are read through indexes, never a scan of Builds", async () => {
  const path = tempFile();
  await withStore(path, () => Promise.resolve());
  const db = new DatabaseSync(path);
  try {
    const cases: [string, Step<unknown>, RegExp][] = [
      [
        "latest id",
        latestBuilds(sqliteDialect, { id: 7 }, 100),
        /^SEARCH b USING INTEGER PRIMARY KEY \(rowid=\?\)/,
      ],
      [
        "queue id",
        queue(sqliteDialect, { id: 7 }, 100),
        /^SEARCH b USING INTEGER PRIMARY KEY \(rowid=\?\)/,
      ],
      [
        "latest older",
        latestBuilds(sqliteDialect, { beforeEvaluation: 3 }, 100),
        /^SEARCH b USING INDEX Builds_finished \(evaluation<\?\)/,
      ],
      [
        "latest older of a jobset",
        latestBuilds(
          sqliteDialect,
          { beforeEvaluation: 3, specification: "guix" },
          100,
        ),
        /^SEARCH b USING INDEX Builds_finished_specification \(specification=\? AND evaluation<\?\)/,
      ],
      // The pending builds in dispatch order, filtered, until the limit.
      [
        "queue older",
        queue(sqliteDialect, { beforeEvaluation: 3 }, 100),
        /^SEARCH b USING INDEX Builds_pending \(status<\?\)/,
      ],
      [
        "dashboard",
        getDashboard(sqliteDialect, "AbCdEfGh01234567"),
        /^SEARCH Dashboards USING INDEX sqlite_autoindex_Dashboards_1 \(id=\?\)/,
      ],
    ];
    for (const [label, steps, expected] of cases) {
      const plan = planOf(db, steps);
      assert.match(plan, expected, label);
      assert.doesNotMatch(plan, /TEMP B-TREE FOR ORDER BY/, label);
      assert.doesNotMatch(plan, /SCAN b\b/, label);
    }
  } finally {
    db.close();
  }
});

Deno.test("filters that may match few builds are read through their own indexes, not by walking the listing's order", async () => {
  const path = tempFile();
  await withStore(path, () => Promise.resolve());
  const db = new DatabaseSync(path);
  try {
    // Each listing, the index it must search first, and whether its order
    // comes from that index (else a sort of the few matching builds).
    const cases: [string, Step<unknown>, RegExp, boolean][] = [
      [
        "latest system",
        latestBuilds(sqliteDialect, { system: "powerpc64le-linux" }, 100),
        /^SEARCH b USING INDEX Builds_finished_system \(system=\?\)/,
        true,
      ],
      [
        "latest evaluation",
        latestBuilds(sqliteDialect, { evaluation: 3 }, 100),
        /LIST SUBQUERY \d+; SEARCH Jobs USING INDEX sqlite_autoindex_Jobs_1 \(evaluation=\?\)/,
        false,
      ],
      [
        "latest job of a jobset",
        latestBuilds(
          sqliteDialect,
          { specification: "guix", job: "hello.x86_64-linux" },
          100,
        ),
        /LIST SUBQUERY \d+; SEARCH b USING INDEX Builds_specification_job \(specification=\? AND job_name=\?\)/,
        false,
      ],
      [
        "queue jobset",
        queue(sqliteDialect, { specification: "guix" }, 100),
        /^SEARCH b USING INDEX Builds_pending \(status<\?\)/,
        true,
      ],
      [
        "queue evaluation",
        queue(sqliteDialect, { evaluation: 3, system: "i686-linux" }, 100),
        /LIST SUBQUERY \d+; SEARCH Jobs USING INDEX sqlite_autoindex_Jobs_1 \(evaluation=\?\)/,
        false,
      ],
      [
        "queue job",
        queue(sqliteDialect, { job: "hello.x86_64-linux" }, 100),
        /LIST SUBQUERY \d+; SEARCH b USING INDEX Builds_job_name \(job_name=\?\)/,
        false,
      ],
    ];
    for (const [label, steps, expected, ordered] of cases) {
      const plan = planOf(db, steps);
      assert.match(plan, expected, label);
      assert.equal(/TEMP B-TREE FOR ORDER BY/.test(plan), !ordered, label);
      assert.doesNotMatch(plan, /SCAN b\b/, label);
    }
  } finally {
    db.close();
  }
});

Deno.test("latest builds of a jobset and a system (or a worker) walk the index of the filter that matched fewest builds", async () => {
  const path = tempFile();
  await withStore(path, () => Promise.resolve());
  const db = new DatabaseSync(path);
  try {
    const filter = {
      specification: "guix",
      system: "powerpc64le-linux",
      worker: "w",
    };
    // The probes' counts, in the order worker, specification, system, and
    // the index then walked.
    const cases: [number[], string][] = [
      [[FILTER_PROBE_LIMIT, FILTER_PROBE_LIMIT, 3], "Builds_finished_system"],
      [[FILTER_PROBE_LIMIT, 0, 3], "Builds_finished_specification"],
      [[12, 40, 3], "Builds_finished_system"],
      [
        [FILTER_PROBE_LIMIT, FILTER_PROBE_LIMIT, FILTER_PROBE_LIMIT],
        "Builds_worker",
      ],
    ];
    for (const [counts, index] of cases) {
      const steps = latestBuilds(sqliteDialect, filter, 100);
      let query = steps.next().value as Query;
      for (const count of counts) {
        // Each probe reads one index, at most the limit's entries.
        assert.match(query.sql, new RegExp(`LIMIT ${FILTER_PROBE_LIMIT}\\)`));
        assert.doesNotMatch(queryPlan(db, query), /SCAN b\b/);
        query = steps.next({ rows: [{ n: count }], changes: 0 }).value as Query;
      }
      const plan = queryPlan(db, query);
      assert.match(
        plan,
        new RegExp(`^SEARCH b USING INDEX ${index} \\(`),
        plan,
      );
      assert.doesNotMatch(plan, /TEMP B-TREE FOR ORDER BY/);
    }
  } finally {
    db.close();
  }
});

Deno.test("deleteSpecification() reads and deletes its builds a chunk at a time, each through an index range", async () => {
  const path = tempFile();
  await withStore(path, async (store) => {
    await seed(store, 2 * DELETE_CHUNK + 1);
  });
  const db = new DatabaseSync(path);
  db.exec("PRAGMA foreign_keys = ON");
  try {
    const largest: number[] = [];
    const sorted: string[] = [];
    const steps = deleteSpecification(sqliteDialect, "guix");
    for (let next = steps.next(); !next.done;) {
      const query = next.value;
      const plan = queryPlan(db, query);
      if (/TEMP B-TREE FOR ORDER BY/.test(plan)) {
        sorted.push(`${query.sql}: ${plan}`);
      }
      const statement = db.prepare(query.sql);
      const params = query.params as SQLInputValue[];
      const result = query.kind === "rows"
        ? { rows: statement.all(...params), changes: 0 }
        : { rows: [], changes: Number(statement.run(...params).changes) };
      largest.push(result.rows.length);
      next = steps.next(result);
    }
    assert.equal(Math.max(...largest), DELETE_CHUNK);
    assert.deepEqual(sorted, []);
    assert.equal(db.prepare("SELECT count(*) AS n FROM Builds").get()?.n, 0);
  } finally {
    db.close();
  }
});

Deno.test("stillHeld() looks each build up by its derivation, not through the builds of a status", async () => {
  const path = tempFile();
  await withStore(path, async (store) => {
    await seed(store, 200);
    for (let i = 0; i < 100; i++) {
      await store.popBuild(`w${i}`, ["x86_64-linux"], 2);
    }
  });
  const db = new DatabaseSync(path);
  try {
    // No ANALYZE: the server never runs it on SQLite.
    const plan = planOf(
      db,
      stillHeld(sqliteDialect, [{ worker: "w1", derivation: drv("job-1") }]),
    );
    assert.match(
      plan,
      /SCAN json_each.*SEARCH b USING INDEX \S+ \(derivation=\?\)/,
      plan,
    );
  } finally {
    db.close();
  }
});

Deno.test("cancelEvaluation() fails the dependents of its builds in a few statements, not a walk per build", async () => {
  const path = tempFile();
  const count = 5000;
  let id = 0;
  await withStore(path, async (store) => {
    id = await seed(store, count);
    // Builds of a later evaluation that wait for one of the canceled
    // builds, one directly, one through the other.
    const later = await store.addEvaluation("guix", [], 2);
    await store.registerBuilds(later, [
      job("direct", { inputs: ["job-7"] }),
      job("through", { inputs: ["direct"] }),
    ], { priority: 9, now: 2 });
  });
  const db = new DatabaseSync(path);
  try {
    let statements = 0;
    const steps = cancelEvaluation(sqliteDialect, id, 3);
    let next = steps.next();
    while (!next.done) {
      statements++;
      const query = next.value;
      const statement = db.prepare(query.sql);
      const params = query.params as SQLInputValue[];
      next = steps.next(
        query.kind === "rows"
          ? { rows: statement.all(...params), changes: 0 }
          : { rows: [], changes: Number(statement.run(...params).changes) },
      );
    }
    assert.equal(next.value.changed, count);
    assert.ok(statements < 10, `${statements} statements`);
    const statusOf = (base: string) =>
      db.prepare("SELECT status FROM Builds WHERE derivation = ?")
        .get(drv(base))?.status;
    assert.equal(statusOf("direct"), BuildStatus.failedDependency);
    assert.equal(statusOf("through"), BuildStatus.failedDependency);
    assert.equal(statusOf("job-7"), BuildStatus.canceled);
  } finally {
    db.close();
  }
});

Deno.test("the schema cascades deleting a specification to its builds", async () => {
  const path = tempFile();
  await withStore(path, async (store) => {
    await seed(store, 2);
    await store.completeBuild(drv("job-0"), BuildStatus.succeeded, { now: 2 });
  });
  // Deleting a specification cascades to its evaluations, builds, outputs.
  const raw = new DatabaseSync(path);
  raw.exec("PRAGMA foreign_keys = ON");
  raw.exec("DELETE FROM Specifications");
  assert.equal(raw.prepare("SELECT count(*) AS n FROM Outputs").get()?.n, 0);
  raw.close();
  await withStore(path, async (store) => {
    assert.deepEqual(await store.countBuildsByStatus(), new Map());
  });
});

Deno.test("registerBuilds() writes Jobs rows for aliases and for builds of earlier evaluations", async () => {
  const path = tempFile();
  let first = 0;
  let second = 0;
  await withStore(path, async (store) => {
    first = await seed(store, 1);
    await store.registerBuilds(first, [
      job("hello", { drv: "hello" }),
      job("hello-alias", { drv: "hello" }),
    ], { priority: 9, now: 1 });
    second = await store.addEvaluation("guix", [], 2);
    await store.registerBuilds(second, [job("hello", { drv: "hello" })], {
      priority: 9,
      now: 2,
    });
  });
  const raw = new DatabaseSync(path);
  try {
    const rows = raw.prepare(
      `SELECT j.evaluation, j.name, b.derivation, b.evaluation AS created
       FROM Jobs j JOIN Builds b ON b.id = j.build
       WHERE b.derivation = ? ORDER BY j.evaluation, j.name`,
    ).all(drv("hello")).map((row) => ({ ...row }));
    assert.deepEqual(rows, [
      {
        evaluation: first,
        name: "hello",
        derivation: drv("hello"),
        created: first,
      },
      {
        evaluation: first,
        name: "hello-alias",
        derivation: drv("hello"),
        created: first,
      },
      {
        evaluation: second,
        name: "hello",
        derivation: drv("hello"),
        created: first,
      },
    ]);
  } finally {
    raw.close();
  }
});

Deno.test("registerBuilds() is atomic: a bad job leaves no build of the batch", async () => {
  await withStore(tempFile(), async (store) => {
    const id = await seed(store, 0);
    const bad = { ...job("bad"), derivation: "" };
    await assert.rejects(
      store.registerBuilds(id, [job("good"), bad], { priority: 9, now: 1 }),
      (error: unknown) =>
        error instanceof TypeError && error.message.includes('"bad"'),
    );
    assert.equal(await store.getBuildByDerivation(drv("good")), null);
    // The store still works after the rollback.
    assert.deepEqual(
      await store.registerBuilds(id, [job("good")], { priority: 9, now: 1 }),
      { created: 1, known: 0, blocked: 0 },
    );
  });
});

Deno.test("openSqliteStore() waits for another writer, then fails with its busy timeout", async () => {
  const path = tempFile();
  const store = openSqliteStore(path, { busyTimeoutMs: 20 });
  const raw = new DatabaseSync(path);
  try {
    await seed(store, 1);
    raw.exec("BEGIN IMMEDIATE");
    await assert.rejects(
      store.popBuild("w", ["x86_64-linux"], 2),
      /database is locked/,
    );
    // Reads are not blocked by the writer in WAL mode.
    assert.equal((await store.queue({}, 10)).length, 1);
    raw.exec("COMMIT");
    assert.equal((await store.popBuild("w", ["x86_64-linux"], 3))?.id, 1);
  } finally {
    raw.close();
    await store.close();
  }
});

Deno.test("writes awaited one after another wait on no timer, which the timers' nesting clamp would slow", async () => {
  await withStore(":memory:", async (store) => {
    await store.upsertSpecification(specification("guix"));
    // Each write waiting for a timer of its own, set from the previous
    // one's: past five nested timers, each waits at least a few ms (1,000
    // writes: 2.4 s here), where the I/O they wait behind takes none. The
    // timers are counted, not the time taken: this is no benchmark.
    const original = globalThis.setTimeout;
    let timers = 0;
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
      timers++;
      return original(...args);
    }) as typeof setTimeout;
    try {
      for (let now = 1; now <= 1000; now++) {
        await store.touchWorker("w", now, 120);
      }
    } finally {
      globalThis.setTimeout = original;
    }
    assert.equal(timers, 0, `1,000 writes set ${timers} timers`);
  });
});

Deno.test("close() commits a write issued just before it, not yet run", async () => {
  const path = tempFile();
  const store = openSqliteStore(path);
  const written = store.upsertSpecification(specification("guix"));
  await store.close();
  await written;
  await withStore(path, async (reopened) => {
    assert.notEqual(await reopened.getSpecification("guix"), null);
  });
});

Deno.test("close() makes later calls reject", async () => {
  const store = openSqliteStore(":memory:");
  await store.close();
  await assert.rejects(store.listWorkers());
  await store.close();
});

/** Pops, starts and completes builds until none is left; returns their ids. */
async function work(store: Store, worker: string): Promise<number[]> {
  const ids: number[] = [];
  for (let now = 2;; now++) {
    const build = await store.popBuild(worker, ["x86_64-linux"], now);
    if (build === null) return ids;
    ids.push(build.id);
    assert.ok(
      await store.markStarted(build.derivation, worker, "/l", now),
    );
    const done = await store.completeBuild(build.derivation, 0, {
      worker,
      now,
    });
    assert.ok(done.changed);
  }
}

Deno.test("two stores on one file interleave 2,100 status changes without loss (C17)", async () => {
  const path = tempFile();
  const builds = 700;
  const a = openSqliteStore(path);
  const b = openSqliteStore(path);
  try {
    await seed(a, builds);
    const [fromA, fromB] = await Promise.all([work(a, "wa"), work(b, "wb")]);
    assert.ok(fromA.length > 0 && fromB.length > 0);
    const all = new Set([...fromA, ...fromB]);
    assert.equal(all.size, builds);
    assert.equal(fromA.length + fromB.length, builds);
    assert.deepEqual(await b.countBuildsByStatus(), new Map([[0, builds]]));
    for (const id of fromB.slice(0, 20)) {
      assert.equal((await a.getBuild(id))?.worker, "wb");
    }
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("three worker threads and a reader share one file without 'database is locked' (C17)", async () => {
  const path = tempFile();
  const builds = 300;
  const store = openSqliteStore(path);
  const threads: globalThis.Worker[] = [];
  try {
    await seed(store, builds);
    const reports = Array.from({ length: 3 }, (_, i) => {
      const thread = new Worker(
        new URL("./sqlite_concurrency_worker.ts", import.meta.url),
        { type: "module" },
      );
      threads.push(thread);
      return new Promise<ConcurrencyReport>((resolve, reject) => {
        thread.onmessage = (event) => resolve(event.data);
        thread.onerror = (event) => {
          event.preventDefault();
          reject(new Error(event.message));
        };
        const message: ConcurrencyJob = { path, worker: `thread-${i}` };
        thread.postMessage(message);
      });
    });
    let finished = false;
    const all = Promise.all(reports).finally(() => finished = true);
    let reads = 0;
    while (!finished) {
      await store.queue({}, 50);
      await store.latestBuilds({}, 50);
      reads++;
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const results = await all;

    for (const report of results) assert.equal(report.error, null);
    const ids = results.flatMap((report) => report.ids);
    assert.equal(ids.length, builds);
    assert.equal(new Set(ids).size, builds);
    assert.equal(
      results.reduce((sum, report) => sum + report.changes, 0),
      builds * 3,
    );
    assert.deepEqual(await store.countBuildsByStatus(), new Map([[0, builds]]));
    for (const report of results) {
      for (const id of report.ids.slice(0, 10)) {
        const build = await store.getBuild(id);
        assert.equal(build?.worker, report.worker);
        assert.equal(build?.log, `/logs/${id}`);
      }
    }
    assert.ok(reads > 0);
  } finally {
    for (const thread of threads) thread.terminate();
    await store.close();
  }
});

Deno.test("registering a big evaluation lets the event loop run between its statements, and writes issued meanwhile join its commit", async () => {
  await withStore(tempFile(), async (store) => {
    await store.upsertSpecification(specification("guix"));
    const id = await store.addEvaluation("guix", [], 1);
    // Each job depends on the one before: every statement has work to do.
    const jobs = Array.from(
      { length: 20000 },
      (_, i) => job(`job-${i}`, i === 0 ? {} : { inputs: [`job-${i - 1}`] }),
    );
    let registered = false;
    const registering = store.registerBuilds(id, jobs, { priority: 9, now: 1 })
      .finally(() => registered = true);
    // A timer fires while the registration runs.
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(registered, false);
    const written = store.upsertSpecification(specification("other"));
    assert.deepEqual(await registering, {
      created: 20000,
      known: 0,
      blocked: 0,
    });
    await written;
    assert.notEqual(await store.getSpecification("other"), null);
    assert.deepEqual(
      await store.countBuildsByStatus(),
      new Map([[BuildStatus.scheduled, 20000]]),
    );
  });
});

Deno.test("closing the store while an evaluation registers lets the registration commit first; a batch waiting behind it then fails", async () => {
  const path = tempFile();
  const store = openSqliteStore(path);
  await store.upsertSpecification(specification("guix"));
  const id = await store.addEvaluation("guix", [], 1);
  const jobs = Array.from({ length: 20000 }, (_, i) => job(`job-${i}`));
  const registering = store.registerBuilds(id, jobs, { priority: 9, now: 1 });
  await new Promise((resolve) => setTimeout(resolve, 0));
  const waiting = store.batch((tx) => tx.touchWorker("w1", 2, 120));
  await store.close();
  assert.deepEqual(await registering, { created: 20000, known: 0, blocked: 0 });
  await assert.rejects(waiting, /not open/);
  await withStore(path, async (reopened) => {
    assert.deepEqual(
      await reopened.countBuildsByStatus(),
      new Map([[BuildStatus.scheduled, 20000]]),
    );
  });
});
