// Store procedures on build workers.

import { all, chunks, get, notifyHoldings, run } from "./sql_query.ts";
import { inIdOrder } from "./sql_build_locks.ts";
import { checkName, integer, nullableNumber, rowToWorker } from "./rows.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { ExpiredWorker, Holding, Worker, WorkerSweep } from "./types.ts";

export function* upsertWorker(_d: Dialect, worker: Worker): Step<void> {
  checkName("save worker", worker.name);
  checkTimeout("save worker", worker.timeoutSeconds);
  yield* run(
    `INSERT INTO Workers (name, address, machine, systems, last_seen, timeout)
     VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET address = excluded.address,
       machine = excluded.machine, systems = excluded.systems,
       last_seen = excluded.last_seen, timeout = excluded.timeout`,
    [
      worker.name,
      worker.address,
      worker.machine,
      JSON.stringify(worker.systems),
      worker.lastSeen,
      worker.timeoutSeconds,
    ],
  );
}

/**
 * Saves `worker` only if its row is as `expected` says: absent when null,
 * else with `expected.address` and, when given, `expected.lastSeen`.
 * Returns whether it was saved; builds are left alone.
 */
export function* claimWorker(
  _d: Dialect,
  worker: Worker,
  expected: { address: string; lastSeen?: number } | null,
): Step<boolean> {
  checkName("claim worker", worker.name);
  checkTimeout("claim worker", worker.timeoutSeconds);
  const values = [
    worker.address,
    worker.machine,
    JSON.stringify(worker.systems),
    worker.lastSeen,
    worker.timeoutSeconds,
  ];
  if (expected === null) {
    return (yield* run(
      `INSERT INTO Workers (address, machine, systems, last_seen, timeout,
         name)
       VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
      [...values, worker.name],
    )) > 0;
  }
  const since = expected.lastSeen === undefined ? "" : " AND last_seen = ?";
  return (yield* run(
    `UPDATE Workers SET address = ?, machine = ?, systems = ?, last_seen = ?,
       timeout = ?
     WHERE name = ? AND address = ?${since}`,
    [
      ...values,
      worker.name,
      expected.address,
      ...(expected.lastSeen === undefined ? [] : [expected.lastSeen]),
    ],
  )) > 0;
}

/**
 * Deletes worker `name` if its row still has `address`, and then requeues
 * its builds; returns null when the row was not that (gone, or another
 * holder's), else how many builds were requeued.
 */
export function* releaseWorker(
  d: Dialect,
  name: string,
  address: string,
): Step<number | null> {
  const deleted = yield* run(
    "DELETE FROM Workers WHERE name = ? AND address = ?",
    [name, address],
  );
  if (deleted === 0) return null;
  return yield* requeueWorker(d, name);
}

/** See Store.touchWorker. */
export function* touchWorker(
  _d: Dialect,
  name: string,
  now: number,
  timeoutSeconds: number,
): Step<boolean> {
  checkTimeout("touch worker", timeoutSeconds);
  return (yield* run(
    "UPDATE Workers SET last_seen = ?, timeout = ? WHERE name = ?",
    [now, timeoutSeconds, name],
  )) > 0;
}

export function* getWorker(_d: Dialect, name: string) {
  const row = yield* get("SELECT * FROM Workers WHERE name = ?", [name]);
  return row === undefined ? null : rowToWorker(row);
}

export function* listWorkers(_d: Dialect) {
  return (yield* all("SELECT * FROM Workers ORDER BY name")).map(rowToWorker);
}

// The builds a worker holds (submitted or started): of worker ?, or of
// any in the JSON array ?. `status < 0` as written in the predicate of
// SQLite's Builds_held.
const HELD_BY_ONE = "worker = ? AND status < 0 AND status <> -2";
const HELD_BY_ANY = (d: Dialect) =>
  `worker IN ${d.textList} AND status < 0 AND status <> -2`;

/**
 * Puts the submitted and started builds of `worker` back in the queue,
 * their rows locked in id order (sql_build_locks.ts).
 */
export function* requeueWorker(d: Dialect, worker: string): Step<number> {
  // No log until they start again, as requeueBuild() leaves one.
  const changes = yield* run(
    `UPDATE Builds SET status = -2, worker = NULL, starttime = 0, log = ''
     WHERE ${inIdOrder(d, HELD_BY_ONE)}`,
    [worker],
  );
  if (changes > 0 && d.notifyQueue !== "") yield* all(d.notifyQueue);
  if (changes > 0) yield* notifyHoldings(d);
  return changes;
}

/** See Store.stillHeld. */
export function* stillHeld(
  d: Dialect,
  holdings: readonly Holding[],
): Step<boolean[]> {
  const key = (worker: unknown, derivation: unknown) =>
    JSON.stringify([worker, derivation]);
  const held = new Set<string>();
  for (const part of chunks(holdings)) {
    // CROSS JOIN: SQLite then looks each derivation up, rather than walk
    // every held build's and search the list for each (PostgreSQL
    // reorders it at will, and reads its index of held builds).
    const rows = yield* all(
      `SELECT h.worker, h.derivation
       FROM ${d.records([["worker", "text"], ["derivation", "text"]])} h
       CROSS JOIN Builds b
       WHERE b.derivation = h.derivation AND b.worker = h.worker
         AND b.status IN (-3, -1)`,
      [JSON.stringify(part.map((h) => [h.worker, h.derivation]))],
    );
    for (const row of rows) held.add(key(row.worker, row.derivation));
  }
  return holdings.map((h) => held.has(key(h.worker, h.derivation)));
}

/** Deletes worker `name`; returns how many of its builds were requeued. */
export function* removeWorker(d: Dialect, name: string): Step<number> {
  const requeued = yield* requeueWorker(d, name);
  yield* run("DELETE FROM Workers WHERE name = ?", [name]);
  return requeued;
}

/** See Store.expireWorkers. */
export function* expireWorkers(
  d: Dialect,
  now: number,
  sweep: WorkerSweep,
): Step<ExpiredWorker[]> {
  const silentFrom = sweep.silentFrom ?? 0;
  // A row silent since before `silentFrom` counts as heard then: it goes
  // once both its last contact and `silentFrom` are further back than its
  // timeout. Rows recording no timeout are judged by the sweep's; one
  // statement for both kinds. `last_seen + timeout` is written as in the
  // Workers_deadline index, for SQLite to use it.
  const legacyCutoff = now - sweep.timeoutSeconds > silentFrom
    ? now - sweep.timeoutSeconds
    : Number.MIN_SAFE_INTEGER;
  const rows = yield* all(
    `SELECT name, timeout FROM Workers
     WHERE (last_seen + timeout < ? AND timeout < ?)
       OR (timeout IS NULL AND last_seen < ?)
     ORDER BY name${d.forUpdate}`,
    [now, now - silentFrom, legacyCutoff],
  );
  if (rows.length > 1 && d.name === "postgres") {
    // The builds of all of them locked at once, in id order: worker by
    // worker, the second's could come before the first's.
    yield* all(
      `SELECT id FROM Builds WHERE ${HELD_BY_ANY(d)} ORDER BY id${d.forUpdate}`,
      [JSON.stringify(rows.map((row) => String(row.name)))],
    );
  }
  const expired: ExpiredWorker[] = [];
  for (const row of rows) {
    const name = String(row.name);
    expired.push({
      name,
      timeoutSeconds: nullableNumber(row.timeout),
      requeued: yield* removeWorker(d, name),
    });
  }
  return expired;
}

/** See Store.shortestWorkerTimeout. */
export function* shortestWorkerTimeout(_d: Dialect): Step<number | null> {
  const row = yield* get("SELECT min(timeout) AS timeout FROM Workers");
  return nullableNumber(row?.timeout);
}

/**
 * Records a clean stop of the dispatcher at `now`. No worker can reach a
 * stopped dispatcher, so the time until the next start is not silence.
 */
export function* stopWorkerClock(_d: Dialect, now: number): Step<void> {
  yield* run("DELETE FROM DispatcherStops");
  yield* run("INSERT INTO DispatcherStops (stopped_at) VALUES (?)", [now]);
}

/**
 * Credits every worker with the time since the last clean stop, so that a
 * worker's silence counts only while a dispatcher listened: a server
 * upgrade longer than the worker timeout takes no build away from a live
 * worker. After a crash there is no record and nothing is credited.
 * Returns the seconds credited.
 */
export function* resumeWorkerClock(_d: Dialect, now: number): Step<number> {
  const row = yield* get(
    "SELECT max(stopped_at) AS stopped_at FROM DispatcherStops",
  );
  yield* run("DELETE FROM DispatcherStops");
  if (row?.stopped_at == null) return 0;
  const stoppedAt = Number(row.stopped_at);
  if (now <= stoppedAt) return 0;
  yield* creditWorkers(_d, now - stoppedAt, stoppedAt);
  return now - stoppedAt;
}

/**
 * Adds `seconds` to the last contact of every worker last seen at or
 * before `before`: time in which no silence could be told (a stopped
 * dispatcher, a forward step of the wall clock). Returns how many.
 */
export function* creditWorkers(
  _d: Dialect,
  seconds: number,
  before: number,
): Step<number> {
  return yield* run(
    "UPDATE Workers SET last_seen = last_seen + ? WHERE last_seen <= ?",
    [seconds, before],
  );
}

/**
 * Checks the worker timeout written with a contact: null (judged by each
 * sweep's own) or whole seconds.
 * @throws {RangeError} otherwise.
 */
function checkTimeout(action: string, seconds: number | null): void {
  if (seconds === null) return;
  if (integer(action, "timeout", seconds) < 1) {
    throw new RangeError(
      `Cannot ${action}: timeout ${JSON.stringify(seconds)} is not positive`,
    );
  }
}
