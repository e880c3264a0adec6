// Output fetches owed: a worker reported a build succeeded, and its outputs
// are not in the server's store yet. Saved with the turn that took the
// report (and again by a clean stop), forgotten once the fetch ends, and
// resumed by the next start: a build whose success the server took is then
// fetched, not built again, however the server stopped meanwhile (an
// upgrade, a crash). The table keeps the name of the days when only a
// clean stop wrote it.

import { all, run } from "./sql_query.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { OutputFetch } from "./types.ts";

/**
 * Saves `fetches`; a later save of a worker's result of a derivation
 * replaces an earlier one.
 */
export function* saveOwedFetches(
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

/** The saved fetches, by derivation then worker; they stay saved. */
export function* owedFetches(_d: Dialect): Step<OutputFetch[]> {
  const rows = yield* all(
    `SELECT derivation, worker, url FROM InterruptedFetches
     ORDER BY derivation, worker`,
  );
  return rows.map((row) => ({
    drv: String(row.derivation),
    worker: String(row.worker),
    url: String(row.url),
  }));
}

/** Forgets the saved fetch of `worker`'s result of `drv`, if any. */
export function* forgetOwedFetch(
  _d: Dialect,
  { drv, worker }: Pick<OutputFetch, "drv" | "worker">,
): Step<void> {
  yield* run(
    "DELETE FROM InterruptedFetches WHERE derivation = ? AND worker = ?",
    [drv, worker],
  );
}
