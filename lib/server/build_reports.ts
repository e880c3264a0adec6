// What workers report about the builds they were handed: a start (its log
// gets a name), a failure (recorded, or C14's missing derivation), a
// success (fetched from the worker's publish server before it counts; the
// fetch is saved with the report's turn, so a restarted server resumes it).
// A report counts only from the connection that speaks for the build's
// worker (worker_identity.ts), and only while that worker holds it. A
// Lorica worker that asked for it ("result-ack") hears what became of each
// result once that is committed, and sends it again until it does; one
// that asked for that too ("outputs-fetched") hears when a fetch of its
// success ends (dispatcher.ts), for it keeps its publish server up until then.

import { logFileName } from "../protocol/log_header.ts";
import type { ResultOutcome } from "../protocol/messages.ts";
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
   * worker's publish server before it counts. A sender that asked for it
   * is told, once the turn commits, what became of it (a result sent again
   * changes nothing: the first one's outcome stands).
   */
  async result(
    from: Incoming,
    message: MessageOf<"build-succeeded" | "build-failed">,
  ) {
    const outcome = await this.#take(from, message);
    // A turn reply: it goes out only once what it says is committed. A
    // handling that threw sends none, and the worker sends the result again.
    if (from.link.features.has("result-ack")) {
      from.turn.reply({
        routingId: from.routingId,
        message: { type: "result-ack", drv: message.drv, outcome },
      });
    }
  }

  /** Takes a result in (see {@link result}); says what became of it. */
  async #take(
    { turn, store, routingId, peerAddress, sender, now }: Incoming,
    message: MessageOf<"build-succeeded" | "build-failed">,
  ): Promise<ResultOutcome> {
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
      return "ignored";
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
        if (held?.worker !== worker) {
          this.#logger.warn("result ignored", {
            ...fields,
            reason: "the worker does not hold this build",
          });
          return "ignored";
        }
        this.#holdings.released(worker, message.drv);
        // A result sent again (its first sending was committed, its ack
        // lost): the build ended with this worker's result already.
        if (finishedStatus(held.status)) {
          this.#logger.info("result ignored", {
            ...fields,
            reason: "the build's result is recorded already",
          });
          return "recorded";
        }
        this.#logger.info("result ignored", {
          ...fields,
          reason: "the build is no longer running",
        });
        return "ignored";
      }
    }
    if (message.type === "build-failed") {
      await this.#work.startsBefore(turn, message.drv, now);
      // A derivation gone from the store since it was handed out (C14) is
      // the farm's failure, not the package's: no worker can say so, and
      // a Cuirass one reports only build-failed.
      if (await this.failIfMissing(store, message.drv, worker, now, false)) {
        this.#holdings.released(worker, message.drv);
        return "recorded";
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
      this.#holdings.released(worker, message.drv);
      return result.changed ? "recorded" : "ignored";
    }
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
      this.#holdings.released(worker, message.drv);
      return "ignored";
    }
    if (this.fetching(message.drv, worker)) {
      // Reported twice: the first report's fetch goes on.
      return "fetching";
    }
    // Saved with the turn (with its other successes', in one write at its
    // end): a server that stops before the fetch ends (killed, even)
    // resumes it at its next start, rather than take the build back from
    // a worker that was told its result was taken.
    const request = { drv: message.drv, url, worker };
    this.#work.owe(turn, request);
    // The fetch begins once the turn commits, after the build's start
    // if that is in this turn too: its end cannot come first.
    const key = fetchKey(message.drv, worker);
    this.#awaitingFetch.add(key);
    turn.afterCommit(() => {
      this.#awaitingFetch.delete(key);
      this.#options.fetcher.enqueue(request);
    });
    this.#holdings.released(worker, message.drv);
    return "fetching";
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

/** Whether a build in `status` has ended with a result of its worker's. */
function finishedStatus(status: BuildStatus): boolean {
  return status === BuildStatus.succeeded || status === BuildStatus.failed ||
    status === BuildStatus.failedOther;
}

/** The key of `worker`'s result of `drv` in the fetches awaited. */
function fetchKey(drv: string, worker: string): string {
  return `${worker} ${drv}`;
}
