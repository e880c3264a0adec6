// The Store on SQLite, through Deno's built-in synchronous `node:sqlite`.
//
// Store procedures run synchronously here: a write transaction begins,
// runs every statement and commits within one tick, so that concurrent
// calls on one connection never interleave inside a transaction.

import { DatabaseSync } from "node:sqlite";
import { StoreError } from "./types.ts";
import { MIGRATIONS, SCHEMA_SQL, SCHEMA_VERSION } from "./sqlite_schema.ts";
import { sqliteDialect } from "./sql_query.ts";
import { createSqlStore } from "./sql_store.ts";
import type { SQLInputValue, StatementSync } from "node:sqlite";
import type { Dialect, QueryResult, Row, Step } from "./sql_query.ts";
import type { SqlDriver } from "./sql_store.ts";
import type { Store } from "./types.ts";

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** How long a write waits for another connection's lock; default 5000. */
  busyTimeoutMs?: number;
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * Opens (creating or upgrading the schema) a SQLite database as a Store, in
 * WAL mode with a busy timeout and foreign keys on.
 * @throws {StoreError} when the file's schema is newer than this program's.
 */
export function openSqliteStore(
  path: string,
  options: SqliteStoreOptions = {},
): Store {
  const { busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS } = options;

  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA foreign_keys = ON");
    // A larger page cache (64 MiB) and rarer checkpoints: at a million
    // builds, checkpoints (each an fsync) otherwise dominate every commit.
    db.exec("PRAGMA cache_size = -65536");
    db.exec("PRAGMA wal_autocheckpoint = 10000");
    migrate(db, path);
  } catch (error) {
    db.close();
    throw error;
  }
  return createSqlStore(sqliteDriver(db));
}

/** Creates the schema of a fresh database, or upgrades an older one. */
function migrate(db: DatabaseSync, path: string): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    const hasVersionTable = db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'SchemaVersion'",
    ).get() !== undefined;
    if (!hasVersionTable) {
      db.exec(SCHEMA_SQL);
      db.prepare("INSERT INTO SchemaVersion (version) VALUES (?)").run(
        SCHEMA_VERSION,
      );
    } else {
      const row = db.prepare("SELECT max(version) AS v FROM SchemaVersion")
        .get() as Row | undefined;
      const version = Number(row?.v ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new StoreError(
          `Cannot open database ${
            JSON.stringify(path)
          }: schema version ${version} is newer than ${SCHEMA_VERSION}`,
          "schema-too-new",
          version,
        );
      }
      for (let next = version + 1; next <= SCHEMA_VERSION; next++) {
        db.exec(MIGRATIONS[next]);
      }
      if (version < SCHEMA_VERSION) {
        db.prepare("UPDATE SchemaVersion SET version = ?").run(SCHEMA_VERSION);
      }
    }
    db.exec("COMMIT");
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

function sqliteDriver(db: DatabaseSync): SqlDriver {
  const statements = new Map<string, StatementSync>();

  function stmt(sql: string): StatementSync {
    let statement = statements.get(sql);
    if (statement === undefined) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  }

  function runSync<T>(procedure: (d: Dialect) => Step<T>): T {
    const steps = procedure(sqliteDialect);
    let next = steps.next();
    while (!next.done) {
      const { sql, params, kind } = next.value;
      const statement = stmt(sql);
      const values = params as SQLInputValue[];
      let result: QueryResult;
      if (kind === "rows") {
        const rows = statement.all(...values) as Row[];
        result = { rows, changes: rows.length };
      } else {
        result = {
          rows: [],
          changes: Number(statement.run(...values).changes),
        };
      }
      next = steps.next(result);
    }
    return next.value;
  }

  // Writes take the write lock up front (BEGIN IMMEDIATE): a deferred
  // transaction upgrading to a writer fails with SQLITE_BUSY at once
  // instead of waiting out the busy timeout.
  function transaction<T>(procedure: (d: Dialect) => Step<T>): T {
    db.exec("BEGIN IMMEDIATE");
    try {
      const result = runSync(procedure);
      db.exec("COMMIT");
      return result;
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    }
  }

  return {
    dialect: sqliteDialect,
    execute(mode, procedure) {
      try {
        return Promise.resolve(
          mode === "write" ? transaction(procedure) : runSync(procedure),
        );
      } catch (error) {
        return Promise.reject(error);
      }
    },
    close() {
      statements.clear();
      if (db.isOpen) db.close();
      return Promise.resolve();
    },
  };
}
