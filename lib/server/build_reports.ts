// What workers report about the builds they were handed: a start (its log
// gets a name), a failure (recorded, or C14's missing derivation), a
// success (fetched from the worker's publish server before it counts).
// A report counts only from the connection that speaks for the build's
// worker (worker_identity.ts), and only while that worker holds it.

import { logFileName } from "../protocol/log_header.ts";
import type { Logger } from "../log.ts";
import { type Build, BuildStatus, type Store } from "../store/types.ts";
import type { Incoming, MessageOf } from "./incoming_message.ts";
import { failIfMissing } from "./missing_derivation.ts";
import type { OutputFetcher } from "./output_fetcher.ts";
import { allowedPublishUrl } from "./publish_url.ts";
import type { TurnWork } from "./turn_work.ts";
import type { WorkerIdentity } from "./worker_identity.ts";
import { heldStatus, type WorkerHoldings } from "./worker_holdings.ts";

/** What build reports need around them: settings and the dispatcher's parts. */
export interface BuildReportsOptions {
  fetcher: OutputFetcher;
  /**
   * Whether a derivation is in the server's store; absent, derivations are
   * never looked for (see DispatcherOptions).
   */
  inStore?: (path: string) => Promise<boolean>;
  logCacheDir: string;
  storeDir: string;
  /** The dispatcher's: what a turn logs is written only once it commits. */
  logger: Logger;
  holdings: WorkerHoldings;
  work: TurnWork;
  identity: WorkerIdentity;
}

/** Handles build-started, build-succeeded and build-failed. */
export class BuildReports {
  readonly #options: BuildReportsOptions;
  readonly #logger: Logger;
  readonly #holdings: WorkerHoldings;
  readonly #work: TurnWork;
  readonly #identity: WorkerIdentity;
  /**
   * Successes reported in the current turn, whose fetch begins once the
   * turn commits (see fetchKey).
   */
  readonly #awaitingFetch = new Set<string>();

  constructor(options: BuildReportsOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#holdings = options.holdings;
    this.#work = options.work;
    this.#identity = options.identity;
  }

  /**
   * Whether `worker`'s result of `drv` is being fetched, or will be once
   * the turn commits: then the build is no longer held by it.
   */
  fetching(drv: string, worker: string): boolean {
    return this.#options.fetcher.has(drv, worker) ||
      this.#awaitingFetch.has(fetchKey(drv, worker));
  }

  /** Forgets the fetches awaited: the turn that reported them rolled back. */
  forget(): void {
    this.#awaitingFetch.clear();
  }

  /** A build submitted to this worker started: its log has a name now. */
  started(
    { turn, routingId, sender }: Incoming,
    message: MessageOf<"build-started">,
  ) {
    if (!this.#identity.mayReport(routingId, message.worker)) {
      this.#logger.warn("start ignored", {
        ...sender,
        drv: message.drv,
        worker: message.worker,
        reason: "sender is not this worker",
      });
      return;
    }
    let log: string;
    try {
      log = logFileName(
        this.#options.logCacheDir,
        this.#options.storeDir,
        message.drv,
      );
    } catch (error) {
      this.#logger.warn("message dropped", { ...sender, reason: error });
      return;
    }
    this.#holdings.startReported(message.worker, message.drv);
    this.#work.start(
      turn,
      { derivation: message.drv, worker: message.worker, log },
      sender,
    );
  }

  /**
   * A result: a failure is recorded; a success is fetched from the
   * worker's publish server before it counts.
   */
  async result(
    { turn, store, routingId, peerAddress, sender, now }: Incoming,
    message: MessageOf<"build-succeeded" | "build-failed">,
  ) {
    let build: Build | null | undefined;
    const current = async () =>
      build === undefined
        ? build = await store.getBuildByDerivation(message.drv)
        : build;
    const worker = await this.#identity.senderOf(
      store,
      routingId,
      peerAddress,
      current,
    );
    if (worker === undefined) {
      this.#logger.warn("result ignored", {
        ...sender,
        drv: message.drv,
        reason: "sender owns no such build",
      });
      return;
    }
    // The build this process handed to the sender, still awaited, needs no
    // reading: whatever was done to it since (a cancel in a web front end,
    // the sweeper's expiry), the statements below name the worker and the
    // fetcher checks whom the store says holds it.
    if (!this.#holdings.awaitsResult(worker, message.drv)) {
      const held = await current();
      if (held?.worker !== worker || !heldStatus(held.status)) {
        // Another worker's build, or one no longer running (canceled,
        // restarted, expired): whatever the report says, it changes nothing.
        const fields = { ...sender, drv: message.drv, worker };
        if (held?.worker === worker) {
          this.#logger.info("result ignored", {
            ...fields,
            reason: "the build is no longer running",
          });
          this.#holdings.released(worker, message.drv);
        } else {
          this.#logger.warn("result ignored", {
            ...fields,
            reason: "the worker does not hold this build",
          });
        }
        return;
      }
    }
    if (message.type === "build-failed") {
      await this.#work.startsBefore(turn, message.drv, now);
      // A derivation gone from the store since it was handed out (C14) is
      // the farm's failure, not the package's: no worker can say so, and
      // a Cuirass one reports only build-failed.
      if (await this.failIfMissing(store, message.drv, worker, now, false)) {
        this.#holdings.released(worker, message.drv);
        return;
      }
      const result = await store.completeBuild(
        message.drv,
        BuildStatus.failed,
        { worker, now },
      );
      this.#logger.info("build failed", {
        drv: message.drv,
        worker,
        recorded: result.changed,
        dependents: result.dependentsFailed,
      });
    } else {
      const url = await allowedPublishUrl(
        message.url,
        peerAddress,
        async () => (await store.getWorker(worker))?.address,
      );
      if (url === null) {
        this.#logger.warn("result ignored", {
          ...sender,
          drv: message.drv,
          worker,
          url: message.url,
          reason: "publish URL is not an http URL of the worker's address",
        });
        await this.#work.startsBefore(turn, message.drv, now);
        await store.requeueBuild(message.drv, now, { worker });
      } else {
        if (this.fetching(message.drv, worker)) {
          // Reported twice: the first report's fetch goes on.
          return;
        }
        // The fetch begins once the turn commits, after the build's start
        // if that is in this turn too: its end cannot come first.
        const key = fetchKey(message.drv, worker);
        this.#awaitingFetch.add(key);
        const request = { drv: message.drv, url, worker };
        turn.afterCommit(() => {
          this.#awaitingFetch.delete(key);
          this.#options.fetcher.enqueue(request);
        });
      }
    }
    this.#holdings.released(worker, message.drv);
  }

  /**
   * {@link failIfMissing} when derivations are looked for; with `writeLog`
   * (no worker ran the build), the reason becomes the build's log.
   */
  async failIfMissing(
    store: Store,
    drv: string,
    worker: string,
    now: number,
    writeLog: boolean,
  ): Promise<boolean> {
    const { inStore, logCacheDir, storeDir } = this.#options;
    if (inStore === undefined) return false;
    return await failIfMissing(store, { drv, worker, now }, {
      inStore,
      storeDir,
      logger: this.#logger,
      logCacheDir: writeLog ? logCacheDir : undefined,
    });
  }
}

/** The key of `worker`'s result of `drv` in the fetches awaited. */
function fetchKey(drv: string, worker: string): string {
  return `${worker} ${drv}`;
}
