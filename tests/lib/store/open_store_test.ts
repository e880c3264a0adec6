import assert from "node:assert/strict";
import { openStore, storeBackend } from "../../../lib/store/open_store.ts";
import { specification } from "./store_contract.ts";

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

const url = Deno.env.get("LORICA_TEST_POSTGRES");

// Needs a PostgreSQL server named by LORICA_TEST_POSTGRES.
Deno.test({
  name: "openStore() opens PostgreSQL from a URL, with watchQueue",
  ignore: url === undefined,
  async fn() {
    const store = await openStore(url!);
    try {
      assert.equal(typeof store.watchQueue, "function");
      assert.ok(Array.isArray(await store.listWorkers()));
    } finally {
      await store.close();
    }
  },
});
