// Fetches a finished build's outputs from its worker before calling it a success.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  type Build,
  BuildStatus,
  type OutputFetch,
  type Store,
  StoreError,
} from "../store/types.ts";
import type { Guix } from "../guix/guix_command.ts";
import { failIfMissing } from "./missing_derivation.ts";
import {
  isDatabaseUnavailable,
  isQueryCanceled,
} from "../store/unavailable.ts";
import { isTransactionConflict } from "../store/conflict.ts";

/** A fetch of the outputs of `drv`, reported built by `worker` at `url`. */
export type FetchRequest = OutputFetch;

export interface OutputFetcherOptions {
  store: Store;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Fetches running at once; default 8. */
  concurrency?: number;
  /** First retry delay, doubled each time; default 1000 ms. */
  retryDelayMs?: number;
  /** Longest delay between two tries; default 30 s. */
  maxRetryDelayMs?: number;
  /**
   * Time from the worker's report after which outputs still unavailable
   * fail the build (failed-other); default 10 min.
   */
  deadlineMs?: number;
  /** Time allowed for one narinfo request; default 10 s. */
  narinfoTimeoutMs?: number;
  /** HTTP client for narinfo probes; default the global fetch. */
  fetch?: typeof fetch;
  /**
   * A caching publish server (`guix publish --cache`) asked for each new
   * output's narinfo once the build succeeded, so that it prepares the
   * archive before clients ask, as Cuirass's `--trigger-substitute-url`.
   */
  triggerUrl?: string | null;
  /**
   * Called once a build became succeeded, its outputs in this store (build
   * products); what it throws is logged, the build stays succeeded.
   */
  onSucceeded?: (build: Build) => Promise<unknown>;
  /**
   * Whether a derivation is in this store. When given, a build whose
   * derivation is gone when its outputs are to be fetched (case C14)
   * fails at once, failed-other, instead of being retried until the
   * deadline; absent, never looked for.
   */
  inStore?: ((path: string) => Promise<boolean>) | null;
  /** The store directory (with `inStore`); default "/gnu/store". */
  storeDir?: string;
}

/**
 * When a fetch's first try began (monotonic ms), once its build was found
 * its worker's: its deadline counts from then, however often it is run.
 */
interface FirstTry {
  at?: number;
}

/**
 * A store step of a fetch failed for another reason than the database
 * being unavailable: the fetch stops, its saved record kept.
 */
class FetchStoppedError extends Error {
  constructor(drv: string, step: string, options: ErrorOptions) {
    super(
      `Cannot go on with the output fetch of ${JSON.stringify(drv)}: ` +
        `its store step ${JSON.stringify(step)} failed`,
      options,
    );
    this.name = "FetchStoppedError";
  }
}

/** The key of `worker`'s result of `drv` among the fetches. */
function fetchKey(drv: string, worker: string): string {
  return `${worker}\n${drv}`;
}

/**
 * A bounded queue of output fetches. A build becomes succeeded only once
 * its outputs are valid in the server's store. Until the worker's publish
 * server lists every output's narinfo (a caching `guix publish` answers 404
 * while it bakes, case C12), the fetcher asks it directly, with back-off,
 * and only then lets the daemon substitute: so the daemon never caches a
 * negative answer. When outputs stay unavailable past the deadline the build
 * becomes failed-other, never a false success.
 */
export class OutputFetcher {
  readonly #options: Required<OutputFetcherOptions>;
  readonly #waiting: FetchRequest[] = [];
  /** The fetches queued or running, by worker and drv (see fetchKey). */
  readonly #active = new Map<string, FetchRequest>();
  readonly #abort = new AbortController();
  #running = 0;
  #idle = Promise.withResolvers<void>();
  /**
   * Running fetches stopped before they recorded anything: by close(), or
   * by a store step that failed for good (see #stored).
   */
  readonly #interrupted: FetchRequest[] = [];
  /**
   * Fetches that recorded their build's end, whose saved record the store
   * forgot with it (Store.completeBuild): none to forget at their end.
   */
  readonly #recorded = new WeakSet<FetchRequest>();
  /** Told of each fetch that ended (see {@link watchEnds}). */
  readonly #endWatchers = new Set<(request: FetchRequest) => void>();

  constructor(options: OutputFetcherOptions) {
    this.#options = {
      ...options,
      concurrency: options.concurrency ?? 8,
      retryDelayMs: options.retryDelayMs ?? 1000,
      maxRetryDelayMs: options.maxRetryDelayMs ?? 30_000,
      deadlineMs: options.deadlineMs ?? 10 * 60 * 1000,
      narinfoTimeoutMs: options.narinfoTimeoutMs ?? 10_000,
      fetch: options.fetch ?? ((input, init) => globalThis.fetch(input, init)),
      triggerUrl: options.triggerUrl ?? null,
      onSucceeded: options.onSucceeded ?? (() => Promise.resolve()),
      inStore: options.inStore ?? null,
      storeDir: options.storeDir ?? "/gnu/store",
    };
    this.#idle.resolve();
  }

  /** Number of fetches queued or running. */
  get pending(): number {
    return this.#waiting.length + this.#running;
  }

  /**
   * Whether a fetch of `drv` is queued or running; with `worker`, one of
   * that worker's result.
   */
  has(drv: string, worker?: string): boolean {
    if (worker !== undefined) return this.#active.has(fetchKey(drv, worker));
    return [...this.#active.values()].some((request) => request.drv === drv);
  }

  /**
   * Queues a fetch and returns at once: true when queued, false when the
   * same worker's result of that drv is queued or running already (or the
   * fetcher closed). Another worker's result of the same drv (the build
   * was handed out again meanwhile) is fetched too, and drops nothing: of
   * the two, only the worker the store says holds the build is fetched
   * from, the other stops at its ownership check. Which one is stale only
   * the store knows, not the order of the reports.
   */
  enqueue(request: FetchRequest): boolean {
    const key = fetchKey(request.drv, request.worker);
    if (this.#abort.signal.aborted || this.#active.has(key)) return false;
    if (this.pending === 0) this.#idle = Promise.withResolvers<void>();
    this.#active.set(key, request);
    this.#waiting.push(request);
    this.#pump();
    return true;
  }

  /**
   * Queues the fetches the store says are owed (saved with the reports of
   * an earlier run, which ended before they did); returns how many.
   */
  async resumeOwed(): Promise<number> {
    const owed = await this.#options.store.owedFetches();
    for (const request of owed) this.enqueue(request);
    return owed.length;
  }

  /**
   * Calls `watcher` with each fetch that ends from now until `signal`
   * aborts: its build recorded (succeeded, or failed-other past the
   * deadline) or found no longer its worker's. Not with those close()
   * stops, which a later start resumes. Called once the fetch is no longer
   * active ({@link has} says false), so that no one hears of its end and
   * then sees it still under way.
   */
  watchEnds(
    watcher: (request: FetchRequest) => void,
    signal: AbortSignal,
  ): void {
    if (signal.aborted) return;
    this.#endWatchers.add(watcher);
    signal.addEventListener(
      "abort",
      () => this.#endWatchers.delete(watcher),
      { once: true },
    );
  }

  /** Resolves when no fetch is queued or running. */
  idle(): Promise<void> {
    return this.#idle.promise;
  }

  /**
   * Stops queued and running fetches; returns those that recorded nothing,
   * queued ones first, for a later start to resume.
   */
  async close(): Promise<FetchRequest[]> {
    this.#abort.abort(new Error("output fetcher closed"));
    const queued = this.#waiting.splice(0);
    for (const request of queued) this.#forget(request);
    if (this.#running === 0) this.#idle.resolve();
    await this.#idle.promise;
    return [...queued, ...this.#interrupted.splice(0)];
  }

  #pump() {
    while (
      this.#running < this.#options.concurrency && this.#waiting.length > 0
    ) {
      const request = this.#waiting.shift()!;
      this.#running++;
      let ended = false;
      this.#run(request)
        .then(async () => ended = await this.#ended(request))
        // Only a log write failing as it logged a crash comes here.
        .catch((error) =>
          this.#options.logger.error("output fetch abandoned", {
            drv: request.drv,
            worker: request.worker,
            error,
            reason: "its saved record is resumed at the next start",
          })
        )
        .finally(() => {
          this.#running--;
          this.#forget(request);
          if (ended) this.#tellEnded(request);
          if (this.pending === 0) this.#idle.resolve();
          else this.#pump();
        });
    }
  }

  /**
   * Runs the fetch of `request` to its end. A fetch that throws (a fault of
   * its own, a log write that failed, say: a failure to get the outputs it
   * retries itself) is run again after a back-off, staying active
   * meanwhile: dropped, its build would be taken back at its worker's next
   * request and built again, its saved record left for the next start.
   * The deadline counts from the first try: crashes do not stretch it.
   */
  async #run(request: FetchRequest): Promise<void> {
    const { clock, logger, maxRetryDelayMs } = this.#options;
    const tried: FirstTry = {};
    let delay = this.#options.retryDelayMs;
    for (let crash = 1;; crash++) {
      try {
        return await this.#fetch(request, tried);
      } catch (error) {
        if (this.#abort.signal.aborted) return this.#interrupt(request);
        logger.error("output fetch crashed", {
          drv: request.drv,
          worker: request.worker,
          crash,
          retryMs: delay,
          error,
          stack: (error as Error)?.stack,
        });
      }
      try {
        await clock.sleep(delay, this.#abort.signal);
      } catch {
        return this.#interrupt(request);
      }
      delay = Math.min(delay * 2, maxRetryDelayMs);
    }
  }

  /**
   * Keeps a running fetch that close() stopped, or that a store step
   * stopped (see #stored), for close() to return.
   */
  #interrupt(request: FetchRequest): void {
    this.#interrupted.push(request);
  }

  /**
   * Forgets the saved record of `request`, whose fetch ended (the build
   * recorded, or no longer its worker's), unless close() interrupted it:
   * that one is for the next start to resume. (A build recorded had it
   * forgotten with it.) True when the fetch ended, false when it was
   * interrupted.
   */
  async #ended(request: FetchRequest): Promise<boolean> {
    if (this.#interrupted.includes(request)) return false;
    if (this.#recorded.has(request)) return true;
    try {
      await this.#stored(
        request,
        "forget",
        () => this.#options.store.forgetOwedFetch(request),
      );
    } catch {
      // The fetcher closed first, or the store refused for good: the next
      // start resumes the fetch, finds the build no longer running, and
      // forgets it then.
    }
    return true;
  }

  /** Tells the watchers (see {@link watchEnds}) that `request` ended. */
  #tellEnded(request: FetchRequest): void {
    for (const watcher of this.#endWatchers) {
      try {
        watcher(request);
      } catch (error) {
        this.#options.logger.error("fetch end watcher failed", {
          drv: request.drv,
          worker: request.worker,
          error,
        });
      }
    }
  }

  /** Drops `request` from the active fetches. */
  #forget(request: FetchRequest): void {
    this.#active.delete(fetchKey(request.drv, request.worker));
  }

  /** The build if `worker` still runs it, else null (logged). */
  async #owned(drv: string, worker: string): Promise<Build | null> {
    const build = await this.#options.store.getBuildByDerivation(drv);
    if (
      build === null || build.worker !== worker ||
      (build.status !== BuildStatus.started &&
        build.status !== BuildStatus.submitted)
    ) {
      this.#options.logger.warn("result ignored", {
        drv,
        worker,
        status: build?.status,
        reason: "build not running on this worker",
      });
      return null;
    }
    return build;
  }

  /** Fetches `request`'s outputs; `tried` says since when (see #run). */
  async #fetch(request: FetchRequest, tried: FirstTry) {
    const { drv, url, worker } = request;
    const { store, guix, clock, logger, deadlineMs } = this.#options;
    const signal = this.#abort.signal;
    const stored = <T>(step: string, action: () => Promise<T>) =>
      this.#stored(request, step, action);
    let build: Build | null;
    try {
      build = await stored("owner", () => this.#owned(drv, worker));
    } catch {
      return this.#interrupt(request);
    }
    if (build === null) return;
    // Monotonic: a step of the wall clock must not end or stretch the wait.
    tried.at ??= clock.monotonic();
    const started = tried.at;
    let delay = this.#options.retryDelayMs;
    let reason = "";
    for (let attempt = 1;; attempt++) {
      try {
        if (await this.#derivationGone(drv, worker)) return;
        const missing = await this.#unpublished(build, url, signal);
        if (missing === null) {
          await guix.substitute(drv, url, signal);
          const result = await stored("success", () =>
            store.completeBuild(
              drv,
              BuildStatus.succeeded,
              { worker, now: epochSeconds(clock) },
            ));
          logger.info("build succeeded", {
            drv,
            worker,
            attempt,
            recorded: result.changed,
          });
          if (result.changed) {
            this.#recorded.add(request);
            await this.#options.onSucceeded(build).catch((error) =>
              logger.error("after success failed", { drv, error })
            );
          }
          if (this.#options.triggerUrl) {
            await this.#trigger(build, this.#options.triggerUrl, signal);
          }
          return;
        }
        reason = `narinfo of ${JSON.stringify(missing)} not published yet`;
      } catch (error) {
        if (signal.aborted || error instanceof FetchStoppedError) {
          return this.#interrupt(request);
        }
        reason = (error as Error)?.message ?? String(error);
      }
      if (clock.monotonic() - started + delay > deadlineMs) break;
      logger.warn("output fetch retried", { drv, url, attempt, reason });
      try {
        await clock.sleep(delay, signal);
      } catch {
        return this.#interrupt(request);
      }
      delay = Math.min(delay * 2, this.#options.maxRetryDelayMs);
      // Cancelled, restarted or taken back meanwhile: stop quietly.
      try {
        if (await stored("owner", () => this.#owned(drv, worker)) === null) {
          return;
        }
      } catch {
        return this.#interrupt(request);
      }
    }
    let result: { changed: boolean };
    try {
      result = await stored(
        "failure",
        () =>
          store.completeBuild(drv, BuildStatus.failedOther, {
            worker,
            now: epochSeconds(clock),
          }),
      );
    } catch {
      return this.#interrupt(request);
    }
    if (result.changed) this.#recorded.add(request);
    logger.error("outputs unavailable", {
      drv,
      url,
      worker,
      deadlineMs,
      reason,
      recorded: result.changed,
    });
  }

  /**
   * Runs `action` (a step of `request`'s fetch that reads or writes the
   * store) until the store answers: a database that is down, restarting,
   * busy, slow past its deadline, read-only or full must not leave the
   * build started for good, its result dropped. Each such failure is
   * logged; the retries back off as the fetch's do. Any other failure (a
   * fault of the code, a row that is not there) would come again at each
   * try, logged for good: it is logged once, and the fetch stops, its saved
   * record left for the next start.
   * @throws once the fetcher closes, or a {@link FetchStoppedError} (the fetch
   * is then interrupted)
   */
  async #stored<T>(
    request: FetchRequest,
    step: string,
    action: () => Promise<T>,
  ): Promise<T> {
    const { clock, logger, maxRetryDelayMs } = this.#options;
    const { drv, worker } = request;
    let delay = this.#options.retryDelayMs;
    for (let attempt = 1;; attempt++) {
      try {
        return await action();
      } catch (error) {
        if (this.#abort.signal.aborted) throw error;
        if (!transientStoreError(error)) {
          logger.error("output fetch stopped", {
            drv,
            worker,
            step,
            error,
            stack: (error as Error)?.stack,
            reason: "the store failed otherwise than by being unavailable; " +
              "the fetch is resumed at the next start",
          });
          throw new FetchStoppedError(drv, step, { cause: error });
        }
        logger.error("output fetch store failed", {
          drv,
          step,
          attempt,
          retryMs: delay,
          error,
        });
      }
      await clock.sleep(delay, this.#abort.signal);
      delay = Math.min(delay * 2, maxRetryDelayMs);
    }
  }

  /**
   * Fails the build when its derivation left the store: its outputs could
   * not be substituted by it, and retrying cannot bring it back.
   */
  async #derivationGone(drv: string, worker: string): Promise<boolean> {
    const { inStore, store, clock, logger, storeDir } = this.#options;
    if (inStore === null) return false;
    return await failIfMissing(
      store,
      { drv, worker, now: epochSeconds(clock) },
      { inStore, storeDir, logger },
    );
  }

  /**
   * Asks `url` for each output's narinfo, answer unread: only so that a
   * caching publish server starts baking. Failures are logged, never fatal.
   */
  async #trigger(build: Build, url: string, signal: AbortSignal) {
    for (const output of build.outputs) {
      try {
        const response = await this.#narinfo(url, output.path, signal);
        await response.body?.cancel();
      } catch (error) {
        this.#options.logger.warn("substitute trigger failed", {
          url,
          output: output.path,
          error,
        });
      }
    }
  }

  /** GETs the narinfo of store item `path` from `url`, within the timeout. */
  #narinfo(url: string, path: string, signal: AbortSignal) {
    const base = path.slice(path.lastIndexOf("/") + 1);
    const hash = base.slice(0, base.indexOf("-"));
    return this.#options.fetch(`${url.replace(/\/+$/, "")}/${hash}.narinfo`, {
      signal: AbortSignal.any([
        signal,
        AbortSignal.timeout(this.#options.narinfoTimeoutMs),
      ]),
    });
  }

  /** The first output whose narinfo `url` does not serve yet, or null. */
  async #unpublished(
    build: Build,
    url: string,
    signal: AbortSignal,
  ): Promise<string | null> {
    for (const output of build.outputs) {
      const response = await this.#narinfo(url, output.path, signal);
      await response.body?.cancel();
      if (response.status !== 200) return output.path;
    }
    return null;
  }
}

/**
 * Whether a store step that threw `error` may pass when tried again: the
 * database could not be used (down, restarting, busy, read-only, full),
 * undid the transaction for a conflict with another one, canceled a
 * statement that ran past its deadline (on PostgreSQL, waiting for a lock
 * another transaction held long: SQLite's wait for its lock says busy),
 * or a write found its transaction ended by such an error.
 */
function transientStoreError(error: unknown): boolean {
  return isDatabaseUnavailable(error) || isTransactionConflict(error) ||
    isQueryCanceled(error) ||
    (error instanceof StoreError && error.code === "transaction-ended");
}
