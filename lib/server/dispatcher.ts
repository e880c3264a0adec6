// The server's ZeroMQ loop: one message at a time, never dying on bad input.

import {
  decodeMessage,
  encodeMessage,
  type Message,
} from "../protocol/messages.ts";
import {
  PeerUnreachableError,
  type RouterMessage,
  type RouterSocket,
} from "../zmtp/router.ts";
import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { BuildStatus, type Store } from "../store/types.ts";
import { logFileName } from "../protocol/log_channel.ts";
import type { OutputFetcher } from "./output_fetcher.ts";
import { routingKey, WorkerLinks } from "./worker_links.ts";

export interface DispatcherOptions {
  store: Store;
  router: RouterSocket;
  fetcher: OutputFetcher;
  clock: Clock;
  logger: Logger;
  logPort: number;
  /** Null when the server runs without a publish server. */
  publishPort: number | null;
  logCacheDir: string;
  storeDir: string;
}

const EMPTY = new Uint8Array(0);

/** Answers workers: server info, registration, work requests and results. */
export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #links = new WorkerLinks();
  readonly #logger: Logger;

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#logger = options.logger;
  }

  /** Serves messages until the router closes or `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let message: RouterMessage;
      try {
        message = await this.#options.router.receive(signal);
      } catch (error) {
        if (signal.aborted) return;
        this.#logger.error("dispatcher stopped", { error });
        throw error;
      }
      try {
        await this.handle(message);
      } catch (error) {
        // One bad message, or one failing query, must not stop dispatching.
        this.#logger.error("message handling failed", {
          peer: routingKey(message.routingId),
          address: message.peerAddress,
          error,
          stack: (error as Error)?.stack,
        });
      }
    }
  }

  /** Handles one message from a worker connection. */
  async handle(incoming: RouterMessage): Promise<void> {
    const { routingId, peerAddress, frames } = incoming;
    const sender = { peer: routingKey(routingId), address: peerAddress };
    if (frames.length !== 2 || frames[0].length !== 0) {
      this.#logger.warn("message dropped", {
        ...sender,
        reason:
          `expected an empty delimiter and one payload, got ${frames.length} frames`,
      });
      return;
    }
    let message: Message;
    try {
      message = decodeMessage(frames[1]);
    } catch (error) {
      this.#logger.warn("message dropped", { ...sender, reason: error });
      return;
    }
    this.#logger.debug("message received", { ...sender, type: message.type });
    const { store, clock } = this.#options;
    const now = epochSeconds(clock);
    switch (message.type) {
      case "worker-request-info":
        await this.#reply(routingId, {
          type: "server-info",
          workerAddress: peerAddress,
          logPort: this.#options.logPort,
          publishPort: this.#options.publishPort,
        });
        return;
      case "worker-ready": {
        // A fresh `worker-ready` means that worker process builds nothing
        // yet: whatever its name still holds was lost with an old process.
        const requeued = await store.requeueWorkerBuilds(
          message.worker.name,
          now,
        );
        await store.upsertWorker({ ...message.worker, lastSeen: now });
        this.#links.learn(routingId, message.worker.name);
        this.#logger.info("worker ready", {
          worker: message.worker.name,
          machine: message.worker.machine,
          address: message.worker.address,
          systems: message.worker.systems.join(","),
          requeued,
        });
        return;
      }
      case "worker-ping":
        await store.upsertWorker({ ...message.worker, lastSeen: now });
        return;
      case "worker-request-work":
        await this.#dispatch(routingId, message.name, now);
        return;
      case "build-started": {
        const log = logFileName(
          this.#options.logCacheDir,
          this.#options.storeDir,
          message.drv,
        );
        const owned = await store.markStarted(
          message.drv,
          message.worker,
          log,
          now,
        );
        this.#links.learn(routingId, message.worker);
        if (owned) {
          this.#logger.info("build started", {
            drv: message.drv,
            worker: message.worker,
          });
        } else {
          this.#logger.warn("start ignored", {
            ...sender,
            drv: message.drv,
            worker: message.worker,
            reason: "build not submitted to this worker",
          });
        }
        return;
      }
      case "build-succeeded":
      case "build-failed": {
        const worker = await this.#senderOf(
          routingId,
          peerAddress,
          message.drv,
        );
        if (worker === undefined) {
          this.#logger.warn("result ignored", {
            ...sender,
            drv: message.drv,
            reason: "sender owns no such build",
          });
          return;
        }
        if (message.type === "build-failed") {
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
          this.#options.fetcher.enqueue({
            drv: message.drv,
            url: message.url,
            worker,
          });
        }
        return;
      }
      default:
        this.#logger.warn("message dropped", {
          ...sender,
          type: message.type,
          reason: "not a message a worker sends",
        });
    }
  }

  async #dispatch(routingId: Uint8Array, name: string, now: number) {
    const { store } = this.#options;
    this.#links.learn(routingId, name);
    const worker = await store.getWorker(name);
    if (worker === null) {
      await this.#reply(routingId, { type: "no-build" });
      return;
    }
    await store.touchWorker(name, now);
    const build = await store.popBuild(name, worker.systems, now);
    if (build === null) {
      await this.#reply(routingId, { type: "no-build" });
      return;
    }
    const delivered = await this.#reply(routingId, {
      type: "build",
      drv: build.derivation,
      priority: build.priority,
      timeout: build.timeout,
      maxSilent: build.maxSilent,
      timestamp: null,
      system: build.system,
    });
    if (delivered) {
      this.#logger.info("build submitted", {
        drv: build.derivation,
        worker: name,
        system: build.system,
      });
    } else {
      await store.requeueBuild(build.derivation, now);
    }
  }

  /**
   * The worker that may report on `drv` over this connection: the name the
   * connection used before, or, for a connection opened after a server
   * restart, the build's worker when it speaks from that worker's address.
   */
  async #senderOf(
    routingId: Uint8Array,
    peerAddress: string,
    drv: string,
  ): Promise<string | undefined> {
    const known = this.#links.nameOf(routingId);
    if (known !== undefined) return known;
    const build = await this.#options.store.getBuildByDerivation(drv);
    if (build?.worker == null) return undefined;
    const owner = await this.#options.store.getWorker(build.worker);
    return owner?.address === peerAddress ? build.worker : undefined;
  }

  async #reply(routingId: Uint8Array, message: Message): Promise<boolean> {
    try {
      await this.#options.router.send(routingId, [
        EMPTY,
        encodeMessage(message),
      ]);
      return true;
    } catch (error) {
      if (!(error instanceof PeerUnreachableError)) throw error;
      this.#links.forget(routingId);
      this.#logger.warn("reply undeliverable", {
        peer: routingKey(routingId),
        type: message.type,
      });
      return false;
    }
  }
}
