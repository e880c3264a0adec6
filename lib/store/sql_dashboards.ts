// Store procedures on dashboards: saved sets of one specification's job
// names, shown as a grid of an evaluation's jobs (cuirass.md §6.1).

import { get, run } from "./sql_query.ts";
import { checkName } from "./rows.ts";
import { type Dashboard, StoreError } from "./types.ts";
import type { Dialect, Step } from "./sql_query.ts";

/**
 * Saves `dashboard`; false when its id is taken (that row is kept).
 * The jobs column holds the names joined by commas, as Cuirass keeps it.
 * @throws {TypeError} for an empty id, no job, or a name that is empty
 * or holds a comma (it would not read back as one name).
 * @throws {StoreError} "not-found" for an unknown specification.
 */
export function* addDashboard(
  _d: Dialect,
  dashboard: Dashboard,
): Step<boolean> {
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
  const changes = yield* run(
    `INSERT INTO Dashboards (id, specification, jobs) VALUES (?, ?, ?)
     ON CONFLICT (id) DO NOTHING`,
    [dashboard.id, dashboard.specification, dashboard.jobs.join(",")],
  );
  return changes > 0;
}

/** The dashboard `id`, or null. */
export function* getDashboard(
  _d: Dialect,
  id: string,
): Step<Dashboard | null> {
  const row = yield* get(
    "SELECT id, specification, jobs FROM Dashboards WHERE id = ?",
    [id],
  );
  if (row === undefined) return null;
  const jobs = String(row.jobs);
  return {
    id: String(row.id),
    specification: String(row.specification),
    jobs: jobs === "" ? [] : jobs.split(","),
  };
}
