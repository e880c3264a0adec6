// Two stores on one fresh PostgreSQL schema, as two processes sharing a
// database, for the tests of races between store procedures: with a
// connection of the test's own on the schema to watch them wait
// (_postgres_gates.ts), and the schema dropped afterwards.

import postgres from "postgres";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import type { Store } from "../../../lib/store/types.ts";
import { specification } from "./store_contract.ts";
import { TEST_POSTGRES_URL } from "../../_test_postgres.ts";

/** Two stores on one schema, and the test's own connection to it. */
export interface SharedSchema {
  /** The server's URL, for the gates' connections. */
  url: string;
  schema: string;
  /** Both know specification "guix". */
  stores: [Store, Store];
  /** On the schema (its search_path). */
  sql: postgres.Sql;
}

/** Options of {@link withSharedSchema}. */
export interface WithSharedSchemaOptions {
  /**
   * The most connections `sql` opens at once: one more for each LISTEN
   * the test holds while it queries.
   * @default {1}
   */
  connections?: number;
}

const run = `${Date.now().toString(36)}_${Deno.pid}`;
let schemas = 0;

/**
 * Runs `body` on a fresh schema named after `prefix`; closes the stores
 * and drops the schema whatever happens.
 * @throws {Error} when LORICA_TEST_POSTGRES names no server
 */
export async function withSharedSchema(
  prefix: string,
  body: (shared: SharedSchema) => Promise<void>,
  options: WithSharedSchemaOptions = {},
): Promise<void> {
  const { connections = 1 } = options;
  const url = TEST_POSTGRES_URL;
  if (url === undefined) {
    throw new Error(
      `Cannot open schema "${prefix}": LORICA_TEST_POSTGRES names no PostgreSQL server`,
    );
  }

  const schema = `${prefix}_${run}_${++schemas}`;
  const opened: Store[] = [];
  const sql = postgres(url, {
    max: connections,
    onnotice: () => {},
    connection: { search_path: schema },
  });
  try {
    opened.push(await openPostgresStore(url, { schema }));
    opened.push(await openPostgresStore(url, { schema }));
    const stores: [Store, Store] = [opened[0], opened[1]];
    await stores[0].upsertSpecification(specification("guix"));
    await body({ url, schema, stores, sql });
  } finally {
    for (const store of opened) await store.close();
    await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await sql.end({ timeout: 1 });
  }
}
