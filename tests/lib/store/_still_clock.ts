// Waiting without time: for rests that only a stop may end.

import type { Clock } from "../../../lib/clock.ts";

/**
 * A clock on which no time passes: its sleeps end only when their signal
 * aborts (rejecting with its reason, as the real clock's do).
 */
export const stillClock: Pick<Clock, "sleep"> = {
  sleep: (_ms, signal) =>
    new Promise((_resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    }),
};

/**
 * Lets every task already due run (one turn of the event loop), so that
 * what was bound to end by now has ended.
 */
export function tasksDueRun(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
