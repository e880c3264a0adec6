// Store procedures of dispatch: builds popped for the workers asking for
// work, in one global order of priority, then age, then id (case C04),
// and their starts recorded. Only builds whose inputs all succeeded are
// taken (`pending_deps` = 0, sql_builds.ts).

import { BUILD_COLUMNS, rowToBuild } from "./rows.ts";
import { all, get, run } from "./sql_query.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import { type Holder, holderStands } from "./sql_holder_check.ts";
import type { Build, PopOptions, PopRequest, StartReport } from "./types.ts";

// What a pop returns of a build `b`: not its products, which a build
// being handed out has no use for.
const poppedColumns = (d: Dialect, withOutputs: boolean) =>
  `${BUILD_COLUMNS}, ${withOutputs ? d.outputsColumn : "'[]'"} AS outputs`;

// PostgreSQL pops for several workers in one statement (outside any
// explicit transaction, it is atomic on its own): the first %LIMIT% of
// each system's queue (skipping rows other transactions hold), the best
// %LIMIT% of them numbered in dispatch order, build n to worker n.
// %HOLDER% and %GATE% hold the holder check (HOLDER_CTE) when one is
// asked for. Parameters: systems (JSON), workers (JSON), now.
const POP_POSTGRES_SQL = `WITH %HOLDER%picked AS (
    SELECT c.id,
      row_number() OVER (ORDER BY c.priority, c.timestamp, c.id) AS n
    FROM (
      SELECT x.id, x.priority, x.timestamp
      FROM (SELECT jsonb_array_elements_text(
              CAST(CAST(? AS text) AS jsonb)) AS system%GATE%) s
      CROSS JOIN LATERAL (
        SELECT id, priority, timestamp FROM Builds
        WHERE status = -2 AND pending_deps = 0 AND system = s.system
        ORDER BY priority, timestamp, id LIMIT %LIMIT%
        FOR UPDATE SKIP LOCKED) x
      ORDER BY x.priority, x.timestamp, x.id LIMIT %LIMIT%) c),
  wanted AS (
    SELECT w.worker, w.n FROM jsonb_array_elements_text(
      CAST(CAST(? AS text) AS jsonb)) WITH ORDINALITY AS w(worker, n))
  UPDATE Builds b SET status = -3, worker = wanted.worker, starttime = ?
  FROM picked JOIN wanted ON wanted.n = picked.n
  WHERE b.id = picked.id AND b.status = -2
  RETURNING wanted.n AS request, `;

/**
 * The limit of a pop for `count` workers, written in the statement: a
 * parameter makes PostgreSQL's generic plan assume a large one. Exactly
 * `count` per system: on PostgreSQL every row the pop reads stays locked
 * until the statement ends and concurrent pops skip it, so each row read
 * beyond the requests (it once read up to the next power of two) was a
 * build that no concurrent pop could take. (With several systems, the
 * rows of each system's head not taken are still read, and locked.)
 */
function popLimit(count: number): number {
  return Math.max(1, count);
}

/** Dispatch order of two candidates: priority, then age, then id. */
function compareCandidates(a: Row, b: Row): number {
  for (const key of ["priority", "timestamp", "id"]) {
    const delta = Number(a[key]) - Number(b[key]);
    if (delta !== 0) return delta;
  }
  return 0;
}

// What makes a PostgreSQL pop take nothing unless the holder's row (name,
// address: the parameters before the pop's own) is as the caller last saw
// it: the row, read in the pop's statement and locked until it ends, so
// that a claim of the name waits for the pop, and then finds its builds to
// requeue, or is waited for, and the pop finds the row changed.
const HOLDER_CTE = `holder AS (
    SELECT name FROM Workers WHERE name = ? AND address = ? FOR SHARE),
  `;
const HOLDER_GATE = " WHERE EXISTS (SELECT 1 FROM holder)";

/** Builds for `workers`, all asking for `systems` (distinct). */
function* popForSystems(
  d: Dialect,
  systems: string[],
  workers: string[],
  now: number,
  holder: Holder | null,
  withOutputs: boolean,
): Step<(Build | null)[]> {
  const limit = popLimit(workers.length);
  const columns = poppedColumns(d, withOutputs);
  const builds: (Build | null)[] = workers.map(() => null);
  if (d.name === "postgres") {
    const sql = POP_POSTGRES_SQL.replaceAll("%LIMIT%", String(limit))
      .replace("%HOLDER%", holder === null ? "" : HOLDER_CTE)
      .replace("%GATE%", holder === null ? "" : HOLDER_GATE);
    const rows = yield* all(sql + columns, [
      ...(holder === null ? [] : [holder.name, holder.address]),
      JSON.stringify(systems),
      JSON.stringify(workers),
      now,
    ]);
    for (const row of rows) builds[Number(row.request) - 1] = rowToBuild(row);
    return builds;
  }
  // Every system's head, then the best of them: the order is global across
  // systems (case C04), not per system in random order.
  const candidates: Row[] = [];
  for (const system of systems) {
    candidates.push(
      ...yield* all(
        `SELECT id, priority, timestamp FROM Builds
         WHERE status = -2 AND pending_deps = 0 AND system = ?
         ORDER BY priority, timestamp, id LIMIT ${limit}`,
        [system],
      ),
    );
  }
  candidates.sort(compareCandidates);
  for (const [i, worker] of workers.entries()) {
    if (i >= candidates.length) break;
    const id = Number(candidates[i].id);
    // Update, then read: SQLite's RETURNING costs twice the two together.
    const changed = yield* run(
      `UPDATE Builds SET status = -3, worker = ?, starttime = ?
       WHERE id = ? AND status = -2`,
      [worker, now, id],
    );
    if (changed === 0) continue;
    const row = yield* get(
      `SELECT ${columns} FROM Builds b WHERE b.id = ?`,
      [id],
    );
    if (row !== undefined) builds[i] = rowToBuild(row);
  }
  return builds;
}

/** Store.popBuilds: request i's build at entry i, or null. */
export function* popBuilds(
  d: Dialect,
  requests: readonly PopRequest[],
  now: number,
  options: PopOptions = {},
): Step<(Build | null)[]> {
  const holder = holderOf(requests, options);
  // SQLite: the check and the pop share the write transaction, which no
  // claim can come between. (PostgreSQL checks in the pop's statement.)
  if (
    holder !== null && d.name !== "postgres" &&
    !(yield* holderStands(d, holder))
  ) {
    return requests.map(() => null);
  }
  // Requests grouped by their systems, in the order of their first request.
  const groups = new Map<string, number[]>();
  for (const [i, request] of requests.entries()) {
    const key = JSON.stringify([...new Set(request.systems)].sort());
    const group = groups.get(key);
    if (group === undefined) groups.set(key, [i]);
    else group.push(i);
  }
  const builds: (Build | null)[] = requests.map(() => null);
  for (const [key, members] of groups) {
    const taken = yield* popForSystems(
      d,
      JSON.parse(key),
      members.map((i) => requests[i].worker),
      now,
      holder,
      options.withoutOutputs !== true,
    );
    taken.forEach((build, j) => builds[members[j]] = build);
  }
  return builds;
}

/**
 * Records `start` as {@link markStartedMany} does, only while the claim
 * `holderAddress` stands (HolderCheck); in a write transaction.
 */
export function* markStartedUnder(
  d: Dialect,
  start: StartReport,
  now: number,
  holderAddress: string,
): Step<boolean> {
  const holder = { name: start.worker, address: holderAddress };
  if (!(yield* holderStands(d, holder))) return false;
  return (yield* markStartedMany(d, [start], now))[0];
}

/** The holder `options` names for `requests`, all of one worker; or null. */
function holderOf(
  requests: readonly PopRequest[],
  options: PopOptions,
): Holder | null {
  const address = options.holderAddress;
  if (address === undefined || requests.length === 0) return null;
  const workers = new Set(requests.map((request) => request.worker));
  if (workers.size > 1) {
    throw new Error(
      `Cannot pop builds for holder address ${JSON.stringify(address)}: ` +
        `its requests name several workers (${
          [...workers].map((w) => JSON.stringify(w)).join(", ")
        }), not one`,
    );
  }
  return { name: requests[0].worker, address };
}

/**
 * Records the starts `starts` reports, each only when its worker holds the
 * build (submitted, or started already: a report sent again); entry i of
 * the result says whether start i was recorded.
 */
export function* markStartedMany(
  d: Dialect,
  starts: readonly StartReport[],
  now: number,
): Step<boolean[]> {
  if (d.name === "sqlite") {
    const recorded: boolean[] = [];
    for (const { derivation, worker, log } of starts) {
      recorded.push(
        (yield* run(
          `UPDATE Builds SET status = -1, starttime = ?, log = ?
           WHERE derivation = ? AND worker = ? AND status IN (-3, -1)`,
          [now, log, derivation, worker],
        )) > 0,
      );
    }
    return recorded;
  }
  // Each build found by its derivation alone (a unique index, one row
  // whatever the statistics say): `coalesce` and `+ 0` keep the planner off
  // the indexes of workers and statuses, which statistics taken before any
  // build was handed out show as empty; it then hashed every build ever
  // handed out on each call (7 ms instead of 0.8 with 7,000 handed out).
  // A build without a worker matches no name, not even "". The rows are
  // locked in id order first (sql_build_locks.ts): the UPDATE alone takes
  // them in the order of its plan, the reports' or the table's.
  const rows = yield* all(
    `UPDATE Builds b SET status = -1, starttime = ?, log = s.log
     FROM (SELECT c.id, r.derivation, r.worker, r.log
           FROM ${
      d.records([["derivation", "text"], ["worker", "text"], ["log", "text"]])
    } r
           JOIN Builds c ON c.derivation = r.derivation
           WHERE coalesce(c.worker = r.worker, false)
             AND c.status + 0 IN (-3, -1)
           ORDER BY c.id${d.forUpdate} OF c) s
     WHERE b.id = s.id
     RETURNING s.derivation, s.worker`,
    [
      now,
      JSON.stringify(starts.map((s) => [s.derivation, s.worker, s.log])),
    ],
  );
  const key = (worker: unknown, derivation: unknown) =>
    JSON.stringify([worker, derivation]);
  const done = new Set(rows.map((row) => key(row.worker, row.derivation)));
  return starts.map((s) => done.has(key(s.worker, s.derivation)));
}
