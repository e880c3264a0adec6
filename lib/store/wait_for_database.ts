// Opening a database that is not up yet. A server started before its
// PostgreSQL (at boot, or while the database restarts) waits for it rather
// than exit, which under systemd would start it again every few seconds,
// each time with the same error in the journal.

import { isDatabaseUnavailable } from "./unavailable.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";

/** Options of {@link waitForDatabase}. */
export interface WaitForDatabaseOptions {
  clock: Clock;
  logger: Logger;
  /** The database as the log shows it, its password hidden (unquoted). */
  shown: string;
  /** Ends the wait, also during an attempt. */
  signal: AbortSignal;
  /** Delay before the second attempt; default 1000, doubling each time. */
  firstDelayMs?: number;
  /** Longest delay between two attempts; default 30000. */
  maxDelayMs?: number;
}

/**
 * Runs `open` until it succeeds, again after a growing delay each time it
 * throws what says the database is unavailable (down, unreachable,
 * starting up: see {@link isDatabaseUnavailable}). Resolves null once
 * `signal` aborts; what an attempt still under way then opens is closed.
 * @throws what `open` throws for any other reason (a bad URL, a refused
 * password, a schema newer than this program's).
 */
export async function waitForDatabase<T extends { close(): Promise<void> }>(
  open: () => Promise<T>,
  options: WaitForDatabaseOptions,
): Promise<T | null> {
  const {
    clock,
    logger,
    shown,
    signal,
    firstDelayMs = 1000,
    maxDelayMs = 30_000,
  } = options;
  for (let delay = firstDelayMs;; delay = Math.min(delay * 2, maxDelayMs)) {
    if (signal.aborted) return null;
    const attempt = open();
    try {
      const opened = await untilAborted(attempt, signal);
      if (opened !== null) return opened;
      attempt.then((late) => late.close()).catch(() => {});
      return null;
    } catch (error) {
      if (!isDatabaseUnavailable(error)) throw error;
      logger.warn("database unavailable", {
        database: shown,
        error,
        retryMs: delay,
      });
    }
    try {
      await clock.sleep(delay, signal);
    } catch {
      return null;
    }
  }
}

/** `attempt`'s value, or null as soon as `signal` aborts. */
function untilAborted<T>(
  attempt: Promise<T>,
  signal: AbortSignal,
): Promise<T | null> {
  return new Promise((resolve, reject) => {
    const abort = () => resolve(null);
    signal.addEventListener("abort", abort, { once: true });
    attempt.then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", abort)
    );
  });
}
