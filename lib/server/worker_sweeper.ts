// Forgets workers that stopped talking and gives their builds back to the queue.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/types.ts";

export interface WorkerSweeperOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** A worker silent this long is gone; Cuirass uses 120 s. */
  timeoutSeconds: number;
}

/** Expires silent workers every half timeout until `signal` aborts. */
export async function sweepWorkers(
  options: WorkerSweeperOptions,
  signal: AbortSignal,
): Promise<void> {
  const { store, clock, logger, timeoutSeconds } = options;
  while (!signal.aborted) {
    try {
      await clock.sleep((timeoutSeconds * 1000) / 2, signal);
    } catch {
      return;
    }
    try {
      const now = epochSeconds(clock);
      const gone = await store.expireWorkers(now - timeoutSeconds, now);
      for (const name of gone) {
        logger.warn("worker expired", {
          worker: name,
          timeout: timeoutSeconds,
        });
      }
    } catch (error) {
      logger.error("worker sweep failed", { error });
    }
  }
}
