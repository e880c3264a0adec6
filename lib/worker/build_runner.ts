// Runs one build handed out by the server and streams its log there.

import type { Logger } from "../log.ts";
import { type Clock, systemClock } from "../clock.ts";
import type { Guix } from "../guix/guix_command.ts";
import { type LogUpload, openLogUpload } from "../protocol/log_upload.ts";
import { parseDerivationPath } from "../guix/store_path.ts";

export interface BuildJob {
  drv: string;
  /** Seconds; 0 for no limit. */
  timeout: number;
  /** Seconds without output; 0 for no limit. */
  maxSilent: number;
}

/** Why a build request is not run: the field to blame, its value named. */
export interface BuildRefusal {
  field: "drv" | "timeout" | "max-silent";
  reason: string;
}

export interface BuildRunnerOptions {
  guix: Guix;
  logger: Logger;
  /** The server's publish URL first, then any configured ones. */
  substituteUrls: string[];
  /** Where the log goes: the server's log channel. */
  logServer: { hostname: string; port: number };
  cores?: number;
  /** Aborting kills the build (a cancel from the server). */
  signal?: AbortSignal;
  /**
   * Extra tries when the daemon could not even obtain the derivation (the
   * server's publish server restarting, say): such a failure is the
   * farm's, not the package's, and must not fail its dependents. Default 4.
   */
  retries?: number;
  /** First wait before such a retry, doubling; default 2000 ms. */
  retryDelayMs?: number;
  clock?: Clock;
}

// What guix says when the build never started because the derivation (or
// its substitute source) was unavailable.
const UNAVAILABLE = [
  /cannot build missing derivation/,
  /path [`'‘"].*\.drv['’"]? is not valid/,
  /substitute: .*(connection refused|failed to connect|Connection reset)/i,
];

/**
 * Longest timeout or max-silent-time a worker takes from a server: a year
 * is far beyond any real build (Cuirass's default timeout is 20 hours), and
 * 0 already means "no limit".
 */
export const MAX_BUILD_LIMIT_SECONDS = 365 * 24 * 3600;

/**
 * Why `job` must not be run, or null when it may: its `drv` must be a
 * `.drv` item directly inside `storeDir`, its limits whole seconds from 0 to
 * MAX_BUILD_LIMIT_SECONDS. The request comes from the server (or from
 * whoever DNS-SD found), and its fields end up on `guix build`'s command
 * line: anything but a derivation could be an option such as `-e EXPR`.
 */
export function buildRefusal(
  job: BuildJob,
  storeDir: string,
): BuildRefusal | null {
  try {
    parseDerivationPath(job.drv, storeDir);
  } catch (error) {
    return { field: "drv", reason: (error as Error).message };
  }
  for (
    const [field, value] of [
      ["timeout", job.timeout],
      ["max-silent", job.maxSilent],
    ] as const
  ) {
    if (
      !Number.isInteger(value) || value < 0 || value > MAX_BUILD_LIMIT_SECONDS
    ) {
      return {
        field,
        reason:
          `Cannot use ${field} ${value}: not a whole number of seconds from 0 to ${MAX_BUILD_LIMIT_SECONDS}`,
      };
    }
  }
  return null;
}

/** Whether a failed build's stderr says the derivation was never obtained. */
export function isUnavailableDerivation(stderrTail: string): boolean {
  return UNAVAILABLE.some((pattern) => pattern.test(stderrTail));
}

/**
 * Builds `job.drv` with the local daemon, streaming its log to the server;
 * returns whether it succeeded. Never throws: any failure is a failed build.
 */
export async function runBuild(
  job: BuildJob,
  options: BuildRunnerOptions,
): Promise<boolean> {
  const { guix, logger } = options;
  const upload = await openLogUpload({
    hostname: options.logServer.hostname,
    port: options.logServer.port,
    drv: job.drv,
    logger,
  }).catch((error) => {
    // The log is lost but the build is not: carry on without it.
    logger.warn("log upload unavailable", { drv: job.drv, error });
    return null;
  });
  const forward = logForwarder(upload, logger, job.drv);
  const clock = options.clock ?? systemClock;
  const retries = options.retries ?? 4;
  let delay = options.retryDelayMs ?? 2000;
  try {
    let result;
    for (let attempt = 0;; attempt++) {
      result = await guix.build([job.drv], {
        timeout: job.timeout,
        maxSilentTime: job.maxSilent,
        substituteUrls: options.substituteUrls,
        fallback: true,
        cores: options.cores,
        onLog: forward.push,
        signal: options.signal,
      });
      if (
        result.ok || options.signal?.aborted || attempt >= retries ||
        !isUnavailableDerivation(result.stderrTail)
      ) break;
      logger.warn("build retried", {
        drv: job.drv,
        attempt: attempt + 1,
        reason: "derivation unavailable",
        delay,
      });
      await clock.sleep(delay, options.signal).catch(() => {});
      delay *= 2;
    }
    if (options.signal?.aborted) {
      logger.info("build killed", { drv: job.drv, exit: result.exitCode });
      return false;
    }
    if (!result.ok) {
      logger.info("build failed locally", {
        drv: job.drv,
        exit: result.exitCode,
        reason: result.stderrTail.trimEnd().split("\n").pop(),
      });
    }
    return result.ok;
  } catch (error) {
    logger.error("build crashed", { drv: job.drv, error });
    return false;
  } finally {
    await forward.finish();
  }
}

/**
 * Writes log chunks to the upload in order without blocking the build's
 * output reader; an upload error only stops the log.
 */
function logForwarder(upload: LogUpload | null, logger: Logger, drv: string) {
  let chain = Promise.resolve();
  let broken = upload === null;
  return {
    push(chunk: Uint8Array) {
      if (broken) return;
      const copy = chunk.slice();
      chain = chain.then(() => upload!.write(copy)).catch((error) => {
        if (!broken) logger.warn("log upload failed", { drv, error });
        broken = true;
      });
    },
    async finish() {
      await chain;
      await upload?.close().catch((error) => {
        logger.warn("log upload failed", { drv, error });
      });
    },
  };
}
