// The Store on PostgreSQL through `npm:postgres`, for several server
// processes sharing one database.
//
// Store procedures run in transactions on a connection pool. Dispatch takes
// candidates with FOR UPDATE SKIP LOCKED, so two processes never hand out
// one build. Procedures lock builds in id order (sql_build_locks.ts), so
// they do not deadlock with one another. A deadlock still possible (in a
// batch of several procedures, or over a row a procedure could not
// foresee) or a serialization failure retries the transaction, outside a
// batch: a batch's caller runs it again whole, its own part with it (see
// serveTurn in lib/server/turn.ts).
// Transactions that add dispatchable builds send a NOTIFY, which
// `watchQueue` turns into callbacks.

import postgres from "postgres";
import { StoreError } from "./types.ts";
import { redactDatabase } from "./database_name.ts";
import { isTransactionConflict } from "./conflict.ts";
import { postgresDialect } from "./sql_query.ts";
import { createSqlStore } from "./sql_store.ts";
import {
  POSTGRES_MIGRATIONS,
  POSTGRES_SCHEMA_SQL,
  POSTGRES_SCHEMA_VERSION,
} from "./postgres_schema.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import type { Execute, ExecuteMode, SqlDriver } from "./sql_store.ts";
import type { Store } from "./types.ts";

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** A schema of its own (created if missing), e.g. one per test. */
  schema?: string;
  /** Pool size; default 8, as Cuirass. */
  maxConnections?: number;
  /** Polling period of {@link Store.watchQueue}'s safety net; default 5000. */
  queuePollMs?: number;
  /**
   * Seconds a query may wait for a connection and run, after which it is
   * canceled; default {@link DEFAULT_QUERY_TIMEOUT_SECONDS}, 0 for no limit.
   * Schema migrations at open have none.
   */
  queryTimeoutSeconds?: number;
}

/** Where to connect, from a URL or a conninfo string. */
export interface PostgresTarget {
  host: string;
  port: number;
  database: string;
  user?: string;
  password?: string;
}

/** A connection string {@link openPostgresStore} cannot read. */
export class PostgresTargetError extends Error {
  constructor(message: string, readonly value: string) {
    super(message);
    this.name = "PostgresTargetError";
  }
}

/** Default of {@link PostgresStoreOptions.queryTimeoutSeconds}. */
export const DEFAULT_QUERY_TIMEOUT_SECONDS = 60;

const MAX_ATTEMPTS = 8;
/** Idle seconds before a connection's first TCP keepalive probe. */
const KEEPALIVE_SECONDS = 60;
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Reads a `postgres://` URL or a Cuirass-style conninfo string
 * (`dbname=cuirass host=/var/run/postgresql`); the host defaults to the
 * local socket directory, as Cuirass's does.
 * @throws {PostgresTargetError} on a malformed string.
 */
export function parsePostgresTarget(database: string): PostgresTarget {
  if (/^postgres(ql)?:\/\//.test(database)) {
    let url: URL;
    try {
      url = new URL(database);
    } catch {
      throw new PostgresTargetError(
        `Cannot read database URL ${
          redactDatabase(database)
        }: not a well-formed URL`,
        redactDatabase(database),
      );
    }
    // The query may carry any of the fields, as libpq reads such URLs:
    // `postgres:///lorica?host=/run/postgresql&user=ci` is the only way to
    // name a role beside a socket directory (a URL with a user and no host
    // is not well-formed).
    const query = url.searchParams;
    refuseEncryption(database, query.get("sslmode") ?? undefined);
    return {
      host: decodeURIComponent(url.hostname) || query.get("host") ||
        "/var/run/postgresql",
      port: portOf(database, url.port || query.get("port") || undefined),
      database: decodeURIComponent(url.pathname.slice(1)) ||
        query.get("dbname") || "cuirass",
      user: url.username
        ? decodeURIComponent(url.username)
        : query.get("user") ?? undefined,
      password: url.password
        ? decodeURIComponent(url.password)
        : query.get("password") ?? undefined,
    };
  }
  const fields = new Map<string, string>();
  // A value starting with a quote is a quoted one, as libpq reads it: one
  // whose quote is never closed is refused, not taken quote and all (with
  // the following keys as though they had been read).
  const pattern = /\s*([a-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^'\s]\S*))\s*/gy;
  let match: RegExpExecArray | null;
  let end = 0;
  while ((match = pattern.exec(database)) !== null) {
    fields.set(match[1], match[2]?.replace(/\\(.)/g, "$1") ?? match[3]);
    end = pattern.lastIndex;
  }
  if (end !== database.length || fields.size === 0) {
    throw new PostgresTargetError(
      `Cannot read conninfo ${redactDatabase(database)}: ${
        unreadConninfo(database.slice(end))
      }`,
      redactDatabase(database),
    );
  }
  refuseEncryption(database, fields.get("sslmode"));
  return {
    host: fields.get("host") ?? "/var/run/postgresql",
    port: portOf(database, fields.get("port")),
    database: fields.get("dbname") ?? "cuirass",
    user: fields.get("user"),
    password: fields.get("password"),
  };
}

/**
 * The port of a connection string, 5432 when `text` is undefined.
 * @throws {PostgresTargetError} naming it when it is no port number.
 */
function portOf(database: string, text: string | undefined): number {
  const port = Number(text ?? 5432);
  if (!/^\d+$/.test(text ?? "5432") || port <= 0 || port > 65535) {
    throw new PostgresTargetError(
      `Cannot read ${
        /^postgres(ql)?:\/\//.test(database) ? "database URL" : "conninfo"
      } ${redactDatabase(database)}: port ${
        JSON.stringify(text)
      } is not a port number`,
      redactDatabase(database),
    );
  }
  return port;
}

/** libpq's sslmode values that ask for an encrypted connection. */
const ENCRYPTED_MODES = new Set(["require", "verify-ca", "verify-full"]);

/**
 * Refuses an `sslmode` asking for encryption, which Lorica's connections
 * do not have: ignored, it would send what the operator meant to protect
 * (a password, the builds) in clear.
 * @throws {PostgresTargetError} naming the mode.
 */
function refuseEncryption(database: string, sslmode: string | undefined) {
  if (sslmode === undefined || !ENCRYPTED_MODES.has(sslmode)) return;
  throw new PostgresTargetError(
    `Cannot read ${
      /^postgres(ql)?:\/\//.test(database) ? "database URL" : "conninfo"
    } ${redactDatabase(database)}: sslmode ${
      JSON.stringify(sslmode)
    } asks for TLS, which Lorica does not use (connect through the Unix socket, or over a trusted network)`,
    redactDatabase(database),
  );
}

/**
 * Connects to PostgreSQL and returns a Store, creating or upgrading the
 * schema (under an advisory lock, so that processes starting together
 * migrate once).
 * @throws {PostgresTargetError} on a malformed connection string.
 * @throws {StoreError} when the database's schema is newer than this program's.
 */
export async function openPostgresStore(
  database: string,
  options: PostgresStoreOptions = {},
): Promise<Store> {
  const target = parsePostgresTarget(database);
  const schema = options.schema;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new RangeError(
      `Cannot open schema ${JSON.stringify(schema)}: not a plain identifier`,
    );
  }
  const connect = (queryTimeoutSeconds: number, max: number) =>
    postgres({
      host: target.host,
      port: target.port,
      database: target.database,
      user: target.user,
      password: target.password,
      max,
      // A host that stops answering (a partition dropping packets, no
      // reset) would hold a query for as long as TCP retries, many
      // minutes, and statement_timeout cannot help, as the server never
      // hears of it. The deadline cancels the query; a cancel that gets
      // no answer within cancel_timeout (5 s) closes its connection, and
      // the query fails as CANCEL_UNANSWERED (see unavailable.ts).
      query_timeout: queryTimeoutSeconds,
      // Idle connections, LISTEN's among them, are probed: one lost in a
      // partition is noticed even though no query waits on it.
      keep_alive: KEEPALIVE_SECONDS,
      onnotice: () => {},
      connection: {
        application_name: "lorica",
        ...(schema === undefined ? {} : { search_path: schema }),
      },
    });
  // Its own connection, without deadline: a migration of a large farm's
  // tables, or a wait for another process migrating, may take minutes.
  const setup = connect(0, 1);
  try {
    if (schema !== undefined) {
      await setup.unsafe(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    }
    await migrate(setup, database);
  } finally {
    await setup.end({ timeout: 1 });
  }
  const queryTimeoutSeconds = options.queryTimeoutSeconds ??
    DEFAULT_QUERY_TIMEOUT_SECONDS;
  const sql = connect(queryTimeoutSeconds, options.maxConnections ?? 8);
  const suffix = schema === undefined ? "" : `_${schema}`;
  const channel = `lorica_queue${suffix}`;
  const heldChannel = `lorica_held${suffix}`;
  const dialect = postgresDialect(channel, heldChannel);
  const store = createSqlStore(
    postgresDriver(sql, dialect, queryTimeoutSeconds),
  );
  const pollMs = options.queuePollMs ?? 5000;
  store.watchQueue = (onChange, signal) =>
    watchChannel(sql, channel, pollMs, onChange, signal);
  // Its callers look every few seconds anyway: no poll of its own.
  store.watchHoldings = (onChange, signal) =>
    watchChannel(sql, heldChannel, null, onChange, signal);
  return store;
}

async function migrate(sql: postgres.Sql, database: string): Promise<void> {
  await sql.begin(async (tx) => {
    await tx.unsafe("SELECT pg_advisory_xact_lock(7419001)");
    const [table] = await tx.unsafe(
      "SELECT to_regclass('schemaversion') IS NOT NULL AS present",
    );
    if (!table.present) {
      await tx.unsafe(POSTGRES_SCHEMA_SQL);
      await tx.unsafe("INSERT INTO SchemaVersion (version) VALUES ($1)", [
        POSTGRES_SCHEMA_VERSION,
      ]);
      return;
    }
    const [row] = await tx.unsafe(
      "SELECT max(version) AS v FROM SchemaVersion",
    );
    const version = Number(row?.v ?? 0);
    // Cuirass's tables have the same names, SchemaVersion included (at 15
    // in Cuirass 1.2): without this, its database would read as a newer
    // Lorica's, and one of an older Cuirass would get Lorica's upgrades.
    // Every Lorica schema from version 2 on has DispatcherStops.
    const [marker] = await tx.unsafe(
      "SELECT to_regclass('dispatcherstops') IS NOT NULL AS present",
    );
    if (version >= 2 && !marker.present) {
      throw new StoreError(
        `Cannot open database ${
          redactDatabase(database)
        }: its tables are not Lorica's (schema version ${version} without Lorica's DispatcherStops table; Cuirass's database?): give Lorica a database of its own`,
        "foreign-schema",
        version,
      );
    }
    if (version > POSTGRES_SCHEMA_VERSION) {
      throw new StoreError(
        `Cannot open database ${
          redactDatabase(database)
        }: schema version ${version} is newer than ${POSTGRES_SCHEMA_VERSION}`,
        "schema-too-new",
        version,
      );
    }
    for (let next = version + 1; next <= POSTGRES_SCHEMA_VERSION; next++) {
      await tx.unsafe(POSTGRES_MIGRATIONS[next]);
    }
    if (version < POSTGRES_SCHEMA_VERSION) {
      await tx.unsafe("UPDATE SchemaVersion SET version = $1", [
        POSTGRES_SCHEMA_VERSION,
      ]);
    }
  });
}

/** `?` placeholders numbered as PostgreSQL wants them. */
function numbered(text: string): string {
  let index = 0;
  return text.replace(/\?/g, () => `$${++index}`);
}

function postgresDriver(
  sql: postgres.Sql,
  dialect: Dialect,
  queryTimeoutSeconds: number,
): SqlDriver {
  const texts = new Map<string, string>();
  const explained = (error: unknown) =>
    explainTimeout(error, queryTimeoutSeconds);

  async function runAsync<T>(
    connection: postgres.Sql | postgres.TransactionSql,
    procedure: (d: Dialect) => Step<T>,
  ): Promise<T> {
    const steps = procedure(dialect);
    let next = steps.next();
    while (!next.done) {
      const { sql: text, params } = next.value;
      let converted = texts.get(text);
      if (converted === undefined) {
        converted = numbered(text);
        texts.set(text, converted);
      }
      let result;
      try {
        result = await connection.unsafe(
          converted,
          params as postgres.ParameterOrJSON<never>[],
          { prepare: true },
        );
      } catch (error) {
        throw explained(error);
      }
      next = steps.next({
        rows: result as unknown as Row[],
        changes: result.count ?? result.length,
      });
    }
    return next.value;
  }

  /**
   * Runs `attempt` again after a deadlock or a serialization failure: the
   * database undid all of it.
   */
  async function retried<T>(attempt: () => Promise<T>): Promise<T> {
    for (let count = 1;; count++) {
      try {
        return await attempt();
      } catch (error) {
        if (count >= MAX_ATTEMPTS || !isTransactionConflict(error)) {
          throw error;
        }
      }
    }
  }

  /**
   * One transaction on one connection for a whole batch. Its steps run one
   * after the other (a connection runs one query at a time); each write in
   * a savepoint, with `savepoints`. Any other step that fails aborts the
   * transaction, so the batch then fails as a whole rather than committing
   * a part.
   */
  function batch<T>(
    work: (execute: Execute) => Promise<T>,
    { savepoints }: { savepoints: boolean },
  ): Promise<T> {
    return inTransaction((tx) => transactionBatch(tx, work, savepoints));
  }

  /** Runs `work` in a transaction, its deadline told as the option. */
  async function inTransaction<T>(
    work: (tx: postgres.TransactionSql) => Promise<T>,
  ): Promise<T> {
    try {
      return await sql.begin(work) as T;
    } catch (error) {
      throw explained(error);
    }
  }

  async function transactionBatch<T>(
    tx: postgres.TransactionSql,
    work: (execute: Execute) => Promise<T>,
    savepoints: boolean,
  ): Promise<T> {
    let aborted: unknown = null;
    let tail: Promise<unknown> = Promise.resolve();
    const step = <R>(
      mode: ExecuteMode,
      procedure: (d: Dialect) => Step<R>,
    ) => {
      if (aborted !== null) return Promise.reject(aborted);
      if (mode !== "read" && savepoints) {
        return tx.savepoint((inner) => runAsync(inner, procedure)) as Promise<
          R
        >;
      }
      return runAsync(tx, procedure).catch((error) => {
        aborted ??= error;
        throw error;
      });
    };
    const execute: Execute = (mode, procedure) => {
      const result = tail.then(() => step(mode, procedure));
      tail = result.catch(() => {});
      return result;
    };
    const result = await work(execute);
    await tail;
    if (aborted !== null) throw aborted;
    return result;
  }

  return {
    dialect,
    execute<T>(mode: ExecuteMode, procedure: (d: Dialect) => Step<T>) {
      switch (mode) {
        case "read":
          return runAsync(sql, procedure);
        case "statement":
          return retried(() => runAsync(sql, procedure));
        case "write":
        case "long":
          return retried(() => inTransaction((tx) => runAsync(tx, procedure)));
      }
    },
    batch,
    async close() {
      await sql.end({ timeout: 5 });
    },
  };
}

/**
 * LISTEN on `channel` (postgres.js re-listens after a lost connection and
 * then calls `onlisten`, where a change may have been missed), plus a poll
 * every `pollMs` (unless null) in case a notification never arrives (case
 * C17).
 */
function watchChannel(
  sql: postgres.Sql,
  channel: string,
  pollMs: number | null,
  onChange: () => void,
  signal: AbortSignal,
): void {
  if (signal.aborted) return;
  const timer = pollMs === null ? undefined : setInterval(onChange, pollMs);
  let unlisten: (() => Promise<void>) | undefined;
  let stopped = false;
  signal.addEventListener("abort", () => {
    stopped = true;
    clearInterval(timer);
    unlisten?.().catch(() => {});
  }, { once: true });
  sql.listen(channel, () => onChange(), () => onChange()).then(
    (request) => {
      unlisten = request.unlisten;
      if (stopped) request.unlisten().catch(() => {});
    },
    // The first LISTEN failed: polling goes on regardless.
    () => {},
  );
}

/**
 * `error` in the operator's words when it is npm:postgres's deadline (its
 * `query_timeout`, which `--database-timeout` sets), the original kept as
 * its cause (see unavailable.ts); any other error as it is.
 */
function explainTimeout(error: unknown, seconds: number): unknown {
  if ((error as { code?: unknown } | null)?.code !== "QUERY_TIMEOUT") {
    return error;
  }
  return new Error(
    `A PostgreSQL query ran past its deadline (--database-timeout, ${seconds} s)`,
    { cause: error },
  );
}

/**
 * Why the conninfo text `rest`, what follows the pairs read, cannot be
 * read: naming the word where reading stopped (a password's value hidden).
 */
function unreadConninfo(rest: string): string {
  if (/^\s*[a-z_]+\s*=\s*'/.test(rest)) return "a quoted value is not closed";
  const word = rest.trim().split(/\s+/)[0];
  if (word === "") return "expected key=value pairs";
  const shown = /password/i.test(word) ? word.replace(/=.*/, "=***") : word;
  return `expected key=value pairs, not ${
    JSON.stringify(shown.length > 60 ? `${shown.slice(0, 60)}…` : shown)
  }`;
}
