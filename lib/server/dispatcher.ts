// The server's ZeroMQ loop: messages handled one at a time, the writes of a
// whole turn of them committed together (turn.ts), never dying on bad input.
//
// Beyond Cuirass (cuirass.md §1.5, §10): a worker name holds at most one
// build (asking for more work gives back what it still held, case C03);
// results count only from the connection that owns the build; Lorica peers
// negotiate request ids, cancellation and authentication with a
// `lorica-hello` that Cuirass servers ignore.

import {
  decodeMessage,
  encodeMessage,
  LORICA_FEATURES,
  LORICA_PROTOCOL_VERSION,
  type Message,
} from "../protocol/messages.ts";
import { makeNonce, verifyAuthProof } from "../protocol/worker_auth.ts";
import {
  PeerUnreachableError,
  type RouterMessage,
  type RouterSocket,
} from "../zmtp/router.ts";
import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { type Build, BuildStatus, type Store } from "../store/types.ts";
import { logFileName } from "../protocol/log_header.ts";
import type { OutputFetcher } from "./output_fetcher.ts";
import { routingKey, WorkerLinks } from "./worker_links.ts";
import { allowedPublishUrl } from "./publish_url.ts";
import { nextTurn, serveTurn, type Turn } from "./turn.ts";

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
  /**
   * Key id -> secret. When set, only workers proving one of these keys
   * (Lorica's `auth` field) get builds or may report; Cuirass workers are
   * refused. When null or absent, any worker is accepted, as in Cuirass.
   */
  workerKeys?: Map<string, string> | null;
  /** Largest payload decoded; default 1 MiB. */
  maxPayloadBytes?: number;
  /** Called when a build was handed to a worker (for metrics). */
  onSubmitted?: (build: Build, worker: string, now: number) => void;
  /**
   * Seconds between two writes of a requesting worker's last contact; must
   * stay well below the worker timeout [5].
   */
  touchIntervalSeconds?: number;
}

/** What the dispatcher keeps of a registered worker between requests. */
interface KnownWorker {
  systems: string[];
  /** When its last contact was last written to the store. */
  touched: number;
}

const EMPTY = new Uint8Array(0);

/** Answers workers: server info, registration, work requests and results. */
export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #links = new WorkerLinks();
  readonly #logger: Logger;
  /** Names that proved a key (only used when keys are configured). */
  readonly #authenticated = new Set<string>();
  /**
   * Registered workers, so that a work request costs no worker lookup and
   * at most one contact write per touch interval.
   */
  readonly #workers = new Map<string, KnownWorker>();
  /**
   * Names known to hold no build (checked since their last submission), so
   * that an idle worker's requests skip the held-builds query.
   */
  readonly #holdNothing = new Set<string>();
  /**
   * The build last handed to each name that held nothing before: once the
   * name reports that build's result it holds nothing again, with no need
   * to ask the store.
   */
  readonly #handedOut = new Map<string, string>();
  /** Workers whose last ping said they are short of disk space. */
  readonly #diskLow = new Set<string>();

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#logger = options.logger;
  }

  /** Whether worker authentication is on. */
  get authRequired(): boolean {
    return (this.#options.workerKeys?.size ?? 0) > 0;
  }

  /**
   * Serves messages until the router closes or `signal` aborts, a turn at
   * a time (see turn.ts).
   */
  async run(signal: AbortSignal): Promise<void> {
    const handlers = {
      store: this.#options.store,
      logger: this.#logger,
      handle: (message: RouterMessage, turn: Turn) =>
        this.#handle(message, turn),
      send: (routingId: Uint8Array, message: Message) =>
        this.#send(routingId, message),
      // The caches may describe writes that were rolled back.
      rolledBack: () => {
        this.#workers.clear();
        this.#holdNothing.clear();
        this.#handedOut.clear();
      },
    };
    while (!signal.aborted) {
      let messages: RouterMessage[];
      try {
        messages = await nextTurn(this.#options.router, signal);
      } catch (error) {
        if (signal.aborted) return;
        this.#logger.error("dispatcher stopped", { error });
        throw error;
      }
      await serveTurn(messages, handlers);
    }
  }

  /** True while worker `name` says it is too short of disk for work. */
  diskLow(name: string): boolean {
    return this.#diskLow.has(name);
  }

  /** Forgets what was learnt about a connection that closed. */
  peerDisconnected(routingId: Uint8Array): void {
    this.#links.forget(routingId);
  }

  /**
   * Cancels build `id`: canceled in the store at once (whether or not its
   * worker can be reached), and `(build-cancel ...)` to its worker when it
   * is a Lorica worker that announced support. A Cuirass worker finishes
   * and its late result is ignored.
   */
  async cancelBuild(id: number): Promise<boolean> {
    const build = await this.#options.store.getBuild(id);
    if (build === null) return false;
    const result = await this.#options.store.cancelBuild(
      id,
      epochSeconds(this.#options.clock),
    );
    this.#logger.info("build canceled", {
      build: id,
      drv: build.derivation,
      worker: result.worker ?? undefined,
      changed: result.changed,
    });
    if (result.worker !== null) {
      await this.#stopRemote(result.worker, build.derivation);
    }
    return result.changed;
  }

  /** Schedules build `id` again, stopping it first on a Lorica worker. */
  async restartBuild(id: number): Promise<boolean> {
    const build = await this.#options.store.getBuild(id);
    if (build === null) return false;
    const result = await this.#options.store.restartBuild(
      id,
      epochSeconds(this.#options.clock),
    );
    if (result.worker !== null) {
      await this.#stopRemote(result.worker, build.derivation);
    }
    return result.changed;
  }

  async #stopRemote(worker: string, drv: string) {
    const link = this.#links.connectionOf(worker);
    if (link === undefined || !link.features.has("build-cancel")) {
      this.#logger.info("cancel not sent", {
        worker,
        drv,
        reason: link === undefined
          ? "worker not connected"
          : "worker does not support build-cancel; its result will be ignored",
      });
      return;
    }
    const sent = await this.#send(link.routingId, {
      type: "build-cancel",
      drv,
    });
    this.#logger.info(sent ? "cancel sent" : "cancel not sent", {
      worker,
      drv,
    });
  }

  /** Handles one message from a worker connection. */
  async #handle(incoming: RouterMessage, turn: Turn): Promise<void> {
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
      message = decodeMessage(frames[1], {
        maxBytes: this.#options.maxPayloadBytes,
      });
    } catch (error) {
      this.#logger.warn("message dropped", { ...sender, reason: error });
      return;
    }
    this.#logger.debug("message received", { ...sender, type: message.type });
    const { store } = turn;
    const now = epochSeconds(this.#options.clock);
    const link = this.#links.get(routingId);
    switch (message.type) {
      case "lorica-hello": {
        link.lorica = true;
        link.features = new Set(
          message.features.filter((f) => LORICA_FEATURES.includes(f)),
        );
        link.nonce = makeNonce();
        turn.reply({
          routingId,
          message: {
            type: "lorica-welcome",
            version: LORICA_PROTOCOL_VERSION,
            features: [
              ...LORICA_FEATURES,
              ...(this.authRequired ? ["auth"] : []),
            ],
            nonce: link.nonce,
          },
        });
        return;
      }
      case "worker-request-info":
        turn.reply({
          routingId,
          message: {
            type: "server-info",
            workerAddress: peerAddress,
            logPort: this.#options.logPort,
            publishPort: this.#options.publishPort,
          },
        });
        return;
      case "worker-ready": {
        const name = message.worker.name;
        if (this.authRequired) {
          const ok = link.nonce !== undefined &&
            await verifyAuthProof(
              this.#options.workerKeys!,
              link.nonce,
              name,
              message.auth,
            );
          if (!ok) {
            this.#logger.warn("worker refused", {
              ...sender,
              worker: name,
              machine: message.worker.machine,
              reason: message.auth === undefined
                ? "no authentication proof"
                : `bad proof for key ${JSON.stringify(message.auth.key)}`,
            });
            return;
          }
          this.#authenticated.add(name);
          link.authenticated = name;
        }
        this.#links.learn(routingId, name, true);
        // A fresh `worker-ready` means that session builds nothing but what
        // it says it holds: anything else its name held was lost.
        const holding = link.features.has("holding")
          ? new Set(message.holding ?? [])
          : new Set<string>();
        const requeued = await this.#requeueHeld(store, name, holding, now);
        this.#handedOut.delete(name);
        if (holding.size === 0) this.#holdNothing.add(name);
        await store.upsertWorker({ ...message.worker, lastSeen: now });
        this.#remember(name, message.worker.systems, now);
        this.#logger.info("worker ready", {
          worker: name,
          machine: message.worker.machine,
          address: message.worker.address,
          systems: message.worker.systems.join(","),
          lorica: link.lorica,
          holding: holding.size,
          requeued,
        });
        return;
      }
      case "worker-ping": {
        const name = message.worker.name;
        if (
          message.diskLow !== undefined &&
          (!this.authRequired || this.#authenticated.has(name))
        ) {
          if (message.diskLow && !this.#diskLow.has(name)) {
            this.#logger.warn("worker low on disk", { worker: name });
          }
          if (message.diskLow) this.#diskLow.add(name);
          else this.#diskLow.delete(name);
        }
        if (this.authRequired) {
          // Only liveness: a ping cannot register or change a worker.
          if (this.#authenticated.has(name)) await store.touchWorker(name, now);
          else {
            this.#logger.debug("ping ignored", {
              ...sender,
              worker: name,
              reason: "worker not authenticated",
            });
          }
          return;
        }
        await store.upsertWorker({ ...message.worker, lastSeen: now });
        this.#remember(name, message.worker.systems, now);
        return;
      }
      case "worker-request-work":
        await this.#dispatch(
          turn,
          routingId,
          message.name,
          message.requestId,
          now,
        );
        return;
      case "build-started": {
        if (!this.#mayReport(routingId, message.worker)) {
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
        const owned = await store.markStarted(
          message.drv,
          message.worker,
          log,
          now,
        );
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
          store,
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
          this.#resultRecorded(worker, message.drv);
          return;
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
          await store.requeueBuild(message.drv, now);
          this.#resultRecorded(worker, message.drv);
          return;
        }
        this.#options.fetcher.enqueue({ drv: message.drv, url, worker });
        this.#resultRecorded(worker, message.drv);
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

  async #dispatch(
    turn: Turn,
    routingId: Uint8Array,
    name: string,
    requestId: number | undefined,
    now: number,
  ) {
    const { store } = turn;
    const tag = requestId === undefined ? {} : { requestId };
    if (
      this.authRequired && this.#links.get(routingId).authenticated !== name
    ) {
      this.#logger.warn("work refused", {
        peer: routingKey(routingId),
        worker: name,
        reason: "worker not authenticated on this connection",
      });
      turn.reply({ routingId, message: { type: "no-build", ...tag } });
      return;
    }
    // A connection may not ask in the name of a worker whose own live
    // connection holds a build: that would take the build away from it
    // while it runs. (A registration, which a restarted worker sends, does
    // take the name over; so does a request once nothing is held.)
    const owner = this.#links.connectionOf(name);
    if (
      owner !== undefined &&
      routingKey(owner.routingId) !== routingKey(routingId) &&
      await this.#holdsBuild(store, name)
    ) {
      this.#logger.warn("work refused", {
        peer: routingKey(routingId),
        worker: name,
        reason: "another connection speaks for this worker",
      });
      turn.reply({ routingId, message: { type: "no-build", ...tag } });
      return;
    }
    this.#links.learn(routingId, name, true);
    const worker = await this.#knownWorker(store, name, now);
    if (worker === null) {
      turn.reply({ routingId, message: { type: "no-build", ...tag } });
      return;
    }
    // One session runs one build: asking again means what it held is
    // lost (a reply that never arrived, a stale one it dropped).
    if (!this.#holdNothing.has(name)) {
      await this.#requeueHeld(store, name, new Set(), now);
      this.#holdNothing.add(name);
    }
    const build = await store.popBuild(name, worker.systems, now);
    if (build === null) {
      turn.reply({ routingId, message: { type: "no-build", ...tag } });
      return;
    }
    // Until the reply is out, the name holds this build.
    this.#holdNothing.delete(name);
    this.#handedOut.set(name, build.derivation);
    turn.reply({
      routingId,
      message: {
        type: "build",
        drv: build.derivation,
        priority: build.priority,
        timeout: build.timeout,
        maxSilent: build.maxSilent,
        timestamp: null,
        system: build.system,
        ...tag,
      },
      onDelivered: () => {
        this.#options.onSubmitted?.(build, name, now);
        this.#logger.info("build submitted", {
          drv: build.derivation,
          worker: name,
          system: build.system,
        });
      },
      onUndelivered: () =>
        this.#options.store.requeueBuild(build.derivation, now),
    });
  }

  /**
   * `worker` reported the result of `drv`: if that was the one build it
   * held, it holds nothing now (the result is recorded, being fetched or
   * the build is back in the queue).
   */
  #resultRecorded(worker: string, drv: string): void {
    if (this.#handedOut.get(worker) !== drv) return;
    this.#handedOut.delete(worker);
    this.#holdNothing.add(worker);
  }

  /** Whether `name` holds a submitted or started build not being fetched. */
  async #holdsBuild(store: Store, name: string): Promise<boolean> {
    return (await this.#heldBuilds(store, name)).length > 0;
  }

  /**
   * The submitted or started builds of `name` whose result is not being
   * fetched (a fetched one is done, whatever the worker does next).
   */
  async #heldBuilds(store: Store, name: string): Promise<Build[]> {
    const held = await store.queue({ worker: name }, 64);
    return held.filter((build) =>
      build.worker === name &&
      (build.status === BuildStatus.submitted ||
        build.status === BuildStatus.started) &&
      !this.#options.fetcher.has(build.derivation)
    );
  }

  /** Records a worker that registered or pinged. */
  #remember(name: string, systems: string[], now: number) {
    this.#workers.set(name, { systems, touched: now });
  }

  /**
   * The registered worker `name`, its last contact written at most once per
   * touch interval; null when it is unknown or was expired meanwhile.
   */
  async #knownWorker(
    store: Store,
    name: string,
    now: number,
  ): Promise<KnownWorker | null> {
    const interval = this.#options.touchIntervalSeconds ?? 5;
    let known = this.#workers.get(name);
    if (known === undefined) {
      const row = await store.getWorker(name);
      if (row === null) return null;
      known = { systems: row.systems, touched: 0 };
      this.#workers.set(name, known);
    }
    if (now - known.touched >= interval) {
      // The sweeper may have expired it since: then it is unknown again
      // until its next ping registers it.
      if (!await store.touchWorker(name, now)) {
        this.#workers.delete(name);
        this.#holdNothing.delete(name);
        this.#handedOut.delete(name);
        return null;
      }
      known.touched = now;
    }
    return known;
  }

  /**
   * Puts back to scheduled the submitted or started builds of `name` that
   * it does not say it holds and whose result is not being fetched.
   */
  async #requeueHeld(
    store: Store,
    name: string,
    holding: Set<string>,
    now: number,
  ): Promise<number> {
    let count = 0;
    for (const build of await this.#heldBuilds(store, name)) {
      if (holding.has(build.derivation)) continue;
      if (await store.requeueBuild(build.derivation, now)) {
        count++;
        this.#logger.warn("build requeued", {
          drv: build.derivation,
          worker: name,
          reason: "the worker no longer holds it",
        });
      }
    }
    return count;
  }

  /** Whether this connection may speak for worker `name`. */
  #mayReport(routingId: Uint8Array, name: string): boolean {
    const link = this.#links.get(routingId);
    if (this.authRequired) return link.authenticated === name;
    return link.name === undefined || link.name === name;
  }

  /**
   * The worker that may report on `drv` over this connection: the name the
   * connection used before, or, for a connection opened after a server
   * restart, the build's worker when it speaks from that worker's address
   * and has no other known connection (not when authentication is on: a
   * Lorica worker registers again).
   */
  async #senderOf(
    store: Store,
    routingId: Uint8Array,
    peerAddress: string,
    drv: string,
  ): Promise<string | undefined> {
    const link = this.#links.get(routingId);
    if (this.authRequired) return link.authenticated;
    if (link.name !== undefined) return link.name;
    const build = await store.getBuildByDerivation(drv);
    if (build?.worker == null) return undefined;
    // The owner still talks on a connection we know: this is someone else.
    if (this.#links.connectionOf(build.worker) !== undefined) return undefined;
    const owner = await store.getWorker(build.worker);
    return owner?.address === peerAddress ? build.worker : undefined;
  }

  /** Sends at once; false when the peer is gone. */
  async #send(routingId: Uint8Array, message: Message): Promise<boolean> {
    const link = this.#links.peek(routingId);
    if (link !== undefined && !link.lorica) {
      // Cuirass peers match replies positionally: no extension fields.
      if ("requestId" in message) {
        message = { ...message };
        delete (message as { requestId?: number }).requestId;
      }
    }
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
