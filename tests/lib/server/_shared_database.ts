// Two servers' stores on one database, for tests of servers sharing it
// (docs/deployment.md, section 5): two connections to one SQLite file, or
// to one schema of the PostgreSQL server LORICA_TEST_POSTGRES names.

import postgres from "postgres";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import type { Specification, Store } from "../../../lib/store/types.ts";
import { makeRoot } from "../../fake-guix/test_env.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";

/** Two servers' stores on one database, their state directories apart. */
export interface SharedDatabase {
  root: string;
  /** The first server's store and directory ("machine A"). */
  a: Store;
  /** The second server's ("machine B"). */
  b: Store;
  close(): Promise<void>;
}

export type Backend = "sqlite" | "postgres";

/** Each backend, ignored (its tests' names saying why) when unavailable. */
export const backends: { name: Backend; ignore: boolean; needs: string }[] = [
  { name: "sqlite", ignore: false, needs: "" },
  {
    name: "postgres",
    ignore: WITHOUT_POSTGRES,
    needs: NEEDS_POSTGRES,
  },
];

let schemas = 0;

/**
 * A fresh database on `backend` that knows `spec`, below a new root; on
 * PostgreSQL a schema named after `prefix`, dropped by `close()`.
 */
export async function sharedDatabase(
  backend: Backend,
  spec: Specification,
  prefix: string,
): Promise<SharedDatabase> {
  const root = await makeRoot();
  let a: Store;
  let b: Store;
  let drop = () => Promise.resolve();
  if (backend === "sqlite") {
    a = openSqliteStore(`${root}/lorica.db`);
    b = openSqliteStore(`${root}/lorica.db`);
  } else {
    const schema = `${prefix}_${Deno.pid}_${++schemas}`;
    a = await openPostgresStore(TEST_POSTGRES_URL!, { schema });
    b = await openPostgresStore(TEST_POSTGRES_URL!, { schema });
    drop = async () => {
      const sql = postgres(TEST_POSTGRES_URL!, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await sql.end({ timeout: 1 });
      }
    };
  }
  await a.upsertSpecification(spec);
  return {
    root,
    a,
    b,
    async close() {
      await a.close();
      await b.close();
      await drop();
      await Deno.remove(root, { recursive: true });
    },
  };
}
