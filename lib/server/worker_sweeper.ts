// Forgets workers that stopped talking and gives their builds back to the
// queue; optionally fails builds no worker could take for too long (C06).

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { BuildStatus, type Store } from "../store/types.ts";

export interface WorkerSweeperOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** A worker silent this long is gone; Cuirass uses 120 s. */
  timeoutSeconds: number;
  /** Time between sweeps; default a quarter of the timeout. */
  intervalMs?: number;
  /**
   * Longest time a build may wait while no live worker serves its system;
   * past it the build becomes failed-other ("no builder available"). Null
   * or absent: builds wait for ever, as in Cuirass.
   */
  maxWaitSeconds?: number | null;
}

/**
 * One sweep: expires silent workers (their submitted and started builds go
 * back to scheduled), then applies the no-builder wait limit. Returns the
 * expired workers' names.
 */
export async function sweepOnce(
  options: WorkerSweeperOptions,
  noWorkerSince: Map<string, number>,
): Promise<string[]> {
  const { store, clock, logger, timeoutSeconds } = options;
  const now = epochSeconds(clock);
  const gone = await store.expireWorkers(now - timeoutSeconds, now);
  for (const name of gone) {
    logger.warn("worker expired", { worker: name, timeout: timeoutSeconds });
  }
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
      if (
        build.status !== BuildStatus.scheduled ||
        now - Math.max(build.timestamp, since) < maxWait
      ) continue;
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
        waited: now - Math.max(build.timestamp, since),
        reason: `no builder available for ${system}`,
        recorded: result.changed,
      });
    }
  }
  return gone;
}

/**
 * Sweeps at once, then every `intervalMs` until `signal` aborts. The first
 * sweep does not wait: a server restarted more often than the interval
 * must still expire the workers that died meanwhile.
 */
export async function sweepWorkers(
  options: WorkerSweeperOptions,
  signal: AbortSignal,
): Promise<void> {
  const { clock, logger, timeoutSeconds } = options;
  const interval = options.intervalMs ?? (timeoutSeconds * 1000) / 4;
  const noWorkerSince = new Map<string, number>();
  while (!signal.aborted) {
    try {
      await sweepOnce(options, noWorkerSince);
    } catch (error) {
      logger.error("worker sweep failed", { error });
    }
    try {
      await clock.sleep(interval, signal);
    } catch {
      return;
    }
  }
}
