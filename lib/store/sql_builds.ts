// Store procedures of the build life cycle after dispatch
// (sql_dispatch.ts): completion, requeue, cancel and restart, which feed
// the notification queue (sql_notifications.ts).
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
import {
  dependentsWalk,
  inIdOrder,
  lockBuild,
  sweepCtes,
} from "./sql_build_locks.ts";
import { truncate, weatherOf } from "./rows.ts";
import type { Reach } from "./sql_build_locks.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type {
  CompleteResult,
  EvaluationChange,
  HeldBuild,
  HolderCheck,
} from "./types.ts";
import { checkedHolder, holderStands } from "./sql_holder_check.ts";
import { queueNotifications } from "./sql_notifications.ts";

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
// The log path goes too: until the build starts again it has no log of its
// own, and the file at that path is the previous attempt's.
const RESTART_SET = `status = -2, starttime = 0, stoptime = 0, weather = -1,
  worker = NULL, log = ''`;

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
  // No log until it starts again: the file at its path is the attempt
  // given up on, as after a restart.
  const changed = yield* run(
    `UPDATE Builds SET status = -2, worker = NULL, starttime = 0, log = ''
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
