// The clock, injected wherever time is part of the logic (timeouts, sweeps).
//
// Two readings: `now()` is the wall clock, for the times that are stored
// and shown; NTP steps it forwards and backwards. `monotonic()` never
// steps, and is for deadlines and intervals: a wall-clock step must neither
// end a wait at once nor stretch it by the size of the step.

export interface Clock {
  /** Milliseconds since the Unix epoch (wall clock: it may step). */
  now(): number;
  /**
   * Milliseconds since an arbitrary origin, never stepping back or ahead
   * (stopped while the machine is suspended, as setTimeout is). Only the
   * difference of two readings means something.
   */
  monotonic(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when aborted. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** Seconds since the Unix epoch, as Cuirass stores times. */
export function epochSeconds(clock: Clock): number {
  return Math.floor(clock.now() / 1000);
}

/**
 * The longest delay one timer takes (2^31 - 1 ms, about 24.8 days): a
 * longer one fires at once.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      // Waits longer than one timer takes are chained timers.
      let left = ms;
      let timer = arm();
      signal?.addEventListener("abort", abort, { once: true });
      function arm() {
        const step = Math.min(left, MAX_TIMER_MS);
        left -= step;
        return setTimeout(done, step);
      }
      function done() {
        if (left > 0) {
          timer = arm();
          return;
        }
        signal?.removeEventListener("abort", abort);
        resolve();
      }
      function abort() {
        clearTimeout(timer);
        reject(signal!.reason);
      }
    }),
};

/**
 * Calls `action` every `intervalMs` until `signal` aborts or `action`
 * resolves to false. Each call is due an interval after the previous one
 * began, not after it ended (a call that ended late is followed at once):
 * the renewals of a heartbeat or a holder row take the time of their
 * issue, so waiting a whole interval after each answer let a live owner's
 * row age, on a database slow to answer, past the limit at which another
 * server takes it for dead.
 */
export async function everyInterval(
  clock: Clock,
  intervalMs: number,
  signal: AbortSignal,
  action: () => Promise<boolean>,
): Promise<void> {
  let due = clock.monotonic() + intervalMs;
  while (!signal.aborted) {
    const wait = due - clock.monotonic();
    if (wait > 0) {
      try {
        await clock.sleep(wait, signal);
      } catch {
        return;
      }
    }
    due = clock.monotonic() + intervalMs;
    if (!await action()) return;
  }
}

/**
 * A wake-up for a periodic wait: {@link Nudge.sleep} ends at the next
 * {@link Nudge.wake}, or at once if one came since the last sleep ended,
 * so that a wake-up that comes while the waiter works is not lost.
 */
export class Nudge {
  #pending = false;
  #cut: (() => void) | null = null;

  /** Ends the current sleep, or the next one at its start. */
  wake(): void {
    this.#pending = true;
    this.#cut?.();
  }

  /**
   * Sleeps `ms` on `clock`, unless woken first; rejects as the clock's
   * sleep does when `signal` aborts. The clock's sleep cut short is
   * aborted, not left pending.
   */
  async sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw signal.reason;
    if (!this.#pending) {
      const cut = new AbortController();
      this.#cut = () => cut.abort();
      try {
        await clock.sleep(ms, AbortSignal.any([signal, cut.signal]));
      } catch (error) {
        if (signal.aborted) throw error;
      } finally {
        this.#cut = null;
      }
    }
    this.#pending = false;
  }
}
