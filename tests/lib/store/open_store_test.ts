import assert from "node:assert/strict";
import {
  databaseFault,
  DatabaseNameError,
  openStore,
  redactDatabase,
  storeBackend,
} from "../../../lib/store/open_store.ts";
import { specification } from "./store_contract.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";

Deno.test("storeBackend() tells PostgreSQL connection strings from file names", () => {
  const cases: [string, "postgres" | "sqlite"][] = [
    ["postgres://ci@127.0.0.1/cuirass", "postgres"],
    ["postgresql://127.0.0.1:5433/farm", "postgres"],
    ["dbname=cuirass host=/var/run/postgresql", "postgres"],
    ["host=/tmp dbname=x", "postgres"],
    ["/var/lib/lorica/lorica.sqlite", "sqlite"],
    ["lorica.db", "sqlite"],
    [":memory:", "sqlite"],
    ["weird=name.sqlite", "sqlite"],
  ];
  for (const [database, backend] of cases) {
    assert.equal(storeBackend(database), backend, database);
  }
});

Deno.test("storeBackend() rejects a URL of another scheme instead of making it a file name", () => {
  for (const database of ["mysql://x/y", "sqlite:///tmp/x.db", "http://h/"]) {
    assert.throws(
      () => storeBackend(database),
      (error: unknown) =>
        error instanceof DatabaseNameError &&
        error.message.includes(JSON.stringify(database)) &&
        error.message.includes("unknown scheme"),
      database,
    );
  }
  assert.throws(
    () => storeBackend("mysql://root:hunter2@db/farm"),
    (error: unknown) =>
      error instanceof Error && !error.message.includes("hunter2"),
  );
});

Deno.test("storeBackend() rejects a conninfo string without dbname= instead of making it a file name", () => {
  for (
    const database of [
      "host=/var/run/postgresql",
      "host=127.0.0.1 port=5432 user=ci",
      " user=ci password=hunter2",
    ]
  ) {
    assert.throws(
      () => storeBackend(database),
      (error: unknown) =>
        error instanceof DatabaseNameError &&
        error.message.includes(redactDatabase(database)) &&
        error.message.includes("must name its database with dbname=") &&
        !error.message.includes("hunter2"),
      database,
    );
  }
});

Deno.test("redactDatabase() hides the password of URLs and conninfo strings", () => {
  const cases: [string, string][] = [
    [
      "postgres://postgres:secretpw@127.0.0.1:1/x",
      "postgres://postgres:***@127.0.0.1:1/x",
    ],
    ["postgresql://ci:s3cret@db/farm", "postgresql://ci:***@db/farm"],
    // Unescaped "@" and "/" in the password are hidden too.
    ["postgres://ci:p@ss/w?rd@db:5432/farm", "postgres://ci:***@db:5432/farm"],
    [
      "postgres://ci@db/farm?password=s3cret&sslmode=require",
      "postgres://ci@db/farm?password=***&sslmode=require",
    ],
    ["postgres://db:5432/farm", "postgres://db:5432/farm"],
    [
      "dbname=farm host=db password=s3cret user=ci",
      "dbname=farm host=db password=*** user=ci",
    ],
    [
      "dbname=farm password = 'two words' host=db",
      "dbname=farm password = *** host=db",
    ],
    ["dbname=farm PASSWORD=s3cret", "dbname=farm PASSWORD=***"],
    ["/var/lib/lorica/lorica.db", "/var/lib/lorica/lorica.db"],
  ];
  for (const [database, shown] of cases) {
    assert.equal(redactDatabase(database), JSON.stringify(shown), database);
  }
});

Deno.test("openStore() opens a SQLite file by name", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "lorica-open-store-" });
  try {
    const store = await openStore(`${dir}/farm.sqlite`);
    await store.upsertSpecification(specification("guix"));
    assert.equal(store.watchQueue, undefined);
    await store.close();
    assert.ok(Deno.statSync(`${dir}/farm.sqlite`).isFile);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

// Needs a PostgreSQL server named by LORICA_TEST_POSTGRES.
Deno.test({
  name:
    `openStore() opens PostgreSQL from a URL, with watchQueue${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    const store = await openStore(TEST_POSTGRES_URL!);
    try {
      assert.equal(typeof store.watchQueue, "function");
      assert.ok(Array.isArray(await store.listWorkers()));
    } finally {
      await store.close();
    }
  },
});

Deno.test("databaseFault() drops only a leading message part that names the database as shown", () => {
  const file = "/var/lib/lorica/farm.db";
  const url = "postgres://ci:hunter2@db/farm";
  const cases: [string, string, string][] = [
    [
      `Cannot open database "${file}": schema version 99 is newer than 11`,
      file,
      "schema version 99 is newer than 11",
    ],
    [
      `Cannot read database URL "postgres://ci:***@db/farm": not a well-formed URL`,
      url,
      "not a well-formed URL",
    ],
    // Another value, or the value elsewhere, is left as it is.
    [
      `Cannot open database "/other.db": busy`,
      file,
      `Cannot open database "/other.db": busy`,
    ],
    [
      `database "farm" does not exist`,
      url,
      `database "farm" does not exist`,
    ],
  ];
  for (const [message, database, expected] of cases) {
    assert.equal(databaseFault(message, database), expected, message);
  }
});
