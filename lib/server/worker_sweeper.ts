// Forgets workers that stopped talking and gives their builds back to the
// queue; optionally fails builds no worker could take for too long (C06).

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { BuildStatus, type Store } from "../store/types.ts";

export interface WorkerSweeperOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /**
   * This server's worker timeout (Cuirass uses 120 s): a worker silent
   * this long is gone. It judges the rows this server wrote and those that
   * record no timeout; the rows other servers sharing the database wrote
   * are judged by theirs (see Store.expireWorkers).
   */
  timeoutSeconds: number;
  /**
   * Time between sweeps; default a quarter of the shortest timeout: this
   * server's, or one the workers' rows record (see sweepInterval).
   */
  intervalMs?: number;
  /**
   * Longest time a build may wait while no live worker serves its system;
   * past it the build becomes failed-other ("no builder available"). Null
   * or absent: builds wait for ever, as in Cuirass.
   */
  maxWaitSeconds?: number | null;
}

/**
 * The shortest time between two sweeps set by another server's timeout
 * (see sweepInterval): a row recording a timeout of a few seconds (a
 * mistake; workers ping every minute) makes one sweep a second, not a
 * stream of them.
 */
export const MIN_SWEEP_INTERVAL_MS = 1000;
/** A forward step of the wall clock smaller than this is not one. */
const STEP_TOLERANCE_MS = 1000;
/** Forward steps remembered for the waits of builds queued before them. */
const MAX_STEPS = 64;

/** What one sweep leaves to the next. */
export class SweepState {
  /**
   * Per system, since when no live worker serves it: wall-clock seconds,
   * moved ahead with each forward step seen since.
   */
  readonly noWorkerSince = new Map<string, number>();
  /** The two clock readings of the previous sweep. */
  last: { wall: number; monotonic: number } | null = null;
  /**
   * The forward steps of the wall clock seen so far: a build queued at or
   * before `before` has waited `seconds` less than its timestamp says.
   */
  readonly steps: { before: number; seconds: number }[] = [];
  /**
   * Epoch seconds from which worker silence counts: the last sweep that
   * found the database failing, as no worker could be heard meanwhile.
   */
  silentFrom = 0;

  /** `timestamp` moved ahead by the forward steps that came after it. */
  queuedAt(timestamp: number): number {
    let at = timestamp;
    for (const step of this.steps) {
      if (timestamp <= step.before) at += step.seconds;
    }
    return at;
  }
}

/**
 * Compares how far the wall clock moved since the last sweep with how
 * much time passed (the monotonic clock). A forward step (NTP, a resume
 * from suspend) is no one's silence: the workers last seen before it are
 * credited with it, and the no-builder waits are moved past it. A step
 * back is only logged: it can make an expiry late by its size, never
 * early (the contacts after it cannot be told from those before).
 */
async function noticeSteps(
  options: WorkerSweeperOptions,
  state: SweepState,
  wall: number,
  monotonic: number,
): Promise<void> {
  const last = state.last;
  const stepMs = last === null
    ? 0
    : (wall - last.wall) - (monotonic - last.monotonic);
  if (stepMs <= -STEP_TOLERANCE_MS) {
    options.logger.warn("wall clock stepped", {
      seconds: Math.round(stepMs / 1000),
    });
  }
  if (stepMs < STEP_TOLERANCE_MS) {
    state.last = { wall, monotonic };
    return;
  }
  // Taken as seen only once credited: a failing store sees it next time.
  const seconds = Math.round(stepMs / 1000);
  const before = Math.floor(wall / 1000) - seconds;
  const workers = await options.store.creditWorkers(seconds, before);
  for (const [system, since] of state.noWorkerSince) {
    state.noWorkerSince.set(system, since + seconds);
  }
  state.last = { wall, monotonic };
  state.steps.push({ before, seconds });
  if (state.steps.length > MAX_STEPS) state.steps.shift();
  options.logger.warn("wall clock stepped", { seconds, credited: workers });
}

/**
 * One sweep: expires silent workers (their submitted and started builds go
 * back to scheduled), then applies the no-builder wait limit. Returns the
 * expired workers' names. Pass the same `state` to each sweep, so that
 * steps of the wall clock between them are seen.
 */
export async function sweepOnce(
  options: WorkerSweeperOptions,
  state: SweepState = new SweepState(),
): Promise<string[]> {
  const { store, clock, logger, timeoutSeconds } = options;
  const wall = clock.now();
  await noticeSteps(options, state, wall, clock.monotonic());
  const noWorkerSince = state.noWorkerSince;
  const now = Math.floor(wall / 1000);
  const expired = await store.expireWorkers(now, {
    timeoutSeconds,
    silentFrom: state.silentFrom,
  });
  for (const worker of expired) {
    logger.warn("worker expired", {
      worker: worker.name,
      timeout: worker.timeoutSeconds ?? timeoutSeconds,
      requeued: worker.requeued,
    });
  }
  const gone = expired.map((worker) => worker.name);
  const maxWait = options.maxWaitSeconds;
  if (maxWait == null) return gone;
  const served = new Set(
    (await store.listWorkers()).flatMap((worker) => worker.systems),
  );
  const waiting = await store.queueLengthBySystem();
  for (const system of [...noWorkerSince.keys()]) {
    if (served.has(system) || !waiting.has(system)) {
      noWorkerSince.delete(system);
    }
  }
  for (const [system, count] of waiting) {
    if (served.has(system) || count === 0) continue;
    const since = noWorkerSince.get(system) ?? now;
    noWorkerSince.set(system, since);
    if (now - since < maxWait) continue;
    const builds = await store.queue({ system }, 1000);
    for (const build of builds) {
      const waited = now - Math.max(state.queuedAt(build.timestamp), since);
      if (build.status !== BuildStatus.scheduled || waited < maxWait) {
        continue;
      }
      const result = await store.completeBuild(
        build.derivation,
        BuildStatus.failedOther,
        // Not a failure of the build itself: its dependents keep waiting
        // for it (restarting it once a builder is back lets them run).
        { now, propagate: false },
      );
      logger.error("build expired", {
        drv: build.derivation,
        system,
        waited,
        reason: `no builder available for ${system}`,
        recorded: result.changed,
      });
    }
  }
  return gone;
}

/**
 * The time until the next sweep, given the shortest timeout the workers'
 * rows record (null: none): a quarter of the shortest of it and this
 * server's, but a quarter of another server's no shorter than
 * MIN_SWEEP_INTERVAL_MS. Rows carry the timeout of the server that heard
 * them, and that server may have stopped, leaving them to this one's
 * sweeps: at a quarter of a long timeout of its own, a worker of a short
 * one would be forgotten (its builds requeued) that much late.
 */
export function sweepInterval(
  timeoutSeconds: number,
  shortestRecorded: number | null,
): number {
  const own = (timeoutSeconds * 1000) / 4;
  if (shortestRecorded === null) return own;
  return Math.min(
    own,
    Math.max(MIN_SWEEP_INTERVAL_MS, (shortestRecorded * 1000) / 4),
  );
}

/**
 * Sweeps at once, then every `intervalMs` (see sweepInterval) until
 * `signal` aborts. The first sweep does not wait: a server restarted more
 * often than the interval must still expire the workers that died
 * meanwhile.
 */
export async function sweepWorkers(
  options: WorkerSweeperOptions,
  signal: AbortSignal,
): Promise<void> {
  const { clock, logger, store, timeoutSeconds } = options;
  let interval = options.intervalMs ?? sweepInterval(timeoutSeconds, null);
  const state = new SweepState();
  while (!signal.aborted) {
    try {
      await sweepOnce(options, state);
      if (options.intervalMs === undefined) {
        interval = sweepInterval(
          timeoutSeconds,
          await store.shortestWorkerTimeout(),
        );
      }
    } catch (error) {
      // The database is likely down: then no worker could be heard (their
      // pings wait in the dispatcher), so none is taken for gone until it
      // has had a whole timeout of its own to be heard once the sweeps
      // work again.
      state.silentFrom = epochSeconds(clock);
      logger.error("worker sweep failed", {
        error,
        silentFrom: new Date(state.silentFrom * 1000).toISOString(),
      });
    }
    const asleep = clock.monotonic();
    try {
      await clock.sleep(interval, signal);
    } catch {
      return;
    }
    noticePause(
      options,
      state,
      clock.monotonic() - asleep - interval,
      interval,
    );
  }
}

/**
 * Shortest lateness of a sweep's wake-up taken for a pause of this
 * process: below it, a loaded event loop's jitter.
 */
const MIN_PAUSE_MS = 5000;

/**
 * A wake-up `lateMs` past its time by more than the sweep `interval` means
 * this process did not run meanwhile (SIGSTOP, a frozen virtual machine,
 * an event loop held): the workers' messages waited unread, in the
 * sockets, for as long. The monotonic clock went on, so noticeSteps sees
 * no step; without this the sweep that follows, run before those messages
 * are read, would take live workers for gone and requeue their builds.
 * Their silence counts from now, as after a failing store.
 */
function noticePause(
  options: WorkerSweeperOptions,
  state: SweepState,
  lateMs: number,
  interval: number,
): void {
  if (lateMs < Math.max(MIN_PAUSE_MS, interval)) return;
  state.silentFrom = epochSeconds(options.clock);
  options.logger.warn("sweep woke late", {
    seconds: Math.round(lateMs / 1000),
    reason: "this process was paused; no worker could be heard meanwhile",
  });
}
