// Removes build logs older than the configured age, as Cuirass's
// `--log-expiry` does, so that the log cache does not grow forever.

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { recoverLeftUploads } from "../protocol/left_uploads.ts";

export interface LogExpiryOptions {
  /** The directory of `<hash>.log.gz` files. */
  cacheDir: string;
  /** Logs not modified for this long are removed. */
  maxAgeSeconds: number;
  clock: Clock;
  logger: Logger;
  /** Time between two sweeps; default one day. */
  periodSeconds?: number;
  /**
   * Upload files (`<hash>.log.gz.<id>.part`) not written for this long are
   * what a crashed receiver left: no upload writes them any more (the
   * receiver drops one idle for two hours, its default). Default 2 hours.
   */
  leftUploadSeconds?: number;
}

const LOG_NAME_REGEXP = /^[0-9a-df-np-sv-z]{32}\.log\.gz$/;

/**
 * Removes the expired logs, and the upload files a crash left behind, once;
 * returns how many went. Only files named like build logs or their uploads
 * are touched, whatever else shares the directory. (The receiver sweeps
 * left uploads only when it starts: a server that crashed once and then
 * runs for months would keep them; and in local mode this sweep, run as the
 * server starts, is what repairs the logs a dead server left cut short.)
 */
export async function expireLogs(options: LogExpiryOptions): Promise<number> {
  const { cacheDir, maxAgeSeconds, clock } = options;
  const cutoff = clock.now() - maxAgeSeconds * 1000;
  const left = await recoverLeftUploads(cacheDir, {
    idleMs: (options.leftUploadSeconds ?? 2 * 3600) * 1000,
    now: clock.now(),
    logger: options.logger,
  });
  let removed = left.removed;
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
