// Case C14 in remote mode: a derivation gone from the server's store (its
// GC root removed, then garbage-collected) cannot be built or fetched. Its
// build fails alone, failed-other, with the reason local mode gives; its
// dependents become failed-dependency as after any failure, and are
// scheduled again when it is restarted once the derivation is back.

import type { Logger } from "../log.ts";
import { isDerivationPath } from "../guix/store_path.ts";
import { logFileName } from "../protocol/log_header.ts";
import { BuildStatus, type Store } from "../store/types.ts";

/** The reason given, in logs and in the build's log. */
export const MISSING_DERIVATION = "derivation missing from store";

/** A build just handed to a worker, or reported by it. */
export interface HandedBuild {
  drv: string;
  worker: string;
  /** Seconds since the epoch. */
  now: number;
}

export interface FailIfMissingOptions {
  /** Whether a store item is present (see {@link inStore}). */
  inStore: (path: string) => Promise<boolean>;
  storeDir: string;
  logger: Logger;
  /**
   * Where build logs go: given when no worker sent one, the reason
   * becomes the build's log there.
   */
  logCacheDir?: string;
}

/**
 * Whether store item `path` is present in this machine's store. Only a
 * path surely absent gives false: any other error (a permission) counts as
 * present, so that no build fails for a check that could not be made.
 * Synchronous inside: the dispatcher asks for every build it hands out,
 * one after another within a turn, and a local lstat costs microseconds
 * where a trip through the thread pool would keep the turn open longer.
 */
export function inStore(path: string): Promise<boolean> {
  try {
    Deno.lstatSync(path);
    return Promise.resolve(true);
  } catch (error) {
    return Promise.resolve(!(error instanceof Deno.errors.NotFound));
  }
}

/** The line a build's log gets when its derivation is missing. */
function missingDerivationLine(drv: string): string {
  return `lorica: ${MISSING_DERIVATION}: ${drv}\n`;
}

/**
 * Fails the build of `drv`, which `worker` was handed, when `drv` is no
 * longer in the store: failed-other, and its dependents failed-dependency.
 * Returns whether the derivation was missing.
 */
export async function failIfMissing(
  store: Store,
  { drv, worker, now }: HandedBuild,
  options: FailIfMissingOptions,
): Promise<boolean> {
  const { logger, storeDir, logCacheDir } = options;
  if (!isDerivationPath(drv, storeDir) || await options.inStore(drv)) {
    return false;
  }
  if (logCacheDir !== undefined) {
    const log = logFileName(logCacheDir, storeDir, drv);
    const written = await writeMissingDerivationLog(log, drv).then(
      () => true,
      (error) => {
        logger.warn("build log not written", { drv, log, error });
        return false;
      },
    );
    if (written) await store.markStarted(drv, worker, log, now);
  }
  const result = await store.completeBuild(drv, BuildStatus.failedOther, {
    worker,
    now,
  });
  logger.warn("build failed", {
    drv,
    worker,
    reason: MISSING_DERIVATION,
    recorded: result.changed,
    dependents: result.dependentsFailed,
  });
  return true;
}

/** Writes the build log of a missing `drv` (gzip) to `path`. */
export function writeMissingDerivationLog(
  path: string,
  drv: string,
): Promise<void> {
  return writeGzipText(path, missingDerivationLine(drv));
}

/** Writes `text` gzip-compressed to `path`, making its directory. */
async function writeGzipText(path: string, text: string): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  const compressed = await new Response(
    new Blob([text]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
  await Deno.writeFile(path, compressed);
}
