// The server's ZeroMQ loop: messages handled one at a time, the writes of a
// whole turn of them committed together (turn.ts), never dying on bad input.
// A turn's work requests and starts are gathered and served at its end,
// one store call for each kind (turn_work.ts).
//
// Beyond Cuirass (cuirass.md §1.5, §10): a worker name holds at most one
// build (asking for more work gives back what it still held, except that a
// Cuirass worker's first request after a build it has not started yet
// goes unanswered and it keeps the build, as it may read replies one late;
// and of the
// requests that queued up while the server was away only the last is
// served: case C03);
// results count only from the connection that owns the build; pings and
// starts naming a worker only from the connection that registered it (pings
// also from that connection's address); Lorica peers negotiate request ids,
// cancellation and authentication with a `lorica-hello` that Cuirass
// servers ignore.

import { encodeMessage, type Message } from "../protocol/messages.ts";
import {
  PeerUnreachableError,
  type RouterMessage,
  type RouterSocket,
} from "../zmtp/router.ts";
import { type Clock, epochSeconds, Nudge } from "../clock.ts";
import { type HoldingLogger, holdingLogger, type Logger } from "../log.ts";
import type { Build, HeldBuild, Holding, Store } from "../store/types.ts";
import { WorkerHoldings } from "./worker_holdings.ts";
import type { FetchRequest, OutputFetcher } from "./output_fetcher.ts";
import { routingKey, type WorkerLink, WorkerLinks } from "./worker_links.ts";
import {
  nextTurn,
  type PendingReply,
  serveTurn,
  type Turn,
  type TurnHandlers,
} from "./turn.ts";
import type { Incoming, MessageOf } from "./incoming_message.ts";
import { TurnWork, type WorkRequest } from "./turn_work.ts";
import { WorkerIdentity } from "./worker_identity.ts";
import { isLocalHolderName } from "./local_holder.ts";
import { BuildReports } from "./build_reports.ts";
import { readTurnMessages, type Received } from "./turn_messages.ts";
import { isDatabaseUnavailable } from "../store/unavailable.ts";
import { OneAtATime } from "./one_at_a_time.ts";

// Imported from here by remote_builder.ts, which sizes the ROUTER with it.
export { routerMessageLimit } from "./turn_messages.ts";

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
   * This server's `--worker-timeout`, written with each contact it hears:
   * every server sharing the database judges the worker's silence by it.
   */
  workerTimeoutSeconds: number;
  /**
   * Key id -> secret. When set, only workers proving one of these keys
   * (Lorica's `auth` field) get builds or may report; Cuirass workers are
   * refused. When null or absent, any worker is accepted, as in Cuirass.
   */
  workerKeys?: Map<string, string> | null;
  /** Largest payload decoded; default 64 KiB (DEFAULT_MAX_PAYLOAD_BYTES). */
  maxPayloadBytes?: number;
  /** Called when a build was handed to a worker (for metrics). */
  onSubmitted?: (build: Build, worker: string, now: number) => void;
  /**
   * Seconds between two writes of a requesting worker's last contact; must
   * stay well below the worker timeout [5].
   */
  touchIntervalSeconds?: number;
  /**
   * Seconds between two looks for builds that connected Lorica workers
   * are building but the database no longer has held by them (canceled or
   * restarted by another process sharing it); default 5.
   */
  heldCheckSeconds?: number;
  /**
   * Whether a derivation is in the server's store. When given, a build
   * whose derivation is gone (case C14) is not handed out, and a failure
   * reported for one is recorded as such; absent, derivations are never
   * looked for.
   */
  inStore?: (path: string) => Promise<boolean>;
  /**
   * The queue in which turns, looks at held builds and the cancels and
   * restarts made through this server take turns; default a new one (a
   * test's own tells it which waited for which).
   */
  turns?: OneAtATime;
}

const EMPTY = new Uint8Array(0);
/**
 * How long a work request's reply waits, withheld, for its worker to start
 * the build it was sent before (WorkerHoldings.withholdReply). A Cuirass
 * worker reading a reply late starts that build at once: it only opens a
 * connection to its daemon first (cuirass.md §1.4).
 */
export const WITHHELD_REPLY_GRACE_MS = 30_000;
/** A turn taking this long is logged, and again each time as long. */
const SLOW_TURN_MS = 10_000;
/**
 * Why a turn's watch ends. One reason for every turn: by default each
 * abort makes an exception with its stack, hundreds a second, and the more
 * garbage, the more often a minor collection pauses the dispatcher.
 */
const TURN_SERVED = new Error("turn served");

/** Answers workers: server info, registration, work requests and results. */
export class Dispatcher {
  readonly #options: DispatcherOptions;
  readonly #links = new WorkerLinks();
  /**
   * What a turn's handlers log: written once the turn commits, dropped if
   * it rolls back. Everything else (web actions, replies and cancels sent,
   * between turns) logs through {@link #log}, at once: a line held by a
   * turn running meanwhile would share its fate.
   */
  readonly #logger: HoldingLogger;
  readonly #log: Logger;
  readonly #holdings: WorkerHoldings;
  readonly #work: TurnWork;
  readonly #identity: WorkerIdentity;
  readonly #reports: BuildReports;
  /**
   * Turns, and what must not run within one: the looks at held builds,
   * which must not see one half done, and the cancels and restarts made
   * here, whose worker a look must not tell too.
   */
  readonly #turns: OneAtATime;
  /** Aborted once {@link run} ends: what waits beside the turns stops. */
  readonly #running = new AbortController();

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#turns = options.turns ?? new OneAtATime();
    this.#logger = holdingLogger(options.logger);
    this.#log = options.logger;
    this.#work = new TurnWork({
      logger: this.#logger,
      handOut: (request, build, now) => this.#handOut(request, build, now),
      failIfMissing: (store, build, worker, now) =>
        this.#reports.failIfMissing(store, build.derivation, worker, now, true),
    });
    this.#holdings = new WorkerHoldings({
      logger: this.#logger,
      fetching: (drv, worker) => this.#reports.fetching(drv, worker),
      touchIntervalSeconds: options.touchIntervalSeconds,
      workerTimeoutSeconds: options.workerTimeoutSeconds,
    });
    this.#identity = new WorkerIdentity({
      workerKeys: options.workerKeys,
      storeDir: options.storeDir,
      workerTimeoutSeconds: options.workerTimeoutSeconds,
      logger: this.#logger,
      links: this.#links,
      holdings: this.#holdings,
      work: this.#work,
    });
    this.#reports = new BuildReports({
      fetcher: options.fetcher,
      inStore: options.inStore,
      logCacheDir: options.logCacheDir,
      storeDir: options.storeDir,
      logger: this.#logger,
      holdings: this.#holdings,
      work: this.#work,
      identity: this.#identity,
    });
    options.fetcher.watchEnds(
      (request) => void this.#tellFetched(request),
      this.#running.signal,
    );
  }

  /** Whether worker authentication is on. */
  get authRequired(): boolean {
    return this.#identity.authRequired;
  }

  /**
   * Serves messages until the router closes or `signal` aborts, a turn at
   * a time (see turn.ts).
   */
  async run(signal: AbortSignal): Promise<void> {
    const handlers = {
      store: this.#options.store,
      logger: this.#options.logger,
      handlerLog: this.#logger,
      handle: (received: Received, turn: Turn) => this.#handle(received, turn),
      finish: (turn: Turn) =>
        this.#work.finish(turn, epochSeconds(this.#options.clock)),
      send: (routingId: Uint8Array, message: Message) =>
        this.#send(routingId, message),
      rolledBack: () => {
        this.#holdings.rolledBack();
        this.#reports.forget();
      },
    };
    // The looks end with the turns, whether the signal or the router ends
    // them.
    const served = new AbortController();
    const checking = this.#checkHeldEvery(
      AbortSignal.any([signal, served.signal]),
    );
    try {
      await this.#serveTurns(handlers, signal);
    } finally {
      served.abort();
      this.#running.abort();
      await checking;
    }
  }

  /** Serves turns until the router closes or `signal` aborts. */
  async #serveTurns(
    handlers: TurnHandlers<Received>,
    signal: AbortSignal,
  ): Promise<void> {
    while (!signal.aborted) {
      let messages: RouterMessage[];
      try {
        messages = await nextTurn(this.#options.router, signal);
      } catch (error) {
        if (signal.aborted) return;
        this.#log.error("dispatcher stopped", { error });
        throw error;
      }
      const turn = readTurnMessages(messages, {
        logger: this.#log,
        maxPayloadBytes: this.#options.maxPayloadBytes,
      });
      // While the database cannot be used (down, restarting, read-only,
      // full), the turn is served again rather than dropped: a dropped
      // result would be built again, and its worker would wait for the
      // reply to its request until its own timeout. Messages that came
      // meanwhile wait behind it.
      for (let delay = 250;; delay = Math.min(delay * 2, 5000)) {
        // Watched from before it waits for its place: a look at held
        // builds stuck on the store holds it up as much.
        const served = await this.#watched(
          this.#turns.run(async () => {
            const served = await serveTurn(turn, handlers);
            if (served === true) this.#holdings.committed();
            return served;
          }),
          turn.length,
        );
        if (served === true) break;
        if (!isDatabaseUnavailable(served.error)) {
          this.#answerDropped(turn);
          break;
        }
        this.#log.warn("turn held", {
          messages: turn.length,
          retryMs: delay,
          reason: "database unavailable",
        });
        try {
          await this.#options.clock.sleep(delay, signal);
        } catch {
          return;
        }
      }
      this.#forgetDeparted(messages);
    }
  }

  /**
   * Forgets the connections among `messages`' senders that closed by the
   * end of their turn. A connection that closed while its messages waited
   * (the turns were busy) is forgotten before they are handled, and the
   * handling made its state anew: kept for good, these piled up (a worker
   * name with each), and at the links' cap pushed out the oldest, live
   * workers' state (their proven key among it).
   */
  #forgetDeparted(messages: RouterMessage[]): void {
    const seen = new Set<string>();
    for (const { routingId } of messages) {
      const key = routingKey(routingId);
      if (seen.has(key)) continue;
      seen.add(key);
      if (!this.#options.router.isConnected(routingId)) {
        this.peerDisconnected(routingId);
      }
    }
  }

  /**
   * Every `heldCheckSeconds`, takes back the builds connected Lorica
   * workers are building that the database no longer has held by them: a
   * cancel or restart made by another process sharing it (a web front end)
   * tells no worker, and nothing else would before the build's end. On
   * PostgreSQL such a change wakes the look at once (Store.watchHoldings);
   * the period is the safety net for a notification lost.
   */
  async #checkHeldEvery(signal: AbortSignal): Promise<void> {
    const { clock, logger, heldCheckSeconds, store } = this.#options;
    const nudge = new Nudge();
    store.watchHoldings?.(() => nudge.wake(), signal);
    while (true) {
      try {
        await nudge.sleep(clock, (heldCheckSeconds ?? 5) * 1000, signal);
      } catch {
        return;
      }
      let lost: Holding[];
      try {
        lost = await this.#turns.run(() => this.#takeBackLost());
      } catch (error) {
        logger.warn("held builds not checked", { error });
        continue;
      }
      // Outside the turns: a worker slow to read would hold them all.
      for (const { worker, derivation } of lost) {
        await this.#stopRemote(worker, derivation);
      }
    }
  }

  /**
   * Releases the builds this dispatcher believes connected Lorica workers
   * hold but the database does not, and returns them. Run between turns,
   * so that a turn's writes and what it learnt are seen together: a build
   * handed out is committed as held, a result recorded is released.
   */
  async #takeBackLost(): Promise<Holding[]> {
    const believed = this.#holdings.believed().filter(({ worker }) =>
      this.#links.connectionOf(worker)?.features.has("build-cancel") === true
    );
    if (believed.length === 0) return [];
    const held = await this.#options.store.stillHeld(believed);
    // Released meanwhile (an undelivered reply, whose undoing runs beside
    // the turns), a build is no longer this check's to stop.
    const lost = believed.filter(({ worker, derivation }, i) =>
      !held[i] && this.#holdings.awaitsResult(worker, derivation)
    );
    for (const { worker, derivation } of lost) {
      this.#holdings.released(worker, derivation);
      this.#log.info("build taken back", {
        worker,
        drv: derivation,
        reason: "the database no longer has it held by this worker " +
          "(canceled, restarted or requeued elsewhere)",
      });
    }
    return lost;
  }

  /**
   * Answers the work requests of a turn dropped whole (its batch failed for
   * another reason than the database being unavailable) with no build: a
   * Cuirass worker waits for that reply without a time limit, and would
   * wait for good. Nothing of the turn was recorded, so none was handed out.
   */
  #answerDropped(turn: Received[]): void {
    let answered = 0;
    for (const { routingId, message } of turn) {
      if (message.type !== "worker-request-work") continue;
      const tag = message.requestId === undefined
        ? {}
        : { requestId: message.requestId };
      answered++;
      this.#send(routingId, { type: "no-build", ...tag }).catch((error) =>
        this.#log.error("reply not sent", {
          peer: routingKey(routingId),
          type: "no-build",
          error,
        })
      );
    }
    if (answered > 0) {
      this.#log.warn("work requests answered", {
        requests: answered,
        reply: "no-build",
        reason: "their turn was not committed",
      });
    }
  }

  /**
   * `serving` (a turn), with a warning each {@link SLOW_TURN_MS} it takes:
   * a database that stopped answering (frozen, or cut off with no reset)
   * holds every worker meanwhile, and would otherwise leave no trace.
   */
  async #watched<T>(serving: Promise<T>, messages: number): Promise<T> {
    const { clock, logger } = this.#options;
    const done = new AbortController();
    const started = clock.now();
    (async () => {
      for (;;) {
        await clock.sleep(SLOW_TURN_MS, done.signal);
        // Not the holding logger: the attempt may never commit.
        logger.warn("turn slow", {
          messages,
          waitedMs: clock.now() - started,
          reason: "the store has not answered",
        });
      }
    })().catch(() => {});
    try {
      return await serving;
    } finally {
      done.abort(TURN_SERVED);
    }
  }

  /** True while worker `name` says it is too short of disk for work. */
  diskLow(name: string): boolean {
    return this.#identity.diskLow(name);
  }

  /**
   * Forgets what was learnt about a connection that closed, and about its
   * worker name once no connection requests work for it: each worker
   * process brings new session names, so what is kept per name must go
   * with them.
   */
  peerDisconnected(routingId: Uint8Array): void {
    const name = this.#links.nameOf(routingId);
    this.#links.forget(routingId);
    if (name !== undefined && this.#links.connectionOf(name) === undefined) {
      this.#holdings.drop(name);
      this.#identity.drop(name);
    }
  }

  /** Number of worker names whose state is kept here. */
  get namesRemembered(): number {
    const names = this.#holdings.names();
    for (const name of this.#identity.names()) names.add(name);
    return names.size;
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
    const result = await this.#takeFromWorker(
      () =>
        this.#options.store.cancelBuild(id, epochSeconds(this.#options.clock)),
      (result) =>
        result.worker === null
          ? []
          : [{ worker: result.worker, derivation: build.derivation }],
    );
    this.#log.info("build canceled", {
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
    const result = await this.#takeFromWorker(
      () =>
        this.#options.store.restartBuild(
          id,
          epochSeconds(this.#options.clock),
        ),
      (result) =>
        result.worker === null
          ? []
          : [{ worker: result.worker, derivation: build.derivation }],
    );
    if (result.worker !== null) {
      await this.#stopRemote(result.worker, build.derivation);
    }
    return result.changed;
  }

  /**
   * Cancels the pending builds of evaluation `id` (returns how many), and
   * stops those a Lorica worker is building, as {@link cancelBuild} does.
   */
  async cancelEvaluation(id: number): Promise<number> {
    const change = await this.#takeFromWorker(
      () =>
        this.#options.store.cancelEvaluation(
          id,
          epochSeconds(this.#options.clock),
        ),
      (change) => change.held,
    );
    this.#log.info("evaluation canceled", {
      evaluation: id,
      builds: change.changed,
      held: change.held.length,
    });
    await this.#stopHeld(change.held);
    return change.changed;
  }

  /**
   * Schedules every build of evaluation `id` again (returns how many),
   * stopping first those a Lorica worker is building.
   */
  async restartEvaluation(id: number): Promise<number> {
    const change = await this.#takeFromWorker(
      () =>
        this.#options.store.restartEvaluation(
          id,
          epochSeconds(this.#options.clock),
        ),
      (change) => change.held,
    );
    this.#log.info("evaluation restarted", {
      evaluation: id,
      builds: change.changed,
      held: change.held.length,
    });
    await this.#stopHeld(change.held);
    return change.changed;
  }

  /**
   * Runs `change` (a cancel or restart in the store) and lets go of the
   * builds it took from their workers, `taken` of its result, between two
   * turns and never beside a look at held builds: a look between the
   * change and the letting go would find these builds taken back by
   * another process, and tell their workers a second time.
   */
  #takeFromWorker<T>(
    change: () => Promise<T>,
    taken: (result: T) => Holding[],
  ): Promise<T> {
    return this.#turns.run(async () => {
      const result = await change();
      for (const { worker, derivation } of taken(result)) {
        this.#holdings.released(worker, derivation);
      }
      return result;
    });
  }

  /**
   * Tells each worker of builds just taken from it: one message per held
   * build, none for the rest (an evaluation may have tens of thousands of
   * builds, held by a few).
   */
  async #stopHeld(held: HeldBuild[]): Promise<void> {
    for (const { worker, derivation } of held) {
      await this.#stopRemote(worker, derivation);
    }
  }

  async #stopRemote(worker: string, drv: string) {
    const link = this.#links.connectionOf(worker);
    if (link === undefined || !link.features.has("build-cancel")) {
      this.#log.info("cancel not sent", {
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
    this.#log.info(sent ? "cancel sent" : "cancel not sent", {
      worker,
      drv,
    });
  }

  /**
   * Tells the worker whose result `request` fetched that the fetch ended,
   * when the connection it requests work on announced "outputs-fetched": a
   * stopping Lorica worker keeps its publish server up until then. Sent
   * after the turn under way, if any, whose ack of the same result sent
   * again may still say "fetching": this must come after it. Outside the
   * turns, as a cancel: a worker slow to read would hold them all.
   */
  async #tellFetched({ drv, worker }: FetchRequest): Promise<void> {
    await this.#turns.run(() => Promise.resolve());
    const link = this.#links.connectionOf(worker);
    if (link === undefined || !link.features.has("outputs-fetched")) return;
    try {
      const sent = await this.#send(link.routingId, {
        type: "outputs-fetched",
        drv,
      });
      this.#log.debug(sent ? "fetch end sent" : "fetch end not sent", {
        worker,
        drv,
      });
    } catch (error) {
      this.#log.error("fetch end not sent", { worker, drv, error });
    }
  }

  /** Handles one message from a worker connection. */
  async #handle(received: Received, turn: Turn): Promise<void> {
    const { routingId, peerAddress, message } = received;
    const sender = { peer: routingKey(routingId), address: peerAddress };
    const link = this.#links.get(routingId);
    link.peerAddress = peerAddress;
    const from: Incoming = {
      turn,
      store: turn.store,
      routingId,
      peerAddress,
      sender,
      link,
      now: epochSeconds(this.#options.clock),
    };
    switch (message.type) {
      case "lorica-hello":
        return this.#identity.hello(from, message);
      case "worker-request-info":
        return from.turn.reply({
          routingId,
          message: {
            type: "server-info",
            workerAddress: peerAddress,
            logPort: this.#options.logPort,
            publishPort: this.#options.publishPort,
          },
        });
      case "worker-ready":
        return await this.#identity.ready(from, message);
      case "worker-ping":
        return await this.#identity.ping(from, message);
      case "worker-request-work":
        if (!received.latest) return this.#superseded(from, message);
        return await this.#dispatch(from, message.name, message.requestId);
      case "build-started":
        return this.#reports.started(from, message);
      case "build-succeeded":
      case "build-failed":
        return await this.#reports.result(from, message);
      default:
        this.#logger.warn("message dropped", {
          ...sender,
          type: message.type,
          reason: "not a message a worker sends",
        });
    }
  }

  /** A stale work request, a later one of the same session waiting. */
  #superseded(
    { turn, routingId, sender }: Incoming,
    message: MessageOf<"worker-request-work">,
  ) {
    this.#logger.info("work request superseded", {
      ...sender,
      worker: message.name,
      reason: "a later request of this worker is in the same turn",
    });
    const tag = message.requestId === undefined
      ? {}
      : { requestId: message.requestId };
    turn.reply({ routingId, message: { type: "no-build", ...tag } });
  }

  /** A work request: the best build for the worker's systems, if any. */
  async #dispatch(
    { turn, store, routingId, link, now }: Incoming,
    name: string,
    requestId: number | undefined,
  ) {
    const tag = requestId === undefined ? {} : { requestId };
    // Every request gets its reply, made first and filled in below: a
    // Cuirass worker waits for it without a time limit, so a request
    // whose handling fails on the way (a store write refused) still gets
    // its no-build. The build is taken at the end of the turn; the reply
    // keeps its place.
    const reply: PendingReply = {
      routingId,
      message: { type: "no-build", ...tag },
    };
    turn.reply(reply);
    // Builds handed out under that name would be held in a local-mode
    // server's name, where nothing here would follow them.
    if (isLocalHolderName(name)) {
      this.#logger.warn("work refused", {
        peer: routingKey(routingId),
        worker: name,
        reason: "the name is a local-mode server's (local@HOST)",
      });
      return;
    }
    if (
      this.authRequired && this.#links.get(routingId).authenticated !== name
    ) {
      // Once a connection: a worker refused asks again every request
      // period for as long as it runs (a Cuirass worker cannot learn why),
      // and a warning each time would bury the rest of the log.
      const level = link.refusalWarned ? "debug" : "warn";
      link.refusalWarned = true;
      this.#logger[level]("work refused", {
        peer: routingKey(routingId),
        worker: name,
        reason: "worker not authenticated on this connection",
      });
      // A Lorica worker asking unauthenticated believes itself registered:
      // its registration was lost (in a turn that failed) or refused (a
      // proof of a stale nonce). It would ask in vain for as long as its
      // connection lasts.
      this.#askToRegisterOnce(link, reply, name, "it asked unauthenticated");
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
      (this.#work.asking(turn, name) ||
        await this.#holdings.holdsAny(store, name))
    ) {
      this.#logger.warn("work refused", {
        peer: routingKey(routingId),
        worker: name,
        reason: "another connection speaks for this worker",
      });
      return;
    }
    this.#links.learn(routingId, name, true);
    const worker = await this.#holdings.known(store, name, now);
    if (worker === null) {
      // Expired while its connection stayed up (a frozen process, a
      // partition that kept the TCP session): a Lorica worker registers
      // again on a probe, as after a server restart. Its pings cannot do
      // it when keys are required, so without the probe it would ask in
      // vain for good.
      this.#askToRegisterOnce(
        link,
        reply,
        name,
        "it asked for work unregistered (expired meanwhile?)",
      );
      return;
    }
    link.askedToRegister = false;
    const late = link.lorica
      ? null
      : this.#holdings.withholdReply(name, routingKey(routingId));
    if (late !== null) {
      reply.withheld = true;
      this.#logger.info("work request left unanswered", {
        peer: routingKey(routingId),
        worker: name,
        drv: late,
        reason: "the build just sent to it is not started yet " +
          "(a Cuirass worker may read its replies one request late)",
      });
      turn.afterCommit(() =>
        void this.#answerWithheld(routingId, name, late, tag)
      );
      return;
    }
    await this.#holdings.askedForWork(store, name, now);
    this.#work.request(turn, {
      name,
      systems: worker.systems,
      requestId,
      reply,
    });
  }

  /**
   * Sends the no-build withheld from `name` (see
   * WorkerHoldings.withholdReply) if, WITHHELD_REPLY_GRACE_MS on, the
   * worker has still not started `drv`: it was in step after all, and
   * waits for that reply without a time limit.
   */
  async #answerWithheld(
    routingId: Uint8Array,
    name: string,
    drv: string,
    tag: { requestId?: number },
  ): Promise<void> {
    try {
      await this.#options.clock.sleep(
        WITHHELD_REPLY_GRACE_MS,
        this.#running.signal,
      );
    } catch {
      return; // The dispatcher stopped: the connection goes with it.
    }
    if (!this.#holdings.stillWithheld(name, drv)) return;
    this.#holdings.answeredWithheld(name);
    this.#log.warn("withheld reply sent", {
      peer: routingKey(routingId),
      worker: name,
      drv,
      reason: `build not started ${WITHHELD_REPLY_GRACE_MS / 1000} s on`,
    });
    try {
      await this.#send(routingId, { type: "no-build", ...tag });
    } catch (error) {
      this.#log.error("reply not sent", {
        peer: routingKey(routingId),
        type: "no-build",
        error,
      });
    }
  }

  /** Makes `request`'s reply hand it `build`. */
  #handOut(
    { name, requestId, reply }: WorkRequest,
    build: Build,
    now: number,
  ): void {
    // Until the reply is out, the name holds this build.
    this.#holdings.handedOut(
      name,
      build.derivation,
      routingKey(reply.routingId),
    );
    reply.message = {
      type: "build",
      drv: build.derivation,
      priority: build.priority,
      timeout: build.timeout,
      maxSilent: build.maxSilent,
      timestamp: null,
      system: build.system,
      ...(requestId === undefined ? {} : { requestId }),
    };
    reply.onDelivered = () => {
      this.#options.onSubmitted?.(build, name, now);
      this.#logger.info("build submitted", {
        drv: build.derivation,
        worker: name,
        system: build.system,
      });
    };
    reply.onUndelivered = async () => {
      this.#holdings.released(name, build.derivation);
      const requeued = await this.#options.store.requeueBuild(
        build.derivation,
        now,
        { worker: name },
      );
      // Outside the turn: the plain logger, not the one holding turn lines.
      if (requeued) {
        this.#log.warn("build requeued", {
          drv: build.derivation,
          worker: name,
          reason: "its reply never reached the worker (connection closed)",
        });
      }
    };
  }

  /**
   * Has a probe follow `reply` if `link` is a Lorica worker's not probed
   * since it last asked for work as a known, authenticated worker: one
   * registration is all it needs, and a probe at each request would have
   * it register at each (a worker whose key is refused, for good).
   */
  #askToRegisterOnce(
    link: WorkerLink,
    reply: PendingReply,
    name: string,
    reason: string,
  ): void {
    if (!link.lorica || link.askedToRegister) return;
    link.askedToRegister = true;
    reply.onDelivered = () =>
      void this.#askToRegister(reply.routingId, name, reason);
  }

  /** Sends `routingId` a probe, which makes a Lorica worker register. */
  async #askToRegister(
    routingId: Uint8Array,
    name: string,
    reason: string,
  ): Promise<void> {
    // Outside any turn: the plain logger, not the one holding turn lines.
    const fields = { peer: routingKey(routingId), worker: name };
    try {
      await this.#options.router.send(routingId, [EMPTY]);
      this.#log.info("worker asked to register", {
        ...fields,
        reason,
      });
    } catch (error) {
      if (error instanceof PeerUnreachableError) return;
      this.#log.warn("probe not sent", { ...fields, error });
    }
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
      this.#log.warn("reply undeliverable", {
        peer: routingKey(routingId),
        type: message.type,
      });
      return false;
    }
  }
}
