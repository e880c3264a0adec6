// Removes build logs older than the configured age, as Cuirass's
// `--log-expiry` does, so that the log cache does not grow forever.

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";

export interface LogExpiryOptions {
  /** The directory of `<hash>.log.gz` files. */
  cacheDir: string;
  /** Logs not modified for this long are removed. */
  maxAgeSeconds: number;
  clock: Clock;
  logger: Logger;
  /** Time between two sweeps; default one day. */
  periodSeconds?: number;
}

const LOG_NAME_REGEXP = /^[0-9a-df-np-sv-z]{32}\.log\.gz$/;

/**
 * Removes the expired logs once; returns how many went. Only files named
 * like build logs are touched, whatever else shares the directory.
 */
export async function expireLogs(options: LogExpiryOptions): Promise<number> {
  const { cacheDir, maxAgeSeconds, clock } = options;
  const cutoff = clock.now() - maxAgeSeconds * 1000;
  let removed = 0;
  for await (const entry of Deno.readDir(cacheDir)) {
    if (!entry.isFile || !LOG_NAME_REGEXP.test(entry.name)) continue;
    const path = `${cacheDir}/${entry.name}`;
    try {
      const info = await Deno.stat(path);
      if ((info.mtime?.getTime() ?? Infinity) > cutoff) continue;
      await Deno.remove(path);
      removed++;
    } catch (error) {
      // Gone meanwhile, or unreadable: the next sweep will see.
      if (!(error instanceof Deno.errors.NotFound)) {
        options.logger.warn("log expiry skipped", { path, error });
      }
    }
  }
  return removed;
}

/** Sweeps at once, then every period, until `signal` aborts. */
export async function runLogExpiry(
  options: LogExpiryOptions,
  signal: AbortSignal,
): Promise<void> {
  const { clock, logger } = options;
  while (!signal.aborted) {
    try {
      const removed = await expireLogs(options);
      if (removed > 0) {
        logger.info("logs expired", {
          removed,
          age: options.maxAgeSeconds,
        });
      }
    } catch (error) {
      logger.error("log expiry failed", { error });
    }
    try {
      await clock.sleep((options.periodSeconds ?? 86400) * 1000, signal);
    } catch {
      return;
    }
  }
}
