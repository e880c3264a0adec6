// Output fetches a clean stop interrupted: the stopping server saves them,
// the next one takes them back. A build whose worker reported success is
// then fetched, not built again, because the server was restarted (say, for
// an upgrade) while it waited for the worker's publish server.

import { all, run } from "./sql_query.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { OutputFetch } from "./types.ts";

/**
 * Saves `fetches`; a later save of a worker's result of a derivation
 * replaces an earlier one.
 */
export function* saveInterruptedFetches(
  _d: Dialect,
  fetches: readonly OutputFetch[],
): Step<void> {
  for (const { drv, worker, url } of fetches) {
    yield* run(
      `INSERT INTO InterruptedFetches (derivation, worker, url)
       VALUES (?, ?, ?)
       ON CONFLICT (derivation, worker) DO UPDATE SET url = excluded.url`,
      [drv, worker, url],
    );
  }
}

/** The saved fetches, by derivation then worker, removed from the store. */
export function* takeInterruptedFetches(_d: Dialect): Step<OutputFetch[]> {
  const rows = yield* all(
    `SELECT derivation, worker, url FROM InterruptedFetches
     ORDER BY derivation, worker`,
  );
  yield* run("DELETE FROM InterruptedFetches");
  return rows.map((row) => ({
    drv: String(row.derivation),
    worker: String(row.worker),
    url: String(row.url),
  }));
}
