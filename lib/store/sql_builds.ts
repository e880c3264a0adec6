// Store procedures of the build life cycle: dispatch, completion, requeue,
// cancel and restart, and the notification queue they feed.
//
// Every build keeps `pending_deps`, the number of its dependencies that have
// not succeeded, so that dispatch reads one index entry instead of walking
// past blocked builds: each change of a status to or from succeeded (0)
// adjusts the counts of the build's direct dependents.
//
// On PostgreSQL every procedure locks the builds it changes in id order,
// most in one sweep before any change (sql_build_locks.ts): two of them
// never wait for each other.

import { BuildStatus, Weather } from "./types.ts";
import { all, chunks, get, notifyHoldings, run } from "./sql_query.ts";
import { buildById } from "./sql_catalog.ts";
import {
  dependentsWalk,
  inIdOrder,
  lockBuild,
  sweepCtes,
} from "./sql_build_locks.ts";
import {
  BUILD_COLUMNS,
  checkLimit,
  rowToBuild,
  truncate,
  weatherOf,
} from "./rows.ts";
import type { Reach } from "./sql_build_locks.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import type {
  Build,
  CompleteResult,
  EvaluationChange,
  HeldBuild,
  HolderCheck,
  PopOptions,
  PopRequest,
  QueuedNotification,
  StartReport,
} from "./types.ts";

// The previous result of the job of the build row `of` (the row `Builds`
// being updated, unless named): the newest finished build of the same job
// and specification in an earlier evaluation (cuirass.md §5.8).
// `status + 0` keeps the planners off the partial index of finished
// builds, which would scan the whole specification, and on the index of
// the job's history.
const previousStatusSql = (of = "Builds") =>
  `(SELECT p.status FROM Builds p
  WHERE p.specification = ${of}.specification
    AND p.job_name = ${of}.job_name
    AND p.evaluation < ${of}.evaluation AND p.status + 0 >= 0
  ORDER BY p.evaluation DESC, p.id DESC LIMIT 1)`;

const PREVIOUS_STATUS_SQL = previousStatusSql();

// The scheduled builds that depend on the builds `targets` names (a
// condition on d.target), directly or through other scheduled builds: a
// dependent that already finished (say, an administrator completed it)
// shields its own dependents.
const dependentsSql = (targets: string) =>
  `WITH RECURSIVE ${dependentsWalk("dependents", targets, -2)}
  SELECT id FROM dependents`;

// The scheduled dependents of build ?.
const DEPENDENTS_SQL = dependentsSql("d.target = ?");

// Marks builds failed-dependency (followed by a WHERE clause). Parameters:
// now, now.
const FAIL_SQL = `UPDATE Builds SET status = 2, starttime = ?, stoptime = ?,
    last_status = ${PREVIOUS_STATUS_SQL},
    weather = CASE WHEN ${PREVIOUS_STATUS_SQL} IS NULL THEN -1
                   WHEN ${PREVIOUS_STATUS_SQL} = 0 THEN 1 ELSE 3 END`;

// What puts builds back in the queue as new.
const RESTART_SET = `status = -2, starttime = 0, stoptime = 0, weather = -1,
  worker = NULL`;

// Puts builds back in the queue as new (followed by a WHERE clause).
const RESTART_SQL = `UPDATE Builds SET ${RESTART_SET}`;

const FINAL_STATUSES: ReadonlySet<number> = new Set([0, 1, 2, 3, 4]);

/** Fails the scheduled dependents of `id`, transitively; returns count. */
export function* failDependents(
  d: Dialect,
  id: number,
  now: number,
): Step<number> {
  // The ids first, then the update by id: one statement doing both makes
  // the planners scan every scheduled build. `status + 0` keeps them off
  // the status indexes, which hold every scheduled build, for the same
  // reason.
  const ids = (yield* all(DEPENDENTS_SQL, [id])).map((row) => Number(row.id));
  return yield* failScheduled(d, ids, now);
}

/**
 * {@link failDependents} of each of `targets`, with a walk per chunk of
 * them rather than one per build: an evaluation canceled may have tens of
 * thousands. Returns how many builds it failed.
 */
export function* failDependentsOfAll(
  d: Dialect,
  targets: number[],
  now: number,
): Step<number> {
  const ids = new Set<number>();
  for (const part of chunks(targets)) {
    const rows = yield* all(dependentsSql(`d.target IN ${d.intList}`), [
      JSON.stringify(part),
    ]);
    for (const row of rows) ids.add(Number(row.id));
  }
  return yield* failScheduled(d, [...ids], now);
}

/**
 * Marks failed-dependency those of builds `ids` still scheduled, chunk
 * after chunk in id order (each locked in that order).
 */
function* failScheduled(d: Dialect, ids: number[], now: number): Step<number> {
  let changed = 0;
  ids.sort((a, b) => a - b);
  for (const part of chunks(ids)) {
    changed += yield* run(
      `${FAIL_SQL} WHERE ${
        inIdOrder(d, `id IN ${d.intList} AND status + 0 = -2`)
      }`,
      [now, now, JSON.stringify(part)],
    );
  }
  return changed;
}

/**
 * Adds `delta` to the pending count of the direct dependents of `id`; when
 * one became dispatchable, wakes the dispatchers listening for the queue.
 */
function* adjustDependents(
  d: Dialect,
  id: number,
  delta: 1 | -1,
): Step<void> {
  const dependents = "SELECT source FROM BuildDependencies WHERE target = ?";
  if (d.notifyQueue === "") {
    // No one to wake: no RETURNING, which costs SQLite as much again.
    yield* run(
      `UPDATE Builds SET pending_deps = pending_deps + ?
       WHERE id IN (${dependents})`,
      [delta, id],
    );
    return;
  }
  // Rows locked in id order: concurrent completions sharing dependents
  // then wait for each other instead of deadlocking.
  const rows = yield* all(
    `UPDATE Builds SET pending_deps = pending_deps + ?
     WHERE id IN (SELECT id FROM Builds WHERE id IN (${dependents})
                  ORDER BY id${d.forUpdate})
     RETURNING status, pending_deps`,
    [delta, id],
  );
  const ready = rows.some((row) =>
    Number(row.status) === BuildStatus.scheduled &&
    Number(row.pending_deps) === 0
  );
  if (ready) yield* all(d.notifyQueue);
}

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

/** A PopOptions.holderAddress, and the one worker it is the address of. */
type Holder = { name: string; address: string };

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
 * Whether `holder`'s Workers row still has its address. Run in the
 * transaction of the write it guards: on SQLite no claim can come between
 * the two; on PostgreSQL the row stays locked (FOR SHARE) until the write
 * commits, so that a claim of the name waits for the write, then finds
 * what it must requeue, or is waited for, and the row is found changed.
 */
function* holderStands(d: Dialect, holder: Holder): Step<boolean> {
  const row = yield* get(
    `SELECT 1 AS held FROM Workers WHERE name = ? AND address = ?${d.forShare}`,
    [holder.name, holder.address],
  );
  return row !== undefined;
}

/**
 * The holder a write checks (see HolderCheck): `worker` with the address
 * `check` gives, or null without one.
 * @throws {Error} when an address is given without the worker it is of
 */
function checkedHolder(
  derivation: string,
  worker: string | undefined,
  check: HolderCheck,
): Holder | null {
  const address = check.holderAddress;
  if (address === undefined) return null;
  if (worker === undefined) {
    throw new Error(
      `Cannot write build ${JSON.stringify(truncate(derivation))} for ` +
        `holder address ${JSON.stringify(address)}: no worker named`,
    );
  }
  return { name: worker, address };
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

/**
 * Checks a final status.
 * @throws {RangeError} when `status` is not final.
 */
export function checkFinal(derivation: string, status: number): void {
  if (!FINAL_STATUSES.has(status)) {
    throw new RangeError(
      `Cannot complete build ${JSON.stringify(truncate(derivation))}: status ${
        JSON.stringify(status)
      } is not a final status`,
    );
  }
}

/**
 * Forgets the fetches owed for `derivation` (sql_fetches.ts), whose build
 * just finished: resumed, each would find it finished and be dropped. The
 * fetcher's own forgetting, once it recorded the build, is then a write
 * (a commit) saved.
 */
function* forgetFetchesOf(derivation: string): Step<void> {
  yield* run("DELETE FROM InterruptedFetches WHERE derivation = ?", [
    derivation,
  ]);
}

/** Queues one notification per sink of the build's specification. */
function* queueNotifications(build: number, specification: string) {
  const row = yield* get(
    "SELECT notifications FROM Specifications WHERE name = ?",
    [specification],
  );
  if (row === undefined) return;
  const raw = row.notifications;
  const sinks = (typeof raw === "string" ? JSON.parse(raw) : raw) as unknown[];
  for (const sink of sinks) {
    yield* run("INSERT INTO Notifications (type, build) VALUES (?, ?)", [
      JSON.stringify(sink),
      build,
    ]);
  }
}

// PostgreSQL records a success in one statement, atomic on its own: one
// round trip instead of a transaction of five, which made completions
// most of a dispatching server's queries. In order: the build and its
// direct dependents, all locked in id order (sql_build_locks.ts; the
// count in `target` has the sweep done before anything is updated); the
// build, when `worker` (any worker, when null) may complete it, with its
// job's previous result; its new status and weather; the fetches owed
// for it forgotten (see forgetFetchesOf); its dependents' counts, by
// input_succeeded() (postgres_schema.ts; none when the build was not
// done); one notification per sink when the weather changed; a
// queue notification when a dependent became dispatchable. Unreferenced
// CTEs would not run: the last SELECT names them; `target` is
// MATERIALIZED, or its previous result would be read once per use; `done`
// holds one build at most, so `adjusted` one call; `forgotten` names the
// derivation itself, a lookup in its key's index whatever the planner
// makes of `done`. Parameters: derivation, worker, worker, now,
// derivation. The build is found by its derivation
// alone, its status and worker checked on the locked row: planned for
// given values, a lookup with them went through the index of held
// builds, whose entries for a worker pile up between vacuums, one per
// status change (some 300 read per call instead of 12 at 200,000 builds,
// 0.35 ms instead of 0.09).
//
// The dependents' counts are not changed through the sweep, which reads
// with the statement's snapshot, taken before any wait for a lock: a
// registration of a new dependent reads its input's status under FOR
// SHARE (sql_register.ts) and counts it pending unless succeeded. Let R
// be such a registration, S this success of the input:
// - R reads the input after S locked it: R waits for S's commit, then
//   reads it succeeded, and does not count it.
// - R reads it before S locks it: R holds it until R commits, so S locks
//   it only after R's commit (waiting for it, or having been held up
//   elsewhere, such as behind another dependent the sweep locks first),
//   which S's snapshot may predate. input_succeeded() reads with a
//   snapshot of its own, taken once S holds the input, so it finds R's
//   dependent, locks it (late, after the sweep's rows: sql_build_locks.ts)
//   and counts it.
// The other changes of a status to or from succeeded (the transaction of
// a success checked against its holder, a failure, a restart, a cancel)
// lock first, in a statement of their own, and find the dependents in
// later statements, whose snapshots see every such registration.
const succeedPostgresSql = (d: Dialect) =>
  `WITH ${
    sweepCtes(
      "SELECT id FROM Builds WHERE derivation = ?",
      "dependents",
      "id, status, worker, specification, job_name, evaluation",
    )
  },
  target AS MATERIALIZED (
    SELECT l.id, ${previousStatusSql("l")} AS previous FROM locked l
    WHERE l.id IN (SELECT id FROM sweep_targets) AND l.status < 0
      AND (CAST(? AS text) IS NULL
           OR (coalesce(l.worker = CAST(? AS text), false)
               AND l.status <> -2))
      AND (SELECT count(*) FROM locked) > 0),
  done AS (
    UPDATE Builds b SET status = 0, stoptime = ?, last_status = t.previous,
      weather = CASE WHEN t.previous IS NULL THEN ${Weather.unknown}
                     WHEN t.previous = 0 THEN ${Weather.stillSucceeding}
                     ELSE ${Weather.newSuccess} END
    FROM target t WHERE b.id = t.id
    RETURNING b.id, b.specification, b.weather),
  forgotten AS (
    DELETE FROM InterruptedFetches
    WHERE derivation = ? AND EXISTS (SELECT 1 FROM done) RETURNING 1),
  adjusted AS MATERIALIZED (
    SELECT input_succeeded(done.id) AS woke FROM done),
  notified AS (
    INSERT INTO Notifications (type, build)
    SELECT CAST(sink AS text), done.id FROM done
    JOIN Specifications s ON s.name = done.specification
    CROSS JOIN LATERAL json_array_elements(CAST(s.notifications AS json)) sink
    WHERE done.weather = ${Weather.newSuccess}
    RETURNING id),
  woken AS (
    ${d.notifyQueue} FROM adjusted WHERE woke)
  SELECT (SELECT count(*) FROM done) AS changed,
    (SELECT count(*) FROM forgotten) AS forgotten,
    (SELECT count(*) FROM notified) AS notifications,
    (SELECT count(*) FROM woken) AS woken`;

export function* completeBuild(
  d: Dialect,
  derivation: string,
  status: BuildStatus,
  options: {
    worker?: string;
    now: number;
    propagate?: boolean;
  } & HolderCheck,
): Step<CompleteResult> {
  const unchanged = { changed: false, dependentsFailed: 0 };
  const holder = checkedHolder(derivation, options.worker, options);
  if (holder !== null && !(yield* holderStands(d, holder))) return unchanged;
  if (
    d.name === "postgres" && status === BuildStatus.succeeded &&
    holder === null
  ) {
    const worker = options.worker ?? null;
    const row = yield* get(succeedPostgresSql(d), [
      derivation,
      worker,
      worker,
      options.now,
      derivation,
    ]);
    return { changed: Number(row?.changed) > 0, dependentsFailed: 0 };
  }
  // The build and its job's previous result in one query, which locks it
  // and the dependents it is about to change.
  const reach: Reach = status === BuildStatus.succeeded
    ? "dependents"
    : options.propagate === false
    ? "none"
    : "scheduled";
  const row = yield* lockBuild(
    d,
    { derivation },
    reach,
    `, specification, ${PREVIOUS_STATUS_SQL} AS previous`,
  );
  if (row === undefined || Number(row.status) >= 0) return unchanged;
  if (
    options.worker !== undefined &&
    (row.worker !== options.worker || Number(row.status) === -2)
  ) {
    return unchanged;
  }
  const id = Number(row.id);
  const lastStatus = row.previous == null ? null : Number(row.previous);
  const weather = weatherOf(status, lastStatus);
  yield* run(
    `UPDATE Builds SET status = ?, stoptime = ?, last_status = ?,
       weather = ? WHERE id = ?`,
    [status, options.now, lastStatus, weather, id],
  );
  yield* forgetFetchesOf(derivation);
  if (weather === Weather.newSuccess || weather === Weather.newFailure) {
    yield* queueNotifications(id, String(row.specification));
  }
  if (status === BuildStatus.succeeded) {
    yield* adjustDependents(d, id, -1);
    return { changed: true, dependentsFailed: 0 };
  }
  if (options.propagate === false) {
    return { changed: true, dependentsFailed: 0 };
  }
  const dependentsFailed = yield* failDependents(d, id, options.now);
  return { changed: true, dependentsFailed };
}

export function* requeueBuild(
  d: Dialect,
  derivation: string,
  worker?: string,
  check: HolderCheck = {},
): Step<boolean> {
  const holder = checkedHolder(derivation, worker, check);
  if (holder !== null && !(yield* holderStands(d, holder))) return false;
  // The worker condition is in the statement itself: between a check and
  // a write the build may have passed to another worker.
  const changed = yield* run(
    `UPDATE Builds SET status = -2, worker = NULL, starttime = 0
     WHERE derivation = ? AND status IN (-3, -1)${
      worker === undefined ? "" : " AND worker = ?"
    }`,
    worker === undefined ? [derivation] : [derivation, worker],
  );
  if (changed > 0 && d.notifyQueue !== "") yield* all(d.notifyQueue);
  return changed > 0;
}

export function* cancelBuild(
  d: Dialect,
  id: number,
  now: number,
): Step<{ changed: boolean; worker: string | null }> {
  const row = yield* lockBuild(d, { id }, "scheduled");
  if (row === undefined || Number(row.status) >= 0) {
    return { changed: false, worker: null };
  }
  const running = Number(row.status) !== BuildStatus.scheduled;
  yield* run("UPDATE Builds SET status = 4, stoptime = ? WHERE id = ?", [
    now,
    id,
  ]);
  yield* failDependents(d, id, now);
  const worker = running && row.worker !== null ? String(row.worker) : null;
  if (worker !== null) yield* notifyHoldings(d);
  return { changed: true, worker };
}

// Failed-dependency builds depending on one of `ids`, whose dependencies
// have no failure left, go back to scheduled, round after round.
function* rescheduleDependents(d: Dialect, ids: number[]): Step<void> {
  let frontier = ids;
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const part of chunks(frontier)) {
      const rows = yield* all(
        `${RESTART_SQL}
         WHERE ${
          inIdOrder(
            d,
            `status + 0 = 2
             AND id IN (SELECT d.source FROM BuildDependencies d
                        WHERE d.target IN ${d.intList})
             AND NOT EXISTS (SELECT 1 FROM BuildDependencies d
                             JOIN Builds t ON t.id = d.target
                             WHERE d.source = Builds.id AND t.status > 0)`,
          )
        }
         RETURNING id`,
        [JSON.stringify(part)],
      );
      for (const row of rows) next.push(Number(row.id));
    }
    frontier = next;
  }
  if (ids.length > 0 && d.notifyQueue !== "") yield* all(d.notifyQueue);
}

export function* restartBuild(
  d: Dialect,
  id: number,
): Step<{ changed: boolean; worker: string | null }> {
  const row = yield* lockBuild(d, { id }, "restart");
  if (row === undefined || Number(row.status) === BuildStatus.scheduled) {
    return { changed: false, worker: null };
  }
  const status = Number(row.status);
  const running = status === BuildStatus.submitted ||
    status === BuildStatus.started;
  if (status === BuildStatus.succeeded) yield* adjustDependents(d, id, 1);
  yield* run(`${RESTART_SQL} WHERE id = ?`, [id]);
  yield* rescheduleDependents(d, [id]);
  const worker = running && row.worker !== null ? String(row.worker) : null;
  if (worker !== null) yield* notifyHoldings(d);
  return { changed: true, worker };
}

export function* cancelEvaluation(
  d: Dialect,
  id: number,
  now: number,
): Step<EvaluationChange> {
  // First: on PostgreSQL it waits for a chunk of the evaluation's
  // registration under way (which holds the row) and ends the evaluation
  // before the next, which is then refused; on SQLite the next chunk is
  // refused too. The chunks registered so far are canceled below.
  yield* run(
    `UPDATE Evaluations SET canceled = 1,
       status = CASE WHEN status = -1 THEN 2 ELSE status END,
       evaltime = CASE WHEN status = -1 THEN CAST(? AS bigint) ELSE evaltime END
     WHERE id = ?`,
    [now, id],
  );
  const { ids, held } = yield* changeEvaluationBuilds(d, id, {
    set: "status = 4, stoptime = ?",
    params: [now],
    where: (status) => `${status} + 0 < 0`,
    reach: "scheduled",
  });
  yield* failDependentsOfAll(d, ids, now);
  if (held.length > 0) yield* notifyHoldings(d);
  return { changed: ids.length, held };
}

export function* restartEvaluation(
  d: Dialect,
  id: number,
): Step<EvaluationChange> {
  // Wanted built after all: if the cancel cut its registration short, the
  // evaluation is interrupted again, and its commits evaluated anew.
  yield* run("UPDATE Evaluations SET canceled = 0 WHERE id = ?", [id]);
  const { ids, held, succeeded } = yield* changeEvaluationBuilds(d, id, {
    set: RESTART_SET,
    params: [],
    where: (status) => `${status} <> -2`,
    reach: "restart",
  });
  // Dependents of the builds that had succeeded wait for them again,
  // counted from the statuses read under the change's row locks: counted
  // from a read before it, a success (or a restart) committed in between
  // by another transaction left a count one off, and the dependent then
  // went out before its input or waited for good.
  yield* waitAgainFor(d, succeeded);
  yield* rescheduleDependents(d, ids);
  if (held.length > 0) yield* notifyHoldings(d);
  return { changed: ids.length, held };
}

/**
 * Adds to the pending count of each direct dependent of `targets` the
 * number of them it depends on: builds that were succeeded and no longer
 * are. Rows locked in id order (see adjustDependents).
 */
function* waitAgainFor(d: Dialect, targets: number[]): Step<void> {
  const added = new Map<number, number>();
  for (const part of chunks(targets)) {
    const rows = yield* all(
      `SELECT source, count(*) AS n FROM BuildDependencies
       WHERE target IN ${d.intList} GROUP BY source`,
      [JSON.stringify(part)],
    );
    for (const row of rows) {
      const source = Number(row.source);
      added.set(source, (added.get(source) ?? 0) + Number(row.n));
    }
  }
  const dependents = [...added.keys()].sort((a, b) => a - b);
  if (d.forUpdate !== "") {
    for (const part of chunks(dependents)) {
      yield* all(
        `SELECT id FROM Builds WHERE id IN ${d.intList} ORDER BY id${d.forUpdate}`,
        [JSON.stringify(part)],
      );
    }
  }
  // One update per count added (nearly always 1), the rows already locked.
  const byCount = new Map<number, number[]>();
  for (const id of dependents) {
    const n = added.get(id)!;
    const same = byCount.get(n);
    if (same === undefined) byCount.set(n, [id]);
    else same.push(id);
  }
  for (const [n, ids] of byCount) {
    for (const part of chunks(ids)) {
      yield* run(
        `UPDATE Builds SET pending_deps = pending_deps + ?
         WHERE id IN ${d.intList}`,
        [n, JSON.stringify(part)],
      );
    }
  }
}

/**
 * Sets `change.set` on the builds of `evaluation` whose status matches
 * `change.where` (given the status column), having locked them and what
 * `change.reach` adds (sql_build_locks.ts). Returns their ids, those a
 * worker held just before, with that worker (the caller tells it, and
 * without the worker's name, which a restart clears, the build would run
 * there to its end), and those that had succeeded, as read under the lock
 * of their row.
 */
function* changeEvaluationBuilds(
  d: Dialect,
  evaluation: number,
  change: {
    set: string;
    params: unknown[];
    where: (status: string) => string;
    reach: Reach;
  },
): Step<{ ids: number[]; held: HeldBuild[]; succeeded: number[] }> {
  const { set, params, reach } = change;
  const where = change.where("status");
  const held: HeldBuild[] = [];
  const succeeded: number[] = [];
  let ids: number[];
  if (d.name === "postgres") {
    // One statement, which locks each row (and the rows the caller goes on
    // to change) in id order, reads it in its newest version, and returns
    // what it was before the change: a read before the update would miss a
    // build handed to a worker between the two (a dispatch in another
    // transaction, which a SELECT FOR UPDATE of the held rows alone does
    // not hold off). The evaluation's builds are found through its index;
    // the evaluation again on the updated side leaves the planner that
    // index there too, for a large one, rather than a scan of every build
    // of the farm.
    const rows = yield* all(
      `WITH RECURSIVE ${
        sweepCtes(
          `SELECT id FROM Builds WHERE evaluation = ? AND ${where}`,
          reach,
          "id, status, worker, evaluation",
        )
      }
       UPDATE Builds SET ${set}
       FROM locked old
       WHERE Builds.id = old.id AND old.evaluation = ?
         AND ${change.where("old.status")} AND Builds.evaluation = ?
       RETURNING Builds.id, old.status AS old_status,
         CASE WHEN old.status IN (-3, -1) THEN old.worker END AS held_by,
         CASE WHEN old.status IN (-3, -1) THEN Builds.derivation END
           AS held_derivation`,
      [evaluation, ...params, evaluation, evaluation],
    );
    ids = [];
    for (const row of rows) {
      ids.push(Number(row.id));
      if (Number(row.old_status) === BuildStatus.succeeded) {
        succeeded.push(Number(row.id));
      }
      if (row.held_by != null) {
        held.push({
          id: Number(row.id),
          derivation: String(row.held_derivation),
          worker: String(row.held_by),
        });
      }
    }
  } else {
    // SQLite's write transaction holds the whole database from its start:
    // nothing changes between the read and the update. (Its RETURNING
    // cannot name the table of an UPDATE's FROM.)
    for (
      const row of yield* all(
        `SELECT id, derivation, worker FROM Builds
         WHERE evaluation = ? AND ${where} AND status IN (-3, -1)
           AND worker IS NOT NULL`,
        [evaluation],
      )
    ) {
      held.push({
        id: Number(row.id),
        derivation: String(row.derivation),
        worker: String(row.worker),
      });
    }
    for (
      const row of yield* all(
        `SELECT id FROM Builds
         WHERE evaluation = ? AND ${where} AND status = 0`,
        [evaluation],
      )
    ) {
      succeeded.push(Number(row.id));
    }
    ids = (yield* all(
      `UPDATE Builds SET ${set} WHERE evaluation = ? AND ${where} RETURNING id`,
      [...params, evaluation],
    )).map((row) => Number(row.id));
  }
  held.sort((a, b) => a.id - b.id);
  return { ids, held, succeeded };
}

/**
 * How long a notification taken from the queue stays the taker's: a
 * sender that died with it (a crash) leaves it to be taken again after
 * this, longer than a sender's retries of one notification (15 minutes).
 */
export const NOTIFICATION_LEASE_SECONDS = 3600;

export function* returnNotifications(
  _d: Dialect,
  items: QueuedNotification[],
): Step<number> {
  let count = 0;
  for (const item of items) {
    // Gone with its build meanwhile, or given back already: not counted.
    const rows = yield* all(
      `UPDATE Notifications SET claimed_at = NULL
       WHERE id = ? AND build = ? AND claimed_at IS NOT NULL
       RETURNING id`,
      [item.id, item.build.id],
    );
    count += rows.length;
  }
  return count;
}

export function* popNotifications(
  d: Dialect,
  limit: number,
  now: number,
): Step<QueuedNotification[]> {
  // Claimed, not deleted: a notification leaves the queue only once it is
  // sent (or given up), so that a sender's crash loses none.
  const rows = yield* all(
    `UPDATE Notifications SET claimed_at = ? WHERE id IN
       (SELECT id FROM Notifications
        WHERE claimed_at IS NULL OR claimed_at <= ?
        ORDER BY id LIMIT ?${d.skipLocked})
     RETURNING id, type, build`,
    [
      now,
      now - NOTIFICATION_LEASE_SECONDS,
      checkLimit("take notifications", limit),
    ],
  );
  rows.sort((a, b) => Number(a.id) - Number(b.id));
  const result: QueuedNotification[] = [];
  for (const row of rows) {
    const build = yield* buildById(d, Number(row.build));
    if (build === null) continue;
    result.push({
      id: Number(row.id),
      sink: JSON.parse(String(row.type)),
      build,
    });
  }
  return result;
}

export function* finishNotifications(
  _d: Dialect,
  ids: number[],
): Step<void> {
  for (const id of ids) {
    yield* run("DELETE FROM Notifications WHERE id = ?", [id]);
  }
}
