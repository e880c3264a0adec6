// Opens the store named by a `--database` argument, on either backend.

import { openPostgresStore } from "./postgres.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./types.ts";
import type { Logger } from "../log.ts";

/** Which backend a `--database` value names. */
export function storeBackend(database: string): "postgres" | "sqlite" {
  if (/^postgres(ql)?:\/\//.test(database)) return "postgres";
  // A conninfo string: key=value pairs, one of them naming a database.
  if (/^\s*[a-z_]+\s*=/.test(database) && /\bdbname\s*=/.test(database)) {
    return "postgres";
  }
  return "sqlite";
}

/**
 * Opens `database`: a `postgres://` URL or a conninfo string such as
 * `dbname=cuirass host=/var/run/postgresql` opens PostgreSQL, anything else
 * is a SQLite file name, opened for a long-running server (its log
 * checkpointed and its counts scanned on threads of their own, failures
 * of which go to `logger`).
 * @throws {StoreError} when the database's schema is newer than this program's.
 */
export function openStore(
  database: string,
  options: { logger?: Logger } = {},
): Promise<Store> {
  return storeBackend(database) === "postgres"
    ? openPostgresStore(database)
    : Promise.resolve().then(() =>
      openSqliteStore(database, {
        backgroundCheckpoints: true,
        backgroundScans: true,
        logger: options.logger,
      })
    );
}
