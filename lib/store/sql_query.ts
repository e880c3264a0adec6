// How store procedures talk to a database: they are generators that yield
// queries and receive results, so one body of SQL logic runs synchronously
// on SQLite (a transaction never spans a tick) and asynchronously on
// PostgreSQL.

/** A result row, column name to value, as the driver returns it. */
export type Row = Record<string, unknown>;

/** One statement with positional `?` parameters. */
export interface Query {
  sql: string;
  params: unknown[];
  /** "rows" returns the rows; "run" returns the number of changed rows. */
  kind: "rows" | "run";
}

/** What a driver answers to a {@link Query}. */
export interface QueryResult {
  rows: Row[];
  changes: number;
}

/** A store procedure: yields queries, returns `T`. */
export type Step<T> = Generator<Query, T, QueryResult>;

/** Column types of {@link Dialect.records}. */
export type ColumnType = "text" | "int";

/**
 * The SQL that differs between backends. Everything else is written once,
 * in the common subset of SQLite and PostgreSQL.
 */
export interface Dialect {
  name: "sqlite" | "postgres";
  /** A subquery of the strings of the JSON array parameter `?`. */
  textList: string;
  /** A subquery of the integers of the JSON array parameter `?`. */
  intList: string;
  /**
   * A subquery of rows from the JSON parameter `?`, an array of arrays, one
   * column per entry of `columns`.
   */
  records(columns: [string, ColumnType][]): string;
  /** The `outputs` column of a build `b`: a JSON array of {name, path}. */
  outputsColumn: string;
  /** The build's products as a JSON array (from `Builds b`). */
  productsColumn: string;
  /**
   * Appended to a SELECT whose rows the transaction is about to update
   * (not their keys): the lock such an UPDATE takes, which foreign key
   * checks do not wait for (see sql_build_locks.ts).
   */
  forUpdate: string;
  /** Appended to a SELECT whose rows must not change until the commit. */
  forShare: string;
  /** Appended to a dispatch SELECT: skip rows another transaction holds. */
  skipLocked: string;
  /** A statement run in a transaction that added dispatchable builds, or "". */
  notifyQueue: string;
  /**
   * A statement run in a transaction that took builds from the worker
   * holding them (see notifyHoldings), or "".
   */
  notifyHoldings: string;
}

/**
 * Tells the processes watching holdings (Store.watchHoldings) that held
 * builds were taken from their holder by someone else: a cancel or a
 * restart, which any process may make, or a requeue of all a worker's
 * builds (a sweep expiring it, a server claiming a holder name), made
 * while the holder may still build them. Not a requeue of one build,
 * which only its holder makes: a batch given back would wake every
 * process once per build.
 */
export function* notifyHoldings(d: Dialect): Step<void> {
  if (d.notifyHoldings !== "") yield* all(d.notifyHoldings);
}

/** Runs `sql` and returns its rows. */
export function* all(sql: string, params: unknown[] = []): Step<Row[]> {
  return (yield { sql, params, kind: "rows" }).rows;
}

/** Runs `sql` and returns its first row, or undefined. */
export function* get(
  sql: string,
  params: unknown[] = [],
): Step<Row | undefined> {
  return (yield { sql, params, kind: "rows" }).rows[0];
}

/** Runs `sql` and returns how many rows it changed. */
export function* run(sql: string, params: unknown[] = []): Step<number> {
  return (yield { sql, params, kind: "run" }).changes;
}

/** Splits `items` into arrays of at most `size`. */
export function chunks<T>(items: readonly T[], size = 2000): T[][] {
  const result: T[][] = [];
  for (let start = 0; start < items.length; start += size) {
    result.push(items.slice(start, start + size));
  }
  return result;
}

/** The SQLite dialect. */
export const sqliteDialect: Dialect = {
  name: "sqlite",
  textList: "(SELECT value FROM json_each(?))",
  intList: "(SELECT value FROM json_each(?))",
  records(columns) {
    const list = columns.map(([name], index) => `value ->> ${index} AS ${name}`)
      .join(", ");
    return `(SELECT ${list} FROM json_each(?))`;
  },
  outputsColumn: `(SELECT json_group_array(
      json_object('name', o.name, 'path', o.path) ORDER BY o.rowid)
    FROM Outputs o WHERE o.derivation = b.derivation)`,
  productsColumn: `(SELECT json_group_array(json_object('id', p.id,
      'build', p.build, 'type', p.type, 'fileSize', p.file_size,
      'checksum', p.checksum, 'path', p.path) ORDER BY p.id)
    FROM BuildProducts p WHERE p.build = b.id)`,
  forUpdate: "",
  forShare: "",
  skipLocked: "",
  notifyQueue: "",
  notifyHoldings: "",
};

/**
 * The PostgreSQL dialect; `channel` is the LISTEN channel of new builds,
 * `holdingsChannel` that of builds taken from their workers.
 */
export function postgresDialect(
  channel: string,
  holdingsChannel = `${channel}_held`,
): Dialect {
  return {
    name: "postgres",
    textList:
      "(SELECT jsonb_array_elements_text(CAST(CAST(? AS text) AS jsonb)))",
    intList:
      "(SELECT CAST(jsonb_array_elements_text(CAST(CAST(? AS text) AS jsonb)) AS integer))",
    records(columns) {
      const list = columns.map(([name, type], index) =>
        `CAST(r ->> ${index} AS ${
          type === "int" ? "bigint" : "text"
        }) AS ${name}`
      ).join(", ");
      return `(SELECT ${list} FROM jsonb_array_elements(CAST(CAST(? AS text) AS jsonb)) r)`;
    },
    outputsColumn: `(SELECT coalesce(json_agg(
        json_build_object('name', o.name, 'path', o.path) ORDER BY o.id),
        '[]')
      FROM Outputs o WHERE o.derivation = b.derivation)`,
    productsColumn: `(SELECT coalesce(json_agg(json_build_object('id', p.id,
        'build', p.build, 'type', p.type, 'fileSize', p.file_size,
        'checksum', p.checksum, 'path', p.path) ORDER BY p.id), '[]')
      FROM BuildProducts p WHERE p.build = b.id)`,
    forUpdate: " FOR NO KEY UPDATE",
    forShare: " FOR SHARE",
    skipLocked: " FOR UPDATE SKIP LOCKED",
    notifyQueue: `SELECT pg_notify('${channel}', '')`,
    notifyHoldings: `SELECT pg_notify('${holdingsChannel}', '')`,
  };
}
