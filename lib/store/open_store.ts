// Opens the store named by a `--database` argument, on either backend.

import { openPostgresStore } from "./postgres.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./types.ts";
import type { Logger } from "../log.ts";
import { storeBackend } from "./database_name.ts";

export {
  databaseFault,
  DatabaseNameError,
  redactDatabase,
  storeBackend,
} from "./database_name.ts";
export {
  DEFAULT_QUERY_TIMEOUT_SECONDS,
  PostgresTargetError,
} from "./postgres.ts";
export { waitForDatabase } from "./wait_for_database.ts";

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Where SQLite's background threads report their failures. */
  logger?: Logger;
  /**
   * PostgreSQL only: seconds a query may take before it fails as the
   * database being unavailable (default DEFAULT_QUERY_TIMEOUT_SECONDS,
   * 0 for no limit).
   */
  queryTimeoutSeconds?: number;
}

/**
 * Opens `database`: a `postgres://` URL or a conninfo string such as
 * `dbname=cuirass host=/var/run/postgresql` opens PostgreSQL, anything else
 * is a SQLite file name, opened for a long-running server (its log
 * checkpointed and its counts scanned on threads of their own, failures
 * of which go to `logger`).
 * @throws {DatabaseNameError} for a URL of an unknown scheme.
 * @throws {StoreError} when the database's schema is newer than this program's.
 */
export function openStore(
  database: string,
  options: OpenStoreOptions = {},
): Promise<Store> {
  return Promise.resolve().then(() =>
    storeBackend(database) === "postgres"
      ? openPostgresStore(database, {
        queryTimeoutSeconds: options.queryTimeoutSeconds,
      })
      : openSqliteStore(database, {
        backgroundCheckpoints: true,
        backgroundScans: true,
        logger: options.logger,
      })
  );
}
