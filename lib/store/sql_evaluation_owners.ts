// Store procedures on who runs a started evaluation: several servers share
// one database (issue 8), and one starting up must abort only what a dead
// server left. Every change below is conditional on the row being still
// started (and, for an abort, on the heartbeat the caller judged), so that
// a server finishing, renewing or aborting an evaluation never overwrites
// what another server decided about it meanwhile.

import { StoreError } from "./types.ts";
import { all, get, run } from "./sql_query.ts";
import { SET_EVALUATION_STATUS_SQL } from "./sql_catalog.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import type {
  EvaluationOwner,
  EvaluationStatus,
  RunningEvaluation,
} from "./types.ts";

const STARTED = -1;
const ABORTED = 2;

/** Sets the status of a started evaluation; false if it was not started. */
export function* finishEvaluation(
  _d: Dialect,
  id: number,
  status: EvaluationStatus,
  now: number,
): Step<boolean> {
  const changes = yield* run(
    `${SET_EVALUATION_STATUS_SQL} AND status = ${STARTED}`,
    [status, status, now, id],
  );
  if (changes > 0) return true;
  yield* checkExists(id, `set status of evaluation ${id}`);
  return false;
}

export function* listRunningEvaluations(
  _d: Dialect,
): Step<RunningEvaluation[]> {
  return (yield* all(
    `SELECT id, specification, owner_host, owner_pid, owner_start, heartbeat
     FROM Evaluations WHERE status = ${STARTED} ORDER BY id`,
  )).map(rowToRunning);
}

/** The process that ran evaluation `id`, or null (none recorded, or no such evaluation). */
export function* evaluationOwner(
  _d: Dialect,
  id: number,
): Step<EvaluationOwner | null> {
  const row = yield* get(
    `SELECT owner_host, owner_pid, owner_start FROM Evaluations WHERE id = ?`,
    [id],
  );
  return row === undefined ? null : rowToOwner(row);
}

/**
 * Renews the heartbeat of a started evaluation to `now`, never back: a
 * renewal that waited behind a registration holding the row lands after
 * it, with the time it was issued at, older than the one the registration
 * wrote as it ended. (An owner's wall clock stepped back leaves its
 * heartbeat ahead until the clock catches up: were the owner to die
 * meanwhile, its evaluation would be aborted that much later.) False if
 * the evaluation is not started.
 */
export function* renewEvaluationHeartbeat(
  _d: Dialect,
  id: number,
  now: number,
): Step<boolean> {
  return (yield* run(
    `UPDATE Evaluations SET heartbeat = CASE
       WHEN heartbeat > CAST(? AS bigint) THEN heartbeat
       ELSE CAST(? AS bigint) END
     WHERE id = ? AND status = ${STARTED}`,
    [now, now, id],
  )) > 0;
}

export function* abortStaleEvaluation(
  _d: Dialect,
  id: number,
  seen: { heartbeat: number | null; now: number },
): Step<boolean> {
  // -1 stands for "no heartbeat": no renewal ever writes it.
  return (yield* run(
    `UPDATE Evaluations SET status = ${ABORTED}, evaltime = CAST(? AS bigint)
     WHERE id = ? AND status = ${STARTED}
       AND coalesce(heartbeat, -1) = CAST(? AS bigint)`,
    [seen.now, id, seen.heartbeat ?? -1],
  )) > 0;
}

/**
 * The first step of a registration that must happen only while the
 * evaluation is started: renews its heartbeat, which on PostgreSQL also
 * locks its row until the commit, so that an abort either comes first
 * (the registration is refused) or finds the heartbeat renewed and gives
 * up (see abortStaleEvaluation); SQLite's one writer serializes the same.
 * No other renewal lands until the commit, so a registration given a
 * `heartbeatNow` renews it again as it ends (registerBuilds).
 * @throws {StoreError} "evaluation-ended" when it is not started.
 */
export function* holdStartedEvaluation(
  d: Dialect,
  id: number,
  now: number,
): Step<void> {
  if (yield* renewEvaluationHeartbeat(d, id, now)) return;
  yield* checkExists(id, "register builds");
  throw new StoreError(
    `Cannot register builds: evaluation ${id} is no longer started`,
    "evaluation-ended",
    id,
  );
}

/** See Store.evaluationCanceled. */
export function* evaluationCanceled(_d: Dialect, id: number): Step<boolean> {
  const row = yield* get("SELECT canceled FROM Evaluations WHERE id = ?", [id]);
  return row !== undefined && Number(row.canceled) === 1;
}

function* checkExists(id: number, action: string): Step<void> {
  const found = yield* get("SELECT 1 AS found FROM Evaluations WHERE id = ?", [
    id,
  ]);
  if (found === undefined) {
    throw new StoreError(
      `Cannot ${action}: no such evaluation`,
      "not-found",
      id,
    );
  }
}

function rowToOwner(row: Row): EvaluationOwner | null {
  return row.owner_host === null || row.owner_host === undefined ? null : {
    host: String(row.owner_host),
    pid: Number(row.owner_pid),
    started: String(row.owner_start ?? ""),
  };
}

function rowToRunning(row: Row): RunningEvaluation {
  return {
    id: Number(row.id),
    specification: String(row.specification),
    owner: rowToOwner(row),
    heartbeat: row.heartbeat === null || row.heartbeat === undefined
      ? null
      : Number(row.heartbeat),
  };
}
