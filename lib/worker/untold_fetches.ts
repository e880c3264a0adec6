// The successes reported to a server that does not say when it fetched
// their outputs: a Cuirass server, or a Lorica one reached with
// --no-extensions (no "outputs-fetched"). Its fetcher reads them from the
// worker's publish server as the report arrives, so a draining worker keeps
// that server up for a while after the last of them rather than fail that
// fetch, and the build be done again (worker.ts). A server that says when
// is waited for instead (outputs_being_fetched.ts).

import type { Clock } from "../clock.ts";

/**
 * How long the publish server stays up after the last success reported to
 * such a server [30 s]. Both fetchers start as the report arrives (Cuirass
 * hands it to a pool of 8 fetches; a Lorica server tries at once, and
 * again after waits of 1, 2, 4, 8 and 16 s), and the narinfo and archive
 * of most outputs come in seconds on a farm's network; Cuirass itself
 * calls a fetch slow past 60 s. It is also the default --drain-grace: a success reported at
 * the drain timeout is covered within the 60 s that the worker's systemd
 * unit leaves between that timeout (240 s) and its TimeoutStopSec (300 s).
 * Not an option: the drain timeout and grace, which also end this wait,
 * are the operator's knobs for how long a stop may take.
 */
export const UNTOLD_FETCH_WAIT_MS = 30_000;

/** The last success reported to a server that does not say its fetches. */
export class UntoldFetches {
  readonly #clock: Clock;
  #last: { drv: string; at: number } | undefined;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** The success of `drv` was just reported to such a server. */
  reported(drv: string): void {
    // Monotonic: a step of the wall clock must not end or stretch the wait.
    this.#last = { drv, at: this.#clock.monotonic() };
  }

  /**
   * The wait still owed to the fetch of the last success reported: until
   * `waitMs` after its report, but no later than `deadline` (a monotonic
   * reading). Undefined when nothing is owed any more.
   */
  owed(
    deadline: number,
    waitMs = UNTOLD_FETCH_WAIT_MS,
  ): { drv: string; ms: number } | undefined {
    if (this.#last === undefined) return undefined;
    const end = Math.min(this.#last.at + waitMs, deadline);
    const ms = end - this.#clock.monotonic();
    return ms > 0 ? { drv: this.#last.drv, ms } : undefined;
  }
}
