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
 * replaces an earlier one, within one call too.
 */
export function* saveOwedFetches(
  d: Dialect,
  fetches: readonly OutputFetch[],
): Step<void> {
  // One statement for a turn's successes, not one each (a round trip each
  // on PostgreSQL). An upsert may change a row once per statement: the
  // last of a key's fetches is the one kept.
  const latest = new Map<string, OutputFetch>();
  for (const fetch of fetches) {
    latest.set(JSON.stringify([fetch.drv, fetch.worker]), fetch);
  }
  if (latest.size === 0) return;
  // `WHERE true`: without it SQLite reads ON CONFLICT as the ON of a join.
  yield* run(
    `INSERT INTO InterruptedFetches (derivation, worker, url)
     SELECT r.derivation, r.worker, r.url FROM ${
      d.records([["derivation", "text"], ["worker", "text"], ["url", "text"]])
    } r WHERE true
     ON CONFLICT (derivation, worker) DO UPDATE SET url = excluded.url`,
    [JSON.stringify([...latest.values()].map((f) => [f.drv, f.worker, f.url]))],
  );
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
