// A deadline each sign of life from the daemon pushes back. The daemon
// kills a build silent for its max-silent-time itself and says so; a
// daemon that says nothing well past that (stuck on a store lock, its disk
// hung) is no longer following its builds, and whoever waits for their
// results must give up rather than wait for good.

import type { Clock } from "../clock.ts";

/**
 * How long past a build's max-silent-time the daemon may stay silent
 * before it is given up on: room for its own kill of a silent build, the
 * report of it, and a substitute's download that shows no progress.
 */
export const DAEMON_SILENCE_GRACE_SECONDS = 600;

/** Calls `onSilent` once no sign of life came for `limitMs`. */
export class SilenceWatchdog {
  readonly #clock: Clock;
  readonly #limitMs: number;
  readonly #stopped = new AbortController();
  #lastSign: number;

  /** Starts watching at once: the start counts as a sign of life. */
  constructor(
    clock: Clock,
    limitMs: number,
    onSilent: (silentMs: number) => void,
  ) {
    this.#clock = clock;
    this.#limitMs = limitMs;
    this.#lastSign = clock.monotonic();
    this.#watch(onSilent);
  }

  /** A sign of life: the deadline starts again. */
  alive(): void {
    this.#lastSign = this.#clock.monotonic();
  }

  /** Stops watching; `onSilent` is not called after this. */
  stop(): void {
    this.#stopped.abort();
  }

  async #watch(onSilent: (silentMs: number) => void): Promise<void> {
    const signal = this.#stopped.signal;
    while (!signal.aborted) {
      const silentMs = this.#clock.monotonic() - this.#lastSign;
      if (silentMs >= this.#limitMs) {
        onSilent(silentMs);
        return;
      }
      try {
        await this.#clock.sleep(this.#limitMs - silentMs, signal);
      } catch {
        return;
      }
    }
  }
}

/**
 * A watchdog on the daemon for builds whose max-silent-time is
 * `maxSilentSeconds`: `onSilent` once it said nothing for that and
 * `graceSeconds` more (default {@link DAEMON_SILENCE_GRACE_SECONDS}).
 * None without the limit (0): such a build may be silent for as long as
 * it likes.
 */
export function watchDaemon(
  clock: Clock,
  maxSilentSeconds: number,
  graceSeconds: number | undefined,
  onSilent: (silentMs: number) => void,
): SilenceWatchdog | null {
  if (maxSilentSeconds <= 0) return null;
  const grace = graceSeconds ?? DAEMON_SILENCE_GRACE_SECONDS;
  return new SilenceWatchdog(
    clock,
    (maxSilentSeconds + grace) * 1000,
    onSilent,
  );
}
