// Fetches a finished build's outputs from its worker before calling it a success.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { BuildStatus, type Store } from "../store/types.ts";
import type { Guix } from "../guix/guix_command.ts";

export interface FetchRequest {
  drv: string;
  /** The worker's publish URL. */
  url: string;
  worker: string;
}

export interface OutputFetcherOptions {
  store: Store;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Fetches running at once; default 8. */
  concurrency?: number;
  /** Tries before the build fails; default 6. */
  attempts?: number;
  /** First retry delay, doubled each time; default 1000 ms. */
  retryDelayMs?: number;
}

/**
 * A bounded queue of output fetches. A build becomes succeeded only once
 * its outputs are valid in the server's store; when they stay unavailable
 * after every retry it becomes failed-other, never a false success.
 */
export class OutputFetcher {
  readonly #options: Required<OutputFetcherOptions>;
  readonly #waiting: FetchRequest[] = [];
  readonly #abort = new AbortController();
  #running = 0;
  #idle = Promise.withResolvers<void>();

  constructor(options: OutputFetcherOptions) {
    this.#options = {
      concurrency: 8,
      attempts: 6,
      retryDelayMs: 1000,
      ...options,
    };
    this.#idle.resolve();
  }

  /** Number of fetches queued or running. */
  get pending(): number {
    return this.#waiting.length + this.#running;
  }

  /** Queues a fetch; returns at once. */
  enqueue(request: FetchRequest): void {
    if (this.#abort.signal.aborted) return;
    if (this.pending === 0) this.#idle = Promise.withResolvers<void>();
    this.#waiting.push(request);
    this.#pump();
  }

  /** Resolves when no fetch is queued or running. */
  idle(): Promise<void> {
    return this.#idle.promise;
  }

  /** Abandons queued fetches and waits for running ones to stop. */
  async close(): Promise<void> {
    this.#abort.abort(new Error("output fetcher closed"));
    this.#waiting.length = 0;
    if (this.#running === 0) this.#idle.resolve();
    await this.#idle.promise;
  }

  #pump() {
    while (
      this.#running < this.#options.concurrency && this.#waiting.length > 0
    ) {
      const request = this.#waiting.shift()!;
      this.#running++;
      this.#fetch(request)
        .catch((error) =>
          this.#options.logger.error("output fetch crashed", {
            drv: request.drv,
            error,
          })
        )
        .finally(() => {
          this.#running--;
          if (this.pending === 0) this.#idle.resolve();
          else this.#pump();
        });
    }
  }

  async #fetch({ drv, url, worker }: FetchRequest) {
    const { store, guix, clock, logger, attempts, retryDelayMs } =
      this.#options;
    const signal = this.#abort.signal;
    const build = await store.getBuildByDerivation(drv);
    if (
      build === null || build.worker !== worker ||
      (build.status !== BuildStatus.started &&
        build.status !== BuildStatus.submitted)
    ) {
      logger.warn("result ignored", {
        drv,
        worker,
        reason: "build not running on this worker",
      });
      return;
    }
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        await guix.substitute(drv, url, signal);
        const result = await store.completeBuild(drv, BuildStatus.succeeded, {
          worker,
          now: epochSeconds(clock),
        });
        logger.info("build succeeded", {
          drv,
          worker,
          recorded: result.changed,
        });
        return;
      } catch (error) {
        if (signal.aborted) return;
        logger.warn("output fetch failed", { drv, url, attempt, error });
        if (attempt < attempts) {
          await clock.sleep(retryDelayMs * 2 ** (attempt - 1), signal)
            .catch(() => {});
          if (signal.aborted) return;
        }
      }
    }
    const result = await store.completeBuild(drv, BuildStatus.failedOther, {
      worker,
      now: epochSeconds(clock),
    });
    logger.error("outputs unavailable", {
      drv,
      url,
      worker,
      attempts,
      recorded: result.changed,
    });
  }
}
