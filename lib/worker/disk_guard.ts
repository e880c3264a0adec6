// Keeps a worker from taking builds while its disks are nearly full (C09).

import fs from "node:fs";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";

export interface DiskGuardOptions {
  /** Directories whose file systems must have room: the store and TMPDIR. */
  paths: string[];
  /** Free bytes each needs; Cuirass's `--minimum-disk-space` (default 5 GiB). */
  minimumBytes: number;
  /** Free bytes available to unprivileged users; default statfs. */
  freeBytes?: (path: string) => Promise<number>;
  clock: Clock;
  logger: Logger;
  /** At most one "disk space low" line per period (the request period). */
  logPeriodMs: number;
}

/** Free bytes available to unprivileged users on the file system of `path`. */
export async function statfsFreeBytes(path: string): Promise<number> {
  const stats = await fs.promises.statfs(path);
  return Number(stats.bavail) * Number(stats.bsize);
}

/**
 * Answers "is the disk low?" for every session of a worker, checking at
 * most once a second and logging at most one line per period while low.
 */
export class DiskGuard {
  readonly #options: DiskGuardOptions;
  #checkedAt = -Infinity;
  #low: Promise<boolean> = Promise.resolve(false);
  #loggedAt = -Infinity;
  #wasLow = false;

  constructor(options: DiskGuardOptions) {
    this.#options = options;
  }

  /** True when any path has less free space than the minimum. */
  low(): Promise<boolean> {
    // Monotonic: a step of the wall clock back must not freeze the answer.
    const now = this.#options.clock.monotonic();
    if (now - this.#checkedAt >= 1000) {
      this.#checkedAt = now;
      this.#low = this.#check();
    }
    return this.#low;
  }

  async #check(): Promise<boolean> {
    const { paths, minimumBytes, logger, clock, logPeriodMs } = this.#options;
    const freeBytes = this.#options.freeBytes ?? statfsFreeBytes;
    for (const path of paths) {
      let free: number;
      try {
        free = await freeBytes(path);
      } catch (error) {
        // An unreadable path must not stop the worker for ever.
        logger.warn("disk space unknown", { path, error });
        continue;
      }
      if (free < minimumBytes) {
        const now = clock.monotonic();
        if (now - this.#loggedAt >= logPeriodMs) {
          this.#loggedAt = now;
          logger.warn("disk space low", {
            path,
            free,
            minimum: minimumBytes,
            action: "no work requested until space is freed",
          });
        }
        this.#wasLow = true;
        return true;
      }
    }
    if (this.#wasLow) {
      this.#wasLow = false;
      this.#loggedAt = -Infinity;
      logger.info("disk space ok", { minimum: minimumBytes });
    }
    return false;
  }
}
