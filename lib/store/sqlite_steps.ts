// Store procedures on a node:sqlite connection, through statements prepared
// once: each query a procedure yields runs at once, on the same tick, or,
// for a long write, with pauses between queries for the event loop.

import { sqliteDialect } from "./sql_query.ts";
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import type { Dialect, Query, QueryResult, Row, Step } from "./sql_query.ts";

/** Prepares each SQL text once per connection. */
export type Prepare = (sql: string) => StatementSync;

/** A {@link Prepare} over `db`, and a way to forget what it prepared. */
export function statementCache(
  db: DatabaseSync,
): { prepare: Prepare; clear(): void } {
  const statements = new Map<string, StatementSync>();
  return {
    prepare(sql) {
      let statement = statements.get(sql);
      if (statement === undefined) {
        statement = db.prepare(sql);
        statements.set(sql, statement);
      }
      return statement;
    },
    clear: () => statements.clear(),
  };
}

/** Runs one query of a procedure. */
function runQuery(prepare: Prepare, query: Query): QueryResult {
  const statement = prepare(query.sql);
  const values = query.params as SQLInputValue[];
  if (query.kind === "rows") {
    const rows = statement.all(...values) as Row[];
    return { rows, changes: rows.length };
  }
  return { rows: [], changes: Number(statement.run(...values).changes) };
}

/** Runs `procedure` to its end, synchronously. */
export function runSteps<T>(
  prepare: Prepare,
  procedure: (d: Dialect) => Step<T>,
): T {
  const steps = procedure(sqliteDialect);
  let next = steps.next();
  while (!next.done) next = steps.next(runQuery(prepare, next.value));
  return next.value;
}

/**
 * Runs `procedure` to its end, letting the event loop run between two of
 * its statements each time it has run for `sliceMs`. (The monotonic clock
 * only paces these pauses; nothing it measures is kept.)
 */
export async function runStepsSliced<T>(
  prepare: Prepare,
  procedure: (d: Dialect) => Step<T>,
  sliceMs: number,
): Promise<T> {
  const steps = procedure(sqliteDialect);
  let sliceStart = performance.now();
  let next = steps.next();
  while (!next.done) {
    next = steps.next(runQuery(prepare, next.value));
    if (performance.now() - sliceStart >= sliceMs) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      sliceStart = performance.now();
    }
  }
  return next.value;
}
