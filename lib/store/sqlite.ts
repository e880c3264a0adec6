// The Store on SQLite, through Deno's built-in synchronous `node:sqlite`.
//
// Store procedures run synchronously here: a write transaction begins,
// runs every statement and commits within one tick, so that concurrent
// calls on one connection never interleave inside a transaction. Two kinds
// of transaction span ticks instead, holding the connection while other
// writes queue: batches, and long writes (registering an evaluation),
// which let the event loop run between their statements.

import { DatabaseSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import { StoreError } from "./types.ts";
import { MIGRATIONS, SCHEMA_SQL, SCHEMA_VERSION } from "./sqlite_schema.ts";
import { sqliteDialect } from "./sql_query.ts";
import { createSqlStore } from "./sql_store.ts";
import { startCheckpointer } from "./sqlite_checkpointer.ts";
import { startScanner } from "./sqlite_scanner.ts";
import { scanProcedure } from "./sql_scans.ts";
import { runSteps, runStepsSliced, statementCache } from "./sqlite_steps.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import type { Execute, ExecuteMode, SqlDriver } from "./sql_store.ts";
import type { Store } from "./types.ts";
import type { Checkpointer } from "./sqlite_checkpointer.ts";
import type { Logger } from "../log.ts";

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** How long a write waits for another connection's lock; default 5000. */
  busyTimeoutMs?: number;
  /**
   * Checkpoint the write-ahead log on a thread of its own (see
   * sqlite_checkpointer.ts), for a long-running server; default false.
   */
  backgroundCheckpoints?: boolean;
  /**
   * Run the reads of many rows (counts by status or system, an evaluation's
   * jobs: sql_scans.ts) on a read-only connection on a thread of its own
   * (see sqlite_scanner.ts), for a long-running server; default false.
   */
  backgroundScans?: boolean;
  /** Where failures of the background threads are logged. */
  logger?: Logger;
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * The longest a long write (registering an evaluation: seconds for 50,000
 * jobs at a million builds) holds the event loop at a time, between two
 * of its statements: workers, pages and logs are served in between.
 */
const LONG_WRITE_SLICE_MS = 20;

/**
 * Opens (creating or upgrading the schema) a SQLite database as a Store, in
 * WAL mode with a busy timeout and foreign keys on.
 * @throws {StoreError} when the file's schema is newer than this program's.
 */
export function openSqliteStore(
  path: string,
  options: SqliteStoreOptions = {},
): Store {
  const {
    busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS,
    backgroundCheckpoints = false,
    backgroundScans = false,
    logger,
  } = options;

  const db = new DatabaseSync(path);
  const busyMs = Math.max(0, Math.floor(busyTimeoutMs));
  let journalMode: unknown;
  try {
    db.exec(`PRAGMA busy_timeout = ${busyMs}`);
    // "memory" for an in-memory database, whatever its name.
    journalMode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode;
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
  // The threads need a log: without one (an in-memory database, a file
  // that refused WAL), there is nothing to checkpoint, and the scan thread
  // would see another database or hold up the writer's commits.
  const wal = journalMode === "wal";
  const checkpointer = backgroundCheckpoints && wal
    ? startCheckpointer(path, { logger })
    : undefined;
  const driver = namingDatabase(sqliteDriver(db, checkpointer), path);
  if (!backgroundScans || !wal) return createSqlStore(driver);
  const scanner = startScanner(path, {
    busyTimeoutMs: busyMs,
    logger,
    runHere: (name, args) => driver.execute("read", scanProcedure(name, args)),
  });
  return createSqlStore({
    ...driver,
    scan: scanner.scan,
    async close() {
      // Before the store's connection, on which waiting scans may still run.
      await scanner.stop();
      await driver.close();
    },
  });
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

/**
 * SQLite's primary result codes that are about the file rather than the
 * statement: read-only, I/O error, corrupt, full, cannot open, not a
 * database. Its messages ("database or disk is full") do not say which.
 */
const FILE_ERROR_CODES: ReadonlySet<number> = new Set([8, 10, 11, 13, 14, 26]);

/**
 * `driver` whose failures about the database file name it: the operator
 * of a farm whose logs, state and database sit on different disks learns
 * which one is full. The SQLite error stays as the cause.
 */
function namingDatabase(driver: SqlDriver, path: string): SqlDriver {
  const named = (error: unknown) => {
    const code = (error as { errcode?: unknown })?.errcode;
    if (typeof code !== "number" || !FILE_ERROR_CODES.has(code & 0xff)) {
      return error;
    }
    return new Error(
      `Cannot use database ${JSON.stringify(path)}: ${
        (error as Error).message
      }`,
      { cause: error },
    );
  };
  return {
    ...driver,
    execute: (mode, procedure) =>
      driver.execute(mode, procedure).catch((error) => {
        throw named(error);
      }),
    batch: (work, options) =>
      driver.batch(work, options).catch((error) => {
        throw named(error);
      }),
  };
}

/** A write waiting for the batch that holds the transaction. */
interface QueuedWrite {
  procedure: (d: Dialect) => Step<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

type Outcome = { value: unknown } | { error: unknown };

function sqliteDriver(
  db: DatabaseSync,
  checkpointer?: Checkpointer,
): SqlDriver {
  const { prepare: stmt, clear: clearStatements } = statementCache(db);
  const runSync = <T>(procedure: (d: Dialect) => Step<T>): T =>
    runSteps(stmt, procedure);

  // Transaction control through prepared statements: `exec` would parse
  // the text again on every call, thousands of times a second.
  const control = (sql: string) => () => void stmt(sql).run();
  // Writes take the write lock up front (BEGIN IMMEDIATE): a deferred
  // transaction upgrading to a writer fails with SQLITE_BUSY at once
  // instead of waiting out the busy timeout.
  const begin = control("BEGIN IMMEDIATE");
  const commit = control("COMMIT");
  const rollback = () => {
    // A closed connection has rolled back already.
    if (db.isOpen && db.isTransaction) db.exec("ROLLBACK");
  };
  const openSavepoint = control("SAVEPOINT batch_write");
  const releaseSavepoint = control("RELEASE batch_write");
  const undoSavepoint = control("ROLLBACK TO batch_write");

  /** One write inside an open transaction: all or nothing on its own. */
  function savepoint<T>(procedure: (d: Dialect) => Step<T>): T {
    // Once an error ended the transaction (a full disk), a SAVEPOINT would
    // open a transaction of its own, which its RELEASE would commit alone.
    if (!db.isTransaction) {
      throw new StoreError(
        "Cannot write: an earlier error ended the transaction",
        "transaction-ended",
        null,
      );
    }
    openSavepoint();
    try {
      const result = runSync(procedure);
      releaseSavepoint();
      return result;
    } catch (error) {
      // Some errors (a full disk) end the whole transaction by themselves.
      if (db.isTransaction) {
        undoSavepoint();
        releaseSavepoint();
      }
      throw error;
    }
  }

  // Writes outside a batch queue, and run together in one transaction
  // (each in a savepoint) once the task that issued them is done. While a
  // batch or a long write holds the connection's transaction, they join it
  // once its work is done, so that they share its commit (and fail with
  // it); those still queued when its work failed run together in a
  // transaction of their own.
  let held = false;
  const queuedWrites: QueuedWrite[] = [];
  /** Batches and long writes waiting for the transaction to be free. */
  const waitingToHold: (() => void)[] = [];

  /** Runs `writes` in the open transaction, each in a savepoint. */
  function runEach(writes: QueuedWrite[]): Outcome[] {
    return writes.map((write) => {
      try {
        return { value: savepoint(write.procedure) };
      } catch (error) {
        return { error };
      }
    });
  }

  function settle(writes: QueuedWrite[], outcomes: Outcome[]): void {
    writes.forEach((write, i) => {
      const outcome = outcomes[i];
      if ("error" in outcome) write.reject(outcome.error);
      else write.resolve(outcome.value);
    });
  }

  function runQueuedWrites(): void {
    const writes = queuedWrites.splice(0);
    if (writes.length === 0) return;
    let outcomes: Outcome[];
    try {
      begin();
      // All at once first, without a savepoint each (inside a savepoint,
      // SQLite copies each page it changes first: a big registration took
      // 40% longer). Should one fail, nothing of the attempt is kept and
      // each runs again in a savepoint of its own, so that it alone fails.
      const attempt = writes.length === 1
        ? [{ value: runSync(writes[0].procedure) }]
        : runTogether(writes);
      if (attempt !== null) outcomes = attempt;
      else {
        rollback();
        begin();
        outcomes = runEach(writes);
      }
      commit();
    } catch (error) {
      rollback();
      for (const write of writes) write.reject(error);
      return;
    }
    settle(writes, outcomes);
  }

  /** Runs `writes` in the open transaction; null as soon as one fails. */
  function runTogether(writes: QueuedWrite[]): Outcome[] | null {
    const outcomes: Outcome[] = [];
    for (const write of writes) {
      try {
        outcomes.push({ value: runSync(write.procedure) });
      } catch {
        return null;
      }
    }
    return outcomes;
  }

  /**
   * Runs `work` in a transaction that spans ticks (a batch, a long write):
   * meanwhile other batches wait and writes queue, then join its commit.
   */
  async function holdTransaction<T>(work: () => Promise<T>): Promise<T> {
    while (held) {
      await new Promise<void>((resolve) => waitingToHold.push(resolve));
    }
    held = true;
    let joined: QueuedWrite[] = [];
    try {
      begin();
      const result = await work();
      joined = queuedWrites.splice(0);
      const outcomes = runEach(joined);
      commit();
      settle(joined, outcomes);
      return result;
    } catch (error) {
      rollback();
      for (const write of joined) write.reject(error);
      throw error;
    } finally {
      held = false;
      runQueuedWrites();
      waitingToHold.shift()?.();
    }
  }

  return {
    dialect: sqliteDialect,
    execute<T>(mode: ExecuteMode, procedure: (d: Dialect) => Step<T>) {
      if (mode === "long") {
        return holdTransaction(() =>
          runStepsSliced(stmt, procedure, LONG_WRITE_SLICE_MS)
        );
      }
      if (mode !== "read") {
        // Writes issued together (fetches that end at once, a turn's
        // after-commit actions) share one commit: they run once the I/O
        // already waiting is handled, not as a microtask, or join the batch
        // that holds the transaction. A batch beginning meanwhile (a
        // dispatcher turn) takes them into its commit; with a microtask, a
        // dispatching server's completions, a task each, made a commit of
        // their own per task (bench: 4% of the dispatch rate).
        // An immediate, not a timer: past five nested timers (a loop of
        // awaited writes) each would wait at least a few ms.
        if (queuedWrites.length === 0 && !held) {
          setImmediate(() => {
            if (!held) runQueuedWrites();
          });
        }
        return new Promise<T>((resolve, reject) =>
          queuedWrites.push({
            procedure,
            resolve: resolve as (value: unknown) => void,
            reject,
          })
        );
      }
      try {
        return Promise.resolve(runSync(procedure));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    batch(work, { savepoints }) {
      const execute: Execute = (mode, procedure) => {
        try {
          return Promise.resolve(
            mode !== "read" && savepoints
              ? savepoint(procedure)
              : runSync(procedure),
          );
        } catch (error) {
          return Promise.reject(error);
        }
      };
      return holdTransaction(() => work(execute));
    },
    async close() {
      // A registration or batch under way commits first: it would be
      // rolled back and lost. (Those still waiting then fail: closed.)
      if (held) {
        await new Promise<void>((resolve) => waitingToHold.unshift(resolve));
      }
      // So do writes issued before the close and still waiting for their
      // turn: they were accepted, and would otherwise fail as closed.
      runQueuedWrites();
      // The checkpoint thread's connection first: the last connection to
      // close checkpoints the whole log and removes it.
      await checkpointer?.stop();
      clearStatements();
      if (db.isOpen) db.close();
      for (const wake of waitingToHold.splice(0)) wake();
    },
  };
}
