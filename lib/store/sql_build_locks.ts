// Locking several Builds rows in one global order on PostgreSQL: id
// ascending.
//
// Two transactions that lock rows in opposite orders wait for each other
// until PostgreSQL's deadlock detector (deadlock_timeout, 1 s by default)
// aborts one, which the driver then runs again: both stall that long. A
// dependent may well have a lower id than its input (a registration
// numbers its builds in job order), so a completion that locked its build
// and then its dependents, beside a restart of the evaluation that locked
// the same builds in id order, did just that. Hence the rule every store
// procedure follows: its first statement that locks builds locks all it
// means to change, in id order (a sweep: the rows it names, and those
// their change reaches through the dependency graph); any later statement
// locks in id order too, and changes rows the sweep holds, save those a
// sweep could not foresee (a row another transaction changed while the
// sweep waited for it, such as a new dependent registered meanwhile),
// which it locks late. The rule holds for each procedure: a batch of
// several (Store.batch) is one transaction, whose sweeps follow one
// another in the order of its calls.
//
// The lock taken is FOR NO KEY UPDATE, the one an UPDATE of columns no
// foreign key refers to takes, not FOR UPDATE: the foreign key checks of
// the rows that refer to a build (Jobs, BuildDependencies, Notifications)
// take FOR KEY SHARE on it, in no particular order, and would otherwise
// wait for the sweep and could close a cycle with it. SQLite has one
// writer, whose transaction holds the whole database: no lock to take.

import { get } from "./sql_query.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";

/** What, beside the builds it names, a change locks in its sweep. */
export type Reach =
  /** Nothing more. */
  | "none"
  /** Their direct dependents (a success counts one less input pending). */
  | "dependents"
  /** Their scheduled dependents, transitively (a failure fails them). */
  | "scheduled"
  /**
   * Their direct dependents (counting a success undone), and their
   * failed-dependency ones, transitively (scheduled again).
   */
  | "restart";

/** A build named by its id or by its derivation. */
export type BuildKey = { id: number } | { derivation: string };

/**
 * A recursive CTE `name(id)`: the builds with status `status` depending on
 * the builds that `from` (a condition on `d.target`) names, directly or
 * through other builds with that status. A build with another status
 * shields its own dependents.
 */
export function dependentsWalk(
  name: string,
  from: string,
  status: number,
): string {
  // `status + 0` keeps the planners off the status indexes, which hold
  // every scheduled build.
  return `${name}(id) AS (
    SELECT d.source FROM BuildDependencies d
      JOIN Builds s ON s.id = d.source
      WHERE ${from} AND s.status + 0 = ${status}
    UNION
    SELECT d.source FROM BuildDependencies d
      JOIN ${name} w ON d.target = w.id
      JOIN Builds s ON s.id = d.source
      WHERE s.status + 0 = ${status})`;
}

/**
 * The WITH list (after `WITH RECURSIVE`, or `WITH` when `reach` walks
 * nothing; PostgreSQL only) of a sweep:
 * `sweep_targets(id)`, the builds `targets` (a query of ids) names, and
 * `locked`, the `columns` of those and of the builds `reach` adds, each
 * row locked in id order and read as it is once locked.
 */
export function sweepCtes(
  targets: string,
  reach: Reach,
  columns: string,
): string {
  const ctes = [`sweep_targets(id) AS (${targets})`];
  const ids = ["SELECT id FROM sweep_targets"];
  const fromTargets = "d.target IN (SELECT id FROM sweep_targets)";
  if (reach === "dependents" || reach === "restart") {
    ids.push(`SELECT d.source FROM BuildDependencies d WHERE ${fromTargets}`);
  }
  if (reach === "scheduled" || reach === "restart") {
    const status = reach === "scheduled" ? -2 : 2;
    ctes.push(dependentsWalk("sweep_walk", fromTargets, status));
    ids.push("SELECT id FROM sweep_walk");
  }
  // An array of the ids, not an IN: the planner then reads each by the
  // primary key (in id order, duplicates dropped), where it joined a
  // thousand of them with a scan of every build. MATERIALIZED: the CTE is
  // read once, whatever reads it.
  ctes.push(`locked AS MATERIALIZED (
    SELECT ${columns} FROM Builds
    WHERE id = ANY (ARRAY(${ids.join(" UNION ALL ")}))
    ORDER BY id FOR NO KEY UPDATE)`);
  return ctes.join(",\n  ");
}

/**
 * Locks build `key` and what `reach` adds from it, in id order, and
 * returns its `id`, `status` and `worker` as they are once locked, with
 * the columns `extra` selects (`, name, …` on `Builds`: on PostgreSQL of
 * the version read before the lock, so columns that never change), or
 * undefined when there is no such build.
 */
export function* lockBuild(
  d: Dialect,
  key: BuildKey,
  reach: Reach,
  extra = "",
): Step<Row | undefined> {
  const [column, value] = "id" in key
    ? ["id", key.id]
    : ["derivation", key.derivation];
  if (d.name !== "postgres") {
    return yield* get(
      `SELECT id, status, worker${extra} FROM Builds WHERE ${column} = ?`,
      [value],
    );
  }
  return yield* get(
    `WITH RECURSIVE ${
      sweepCtes(
        `SELECT id FROM Builds WHERE ${column} = ?`,
        reach,
        "id, status, worker",
      )
    }
    SELECT locked.id, locked.status, locked.worker${extra}
    FROM locked JOIN Builds ON Builds.id = locked.id
    WHERE locked.id IN (SELECT id FROM sweep_targets)`,
    [value],
  );
}

/**
 * The WHERE condition of an UPDATE of Builds changing the rows that match
 * `condition` (on the columns of Builds): on PostgreSQL, a subquery that
 * locks them in id order first, which the UPDATE alone does in the order
 * of its plan.
 */
export function inIdOrder(d: Dialect, condition: string): string {
  if (d.name !== "postgres") return condition;
  return `id IN (SELECT id FROM Builds WHERE ${condition}
    ORDER BY id${d.forUpdate})`;
}
