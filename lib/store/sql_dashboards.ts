// Store procedures on dashboards: saved sets of one specification's job
// names, shown as a grid of an evaluation's jobs (cuirass.md §6.1).
//
// Registering is a GET anyone may call, as in Cuirass: the same set of
// names is saved once, and the table keeps the MAX_DASHBOARDS used last.

import { createHash } from "node:crypto";
import { get, run } from "./sql_query.ts";
import { checkName } from "./rows.ts";
import { type Dashboard, type SavedDashboard, StoreError } from "./types.ts";
import type { Dialect, Step } from "./sql_query.ts";

/** Dashboards kept; registering one more drops the least recently used. */
export const MAX_DASHBOARDS = 10_000;
/**
 * Most rows one registration drops. A table filled before the bound (a
 * flood of registrations on schema 9 of SQLite, 7 of PostgreSQL) would
 * otherwise go down to the bound in one statement, past the query
 * deadline on PostgreSQL (rolled back, so every registration failed) and
 * holding the writer on SQLite; it shrinks by this much per new row.
 */
export const MAX_DROPPED_PER_REGISTRATION = 1000;
/** A use is recorded when the last one recorded is older (seconds). */
export const DASHBOARD_USE_SECONDS = 60;

/**
 * Saves `dashboard` with its names sorted and each once: the grid shows a
 * set of jobs, in name order, so lists that differ only in order or
 * repeats are one dashboard. Returns the id the names are saved under:
 * `dashboard.id`, or the id of the specification's dashboard that has
 * them already (its use recorded); null when `dashboard.id` is taken by
 * another (that row is kept). A new row beyond `keep` drops the least
 * recently used.
 * @throws {TypeError} for an empty id, no job, or a name that is empty
 * or holds a comma (it would not read back as one name).
 * @throws {StoreError} "not-found" for an unknown specification.
 */
export function* addDashboard(
  _d: Dialect,
  dashboard: Dashboard,
  now: number,
  keep = MAX_DASHBOARDS,
): Step<string | null> {
  checkName("save dashboard", dashboard.id);
  if (dashboard.jobs.length === 0) {
    throw new TypeError(
      `Cannot save dashboard ${JSON.stringify(dashboard.id)}: no job name`,
    );
  }
  for (const name of dashboard.jobs) {
    if (name === "" || name.includes(",")) {
      throw new TypeError(
        `Cannot save dashboard ${JSON.stringify(dashboard.id)}: job name ${
          JSON.stringify(name)
        } is empty or holds a comma`,
      );
    }
  }
  const spec = yield* get(
    "SELECT 1 AS found FROM Specifications WHERE name = ?",
    [dashboard.specification],
  );
  if (spec === undefined) {
    throw new StoreError(
      `Cannot save dashboard of specification ${
        JSON.stringify(dashboard.specification)
      }: no such specification`,
      "not-found",
      dashboard.specification,
    );
  }
  const jobs = [...new Set(dashboard.jobs)].sort().join(",");
  // Up to 200 KB of names: too long for a PostgreSQL index entry.
  const key = createHash("sha256").update(jobs, "utf8").digest("hex");
  const saved = yield* savedWith(dashboard.specification, key, now);
  if (saved !== null) return saved;
  const changes = yield* run(
    `INSERT INTO Dashboards (id, specification, jobs, jobs_key, last_used)
     VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    [dashboard.id, dashboard.specification, jobs, key, now],
  );
  // No row: the id is taken, or (PostgreSQL) another transaction saved
  // the same names meanwhile.
  if (changes === 0) return yield* savedWith(dashboard.specification, key, now);
  const count = Number(
    (yield* get("SELECT count(*) AS n FROM Dashboards"))?.n,
  );
  if (count > keep) {
    yield* run(
      `DELETE FROM Dashboards WHERE id IN (SELECT id FROM Dashboards
       WHERE id <> ? ORDER BY last_used, id LIMIT ?)`,
      [dashboard.id, Math.min(count - keep, MAX_DROPPED_PER_REGISTRATION)],
    );
  }
  return dashboard.id;
}

/** The id of `specification`'s dashboard keyed `key`, its use recorded. */
function* savedWith(
  specification: string,
  key: string,
  now: number,
): Step<string | null> {
  const row = yield* get(
    `SELECT id, last_used FROM Dashboards
     WHERE specification = ? AND jobs_key = ?`,
    [specification, key],
  );
  if (row === undefined) return null;
  const id = String(row.id);
  if (useIsStale(Number(row.last_used), now)) yield* recordUse(id, now);
  return id;
}

/**
 * True when a use at `now` is worth a write: the last one recorded is
 * {@link DASHBOARD_USE_SECONDS} old, or ahead of `now` (the clock stepped
 * back).
 */
export function useIsStale(lastUsed: number, now: number): boolean {
  return now - lastUsed >= DASHBOARD_USE_SECONDS || now < lastUsed;
}

/** Records that the dashboard `id` was used at `now`. */
export function* recordUse(id: string, now: number): Step<void> {
  yield* run("UPDATE Dashboards SET last_used = ? WHERE id = ?", [now, id]);
}

/** The dashboard `id`, or null. */
export function* getDashboard(
  _d: Dialect,
  id: string,
): Step<SavedDashboard | null> {
  const row = yield* get(
    "SELECT id, specification, jobs, last_used FROM Dashboards WHERE id = ?",
    [id],
  );
  if (row === undefined) return null;
  const jobs = String(row.jobs);
  return {
    id: String(row.id),
    specification: String(row.specification),
    jobs: jobs === "" ? [] : jobs.split(","),
    lastUsed: Number(row.last_used),
  };
}
