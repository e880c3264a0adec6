// One worker session: the Cuirass worker lifecycle, one build at a time,
// hardened. Every wait for the server has a time limit (a silent server
// means a fresh connection, never a hang or a pile of stale requests, C03);
// a server restart is noticed by its probe and the session registers again
// without dropping the build it runs (C08); against a Lorica server it
// negotiates request ids, cancellation and authentication, and keeps each
// result until the server acknowledges it ("result-ack"), asking for no more
// work meanwhile and sending it again when its ack is late; a draining
// session stays until the server says it fetched the outputs of the
// successes it acknowledged as "fetching" ("outputs-fetched").
//
// This file is the lifecycle (probe, register, deliver kept results, ask
// for work, build, report); the connection and its events are
// server_connection.ts, the registration registration.ts, the results
// owed and their acks result_delivery.ts, the pings ping_loop.ts.

import { type DealerOptions, DealerSocket } from "../zmtp/dealer.ts";
import type { Message } from "../protocol/messages.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix } from "../guix/guix_command.ts";
import {
  type BuildOutcome,
  type BuildRefusal,
  buildRefusal,
  runBuild,
} from "./build_runner.ts";
import type { DiskGuard } from "./disk_guard.ts";
import { isRefusable, type UnreadableReply } from "./unreadable_reply.ts";
import { HandedBackBuilds } from "./handed_back_builds.ts";
import type { ServerAbsence } from "./server_absence.ts";
import { ServerConnection, ServerSilentError } from "./server_connection.ts";
import {
  type HandedOutBuild,
  Registrar,
  serverAddress,
  StoreDirMismatchError,
} from "./registration.ts";
import { ResultDelivery } from "./result_delivery.ts";
import { pingLoop } from "./ping_loop.ts";
import type { OutputsBeingFetched } from "./outputs_being_fetched.ts";
import type { UntoldFetches } from "./untold_fetches.ts";
import type { UndeliveredResults } from "./undelivered_results.ts";
import { derivationStoreDir, storeDirFromEnv } from "../guix/store_path.ts";

export { ServerSilentError } from "./server_connection.ts";
export { StoreDirMismatchError, urlHost } from "./registration.ts";

/** A build a session has under way. */
export interface UnderwayBuild {
  readonly drv: string;
}

export interface SessionOptions {
  server: { hostname: string; port: number };
  /** The name this session announces; 8 random characters in Cuirass. */
  name: string;
  machine: string;
  systems: string[];
  /** Port of this machine's publish server, for the results URL. */
  publishPort: number;
  /** Extra substitute URLs after the server's. */
  substituteUrls: string[];
  /**
   * The store every derivation handed out must be in; default
   * `NIX_STORE_DIR` or /gnu/store.
   */
  storeDir?: string;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Base wait after a `no-build` answer; Cuirass reads REQUEST_PERIOD. */
  requestPeriodMs: number;
  pingIntervalMs: number;
  cores?: number;
  /** Random integer in [0, n); injectable for tests. */
  random?: (n: number) => number;
  /**
   * Longest wait for a reply; past it the connection is replaced and the
   * session registers again. Default 60 s.
   */
  replyTimeoutMs?: number;
  /**
   * Offer Lorica extensions (`lorica-hello`) before registering; a Cuirass
   * server ignores the offer. False: behave exactly as a Cuirass worker.
   * Default true.
   */
  extensions?: boolean;
  /**
   * Key proving this worker to a server that requires authentication, and
   * the file it was read from, for the log.
   */
  authKey?: { id: string; secret: string; file?: string };
  /** When given and low, no work is requested (C09). */
  disk?: DiskGuard;
  /**
   * When aborted, the session asks for no more work: a build under way is
   * finished and reported, then the session ends (a draining stop).
   */
  draining?: AbortSignal;
  /**
   * Aborted once a draining stop's timeout is over: a build under way is
   * given up (guix build killed, the build handed back to a server that
   * takes builds back), one whose guix build ended meanwhile is reported,
   * and the session stays only while it owes the server (acks, fetches;
   * see ResultDelivery.owesServer), which the worker's grace bounds.
   */
  drainOver?: AbortSignal;
  /**
   * The builds under way, one entry per session building, shared by a
   * worker's sessions: a stop that abandons builds says how many. (Two
   * sessions may build one derivation: a server restarted, say.)
   */
  underway?: Set<UnderwayBuild>;
  /**
   * The results this name's sessions could not send, shared by them: a
   * session keeps there a result it fails to send, and the next one
   * delivers it once registered; and, from a server that acknowledges
   * results, each result sent until its ack, sent again after each
   * registration meanwhile. Absent: such a result is lost.
   */
  results?: UndeliveredResults;
  /**
   * This name's successes whose outputs the server fetches, until it says
   * the fetch ended ("outputs-fetched"), shared by the name's sessions: a
   * draining session stays connected while one is (the worker's publish
   * server stays up with it). Absent: none is waited for.
   */
  fetching?: OutputsBeingFetched;
  /**
   * Told of each success reported to a server that will not say when it
   * fetched its outputs (no "outputs-fetched"), shared by a worker's
   * sessions: a draining worker keeps its publish server up for a while
   * after the last one. Absent: none is told.
   */
  untold?: UntoldFetches;
  /**
   * The builds refused and handed back (see #refuse), shared by a
   * worker's sessions for the life of the process: one handed out again,
   * to whichever session, is refused for good. Absent: the session keeps
   * its own.
   */
  handedBack?: HandedBackBuilds;
  /**
   * Seconds past a build's max-silent-time the daemon may say nothing
   * before the build is given up (see runBuild); injectable for tests.
   */
  daemonSilenceGraceSeconds?: number;
  /**
   * Opens the session's DEALER sockets (requests and pings); default
   * `DealerSocket.connect`. Tests wrap it to make a chosen send fail.
   */
  connectDealer?: (options: DealerOptions) => DealerSocket;
  /**
   * Says in the log when `server` is away and when it is back, shared by a
   * worker's sessions of that server: said once for all of them, not once
   * a session (--workers=N), and closed by its owner. Absent: the
   * session's own, its lines naming the session's worker.
   */
  absence?: ServerAbsence;
}

/**
 * Most builds kept from a registration (see #keepHandedOut): one work
 * request is outstanding at a time, so more than one means a server gone
 * wrong.
 */
const MAX_HANDED_OUT = 4;
/**
 * How long a stopping worker tries to hand its killed build back, or to
 * send the result of a build that ended as it stopped.
 */
const HAND_BACK_TIMEOUT_MS = 2000;

/**
 * Serves the server until `signal` aborts: handshake, registration, then
 * the request loop. Connection losses and silent servers are survived.
 */
export async function runSession(
  options: SessionOptions,
  signal: AbortSignal,
): Promise<void> {
  const session = new Session(options, signal);
  try {
    await session.run();
  } finally {
    await session.close();
  }
}

/** A server's answer to a work request, as the request loop takes it. */
type WorkReply =
  | Extract<Message, { type: "build" | "no-build" }>
  | UnreadableReply;

class Session {
  readonly #options: SessionOptions;
  readonly #signal: AbortSignal;
  readonly #logger: Logger;
  readonly #replyTimeoutMs: number;
  /** The requests' connection, and what the server sent on it. */
  readonly #connection: ServerConnection;
  readonly #pinger: DealerSocket;
  /** The registration with the server's current life. */
  readonly #registrar: Registrar;
  #current: UnderwayBuild & { cancel: AbortController } | undefined;
  /**
   * Builds a server handed out while the session was registering (see
   * Registrar.register): the server counts them as this worker's, so they
   * are built before any more work is asked for.
   */
  #handedOut: HandedOutBuild[] = [];
  #requestId = 0;
  /** The store every derivation handed out must be in. */
  readonly #storeDir: string;
  /**
   * Derivations refused and handed back (see #refuse): one handed out
   * again is not handed back again.
   */
  readonly #handedBack: HandedBackBuilds;
  /** The results this session owes the server, and their acks. */
  readonly #delivery: ResultDelivery;
  /** Ends the ping loop once the session is over. */
  readonly #over = new AbortController();

  constructor(options: SessionOptions, signal: AbortSignal) {
    this.#options = options;
    this.#signal = signal;
    this.#logger = options.logger.with({ worker: options.name });
    this.#replyTimeoutMs = options.replyTimeoutMs ?? 60_000;
    this.#storeDir = options.storeDir ?? storeDirFromEnv();
    this.#handedBack = options.handedBack ?? new HandedBackBuilds();
    // A draining stop wakes whatever waits for the server, which then sees
    // whether the session may end at once.
    options.draining?.addEventListener("abort", () => this.#connection.wake(), {
      once: true,
      signal: this.#over.signal,
    });
    // So do fetches abandoned (the publish server died): their ends, which
    // a draining session waits for, are awaited no more.
    options.fetching?.abandoned.addEventListener(
      "abort",
      () => this.#connection.wake(),
      { once: true, signal: this.#over.signal },
    );
    const connectDealer = options.connectDealer ?? DealerSocket.connect;
    this.#connection = new ServerConnection({
      server: options.server,
      address: serverAddress(options.server),
      signal,
      clock: options.clock,
      logger: this.#logger,
      connectDealer,
      absence: options.absence,
      takeAtOnce: (message, connection) =>
        this.#takeAtOnce(message, connection),
    });
    this.#pinger = connectDealer({ ...options.server });
    this.#delivery = new ResultDelivery({
      results: options.results,
      fetching: options.fetching,
      untold: options.untold,
      connection: this.#connection,
      clock: options.clock,
      logger: this.#logger,
      replyTimeoutMs: this.#replyTimeoutMs,
      registration: () => this.#registrar.current,
      registrationStale: () => this.#registrar.stale(),
      offer: (message) => this.#offer(message),
    });
    this.#registrar = new Registrar({
      server: options.server,
      name: options.name,
      machine: options.machine,
      systems: options.systems,
      publishPort: options.publishPort,
      substituteUrls: options.substituteUrls,
      extensions: options.extensions,
      authKey: options.authKey,
      storeDir: this.#storeDir,
      logger: this.#logger,
      replyTimeoutMs: this.#replyTimeoutMs,
      connection: this.#connection,
      delivery: this.#delivery,
      offer: (...messages) => this.#offer(...messages),
      mayLeave: () => this.#mayLeave(),
      handedOut: () => this.#handedOut,
      keepHandedOut: (job) => this.#keepHandedOut(job),
    });
  }

  async run(): Promise<void> {
    const pinging = pingLoop(this.#pinger, {
      registration: () => this.#registrar.current,
      disk: this.#options.disk,
      clock: this.#options.clock,
      logger: this.#logger,
      intervalMs: this.#options.pingIntervalMs,
      signal: AbortSignal.any([this.#signal, this.#over.signal]),
    });
    let needProbe = true;
    try {
      while (
        !this.#signal.aborted &&
        (!this.#drained() || this.#delivery.owesServer())
      ) {
        try {
          if (needProbe && !await this.#waitForProbe()) break;
          needProbe = false;
          if (!await this.#registrar.register([])) break;
          if (!await this.#deliverKept()) break;
          // Returns when a probe (already consumed) says the server
          // restarted, or when a draining stop ends the session.
          await this.#requestLoop();
        } catch (error) {
          if (this.#signal.aborted) break;
          if (!(error instanceof ServerSilentError)) throw error;
          this.#logger.warn("server silent", {
            awaiting: error.awaiting,
            waited: error.waitedMs,
            action: "reconnecting",
          });
          await this.#reconnect();
          needProbe = true;
        }
      }
      if (this.#drained() && !this.#signal.aborted) {
        this.#logger.info("session drained");
      }
    } finally {
      this.#over.abort();
      await pinging;
    }
  }

  #drained(): boolean {
    return this.#options.draining?.aborted ?? false;
  }

  /**
   * Whether a draining stop ends the session now: with no build under way,
   * no result awaiting its ack and none being fetched, nothing is left to
   * finish or report, whatever the connection is doing.
   */
  #mayLeave(): boolean {
    return this.#drained() && this.#current === undefined &&
      this.#handedOut.length === 0 && !this.#delivery.owesServer();
  }

  /**
   * Sleeps `ms`; false when a draining stop cut the sleep short, or, with
   * `untilProbe`, a probe (one waiting already, or one that comes). A
   * probe means the server restarted and knows this session no more: the
   * next work request, at once, meets the probe (#reply takes it) and the
   * session registers again, rather than a request period on, while the
   * builds it could be given wait.
   */
  async #pause(ms: number, untilProbe = false): Promise<boolean> {
    if (untilProbe && this.#connection.probeQueued()) return false;
    const draining = this.#options.draining;
    const probe = new AbortController();
    const signals = [this.#signal, probe.signal];
    if (draining) signals.push(draining);
    if (untilProbe) this.#connection.onProbe(() => probe.abort());
    try {
      await this.#options.clock.sleep(ms, AbortSignal.any(signals));
      return true;
    } catch (error) {
      if (this.#signal.aborted) throw error;
      return false;
    } finally {
      this.#connection.onProbe(undefined);
    }
  }

  async close(): Promise<void> {
    this.#current?.cancel.abort();
    await Promise.all([this.#connection.close(), this.#pinger.close()]);
  }

  /**
   * A fresh connection: stale replies of the old one cannot reach us, and
   * no registration is made on it yet.
   */
  async #reconnect() {
    this.#registrar.forget();
    await this.#connection.reconnect();
  }

  /**
   * Takes what the server says whatever the session waits for (see
   * ServerConnection): the refusal or acceptance of its registration, a
   * cancel, an ack, the end of a fetch. True when `message`, which came on
   * connection number `connection`, was one; the rest is queued.
   */
  #takeAtOnce(
    message: Message | UnreadableReply,
    connection: number,
  ): boolean {
    if (this.#registrar.hear(message, connection)) return true;
    if (message.type === "build-cancel") {
      this.#cancel(message.drv);
      return true;
    }
    // Whenever it comes, even on a connection lost since: the server
    // committed the result before it sent this.
    if (message.type === "result-ack") {
      this.#delivery.acknowledged(message.drv, message.outcome);
      return true;
    }
    if (message.type === "outputs-fetched") {
      this.#delivery.outputsFetched(message.drv);
      return true;
    }
    return false;
  }

  /** Waits for the server's probe; false when a draining stop came first. */
  async #waitForProbe(): Promise<boolean> {
    // The server's probe comes first on each connection; Cuirass workers
    // insist on it. Waiting is not hanging: the dealer keeps reconnecting.
    for (;;) {
      const event = await this.#connection.next(
        this.#replyTimeoutMs,
        () => this.#mayLeave(),
      );
      if (this.#mayLeave()) return false;
      if (event?.kind === "probe") return true;
      // Said at each timeout: a worker pointed at something that is not
      // a server would otherwise wait in silence. One that cannot connect
      // hears of it from its failed attempts (see ServerAbsence).
      if (event === null && this.#connection.connected) {
        this.#logger.warn("server silent", {
          server: serverAddress(this.#options.server),
          awaiting: "probe",
          waited: this.#replyTimeoutMs,
        });
      }
    }
  }

  /**
   * Sends `messages`, in order and on one connection, first waiting for a
   * connection if there is none; but once the session may leave (see
   * #mayLeave) it waits for nothing: with no connection up, the messages
   * are dropped and the answer is false.
   */
  async #offer(...messages: Message[]): Promise<boolean> {
    const draining = this.#options.draining;
    if (
      draining === undefined || this.#current !== undefined ||
      this.#delivery.owesServer()
    ) {
      await this.#connection.sendAll(messages);
      return true;
    }
    if (draining.aborted) {
      if (!this.#connection.connected) return false;
      // The send takes the live connection at once: nothing to wait for.
      await this.#connection.sendAll(messages);
      return true;
    }
    try {
      await this.#connection.sendAll(
        messages,
        AbortSignal.any([this.#signal, draining]),
      );
      return true;
    } catch (error) {
      if (this.#mayLeave() && !this.#signal.aborted) return false;
      throw error;
    }
  }

  async #requestLoop() {
    const { requestPeriodMs: period } = this.#options;
    const random = this.#options.random ??
      ((n: number) => Math.floor(Math.random() * n));
    while (!this.#signal.aborted) {
      let reply: WorkReply | null = this.#handedOut.shift() ?? null;
      if (reply === null) {
        // Before a draining session leaves too: see
        // ResultDelivery.awaitingAcks.
        if (!await this.#delivery.awaitAcks()) return;
        if (this.#drained()) {
          await this.#delivery.awaitFetches();
          return;
        }
        if (await this.#options.disk?.low()) {
          await this.#pause(period);
          continue;
        }
        // Before the request, which tells a Lorica server that the name
        // holds nothing: results a registration under way took to send
        // again (a server restarted mid-build) go first.
        if (!await this.#deliverKept()) return;
        reply = await this.#requestWork();
        // The server restarted (register again), or the session is leaving.
        if (reply === null) return;
      }
      if (reply.type === "build") {
        const refusal = buildRefusal(reply, this.#storeDir);
        if (refusal === null) {
          const handedBack = await this.#build(reply);
          if (this.#registrar.serverRestarted()) return;
          if (!handedBack) continue;
        } else await this.#refuse(reply, refusal);
      } else if (reply.type === "unreadable-reply" && isRefusable(reply)) {
        await this.#refuse(reply, { field: reply.field, reason: reply.reason });
      }
      // Nothing to do (or nothing that may be done, or a daemon that just
      // fell silent): ask again later.
      const jitter = random(Math.max(1, period)) - Math.floor(period / 2);
      await this.#pause(period + jitter, true);
    }
  }

  /**
   * Asks for work and returns the answer; null when the session is to
   * register again (the server restarted) or to leave.
   */
  async #requestWork(): Promise<WorkReply | null> {
    const useIds = this.#registrar.current!.features.has("request-id");
    const requestId = ++this.#requestId;
    this.#connection.keepOnlyProbes();
    // A probe waiting: the server restarted and knows this session no
    // more. Asked now, it could hand a build to a stranger, to requeue it
    // at the registration that follows.
    if (this.#connection.takeProbe()) return null;
    const asked = await this.#offer({
      type: "worker-request-work",
      name: this.#options.name,
      ...(useIds ? { requestId } : {}),
    });
    if (!asked) return null;
    return await this.#reply(useIds ? requestId : undefined);
  }

  /**
   * Keeps `job`, a build that came while the session was registering: the
   * answer to a work request the server got after a restart the session
   * had not seen yet (its probe came first). Dropped, it would stay
   * submitted to this worker for good on a Cuirass server, which never
   * takes a submitted build back (cuirass.md §2.5); Cuirass's own worker
   * builds it too, one reply behind.
   */
  #keepHandedOut(job: HandedOutBuild) {
    if (this.#handedOut.some((kept) => kept.drv === job.drv)) return;
    if (this.#handedOut.length >= MAX_HANDED_OUT) {
      this.#logger.warn("build dropped", {
        drv: job.drv,
        reason:
          `${MAX_HANDED_OUT} builds handed out during registrations wait already`,
      });
      return;
    }
    this.#logger.info("build kept", {
      drv: job.drv,
      reason: "handed out while registering again",
    });
    this.#handedOut.push(job);
  }

  /**
   * Turns down a request that `buildRefusal()` rejects, or one whose
   * fields other than its derivation could not be decoded (a value out of
   * range, of the wrong type, or a field unknown). No process starts
   * and no `build-started` is sent. An honest server meets a refusal only
   * when this worker is misconfigured (another store directory, where the
   * server does not say its own; see Registrar.checkStoreDir) or disagrees
   * with it on the limits a build may have: another worker may well build
   * it.
   *
   * So a server that takes builds back ("holding") gets it back, as from
   * a daemon fallen silent (see #giveUp). It requeues the build, which may
   * then be handed to this worker again, the first in the queue for it;
   * handing it back again and again would keep it from every other build.
   * So it is handed back once, and refused for good the next time, by
   * whichever of the worker's sessions meets it (see HandedBackBuilds): the
   * answer is then `build-failed`. That is the only answer a Cuirass
   * server can take: silence would leave the build submitted to this
   * worker for good, as it never takes a submitted build back (cuirass.md
   * §2.5). The caller pauses a request period afterwards either way, which
   * gives other workers that period to take a build handed back, and lets
   * a server that keeps sending such requests get one answer a period,
   * not a loop. A `build-failed` is this worker's result for the build:
   * one that cannot be sent is kept for the next session of this name to
   * deliver (see #deliverKept), as a build's is (see #report).
   */
  async #refuse(
    job: { drv: string },
    refusal: BuildRefusal | { field: string; reason: string },
  ) {
    const handBack = this.#options.extensions !== false &&
      this.#registrar.current!.features.has("holding") &&
      !this.#handedBack.has(job.drv);
    this.#logger.warn("build refused", {
      drv: job.drv,
      field: refusal.field,
      reason: refusal.reason,
      action: handBack ? "handed back" : "reported failed",
    });
    if (!handBack) await this.#delivery.offer({ drv: job.drv, ok: false });
    else {
      this.#handedBack.add(job.drv);
      await this.#reRegister([]);
    }
    // A server that does not say its store directory (Cuirass, an older
    // Lorica) shows it in its derivations: once one is a derivation of
    // another store, every one will be, and the worker stops rather than
    // turn them all red.
    //
    // That first build is answered (handed back to a Lorica server) before
    // the worker stops, and no earlier stop is possible from the protocol:
    // nothing such a server sends before a build names its store
    // (server-info has addresses and ports, an older welcome its features
    // and nonce). Only its guix publish says it (StoreDir in
    // /nix-cache-info), when it publishes and the worker can reach it: an
    // HTTP round trip, with failures of its own, in every registration, to
    // spare an older Lorica server one build put back in its queue
    // untouched. Not worth it.
    if (refusal.field === "drv") {
      this.#registrar.checkStoreDir(
        derivationStoreDir(job.drv),
        `build ${
          handBack ? "handed back" : "reported failed"
        }, worker stopping`,
      );
    }
  }

  /**
   * The reply to request `id`; null when a probe says the server restarted,
   * or when a draining stop finds the connection lost: the reply cannot come
   * then (on a live connection it is awaited, for it may hand out a build).
   */
  async #reply(id: number | undefined): Promise<WorkReply | null> {
    const deadline = this.#options.clock.monotonic() + this.#replyTimeoutMs;
    const lost = () => this.#mayLeave() && !this.#connection.connected;
    for (;;) {
      const event = await this.#connection.next(
        deadline - this.#options.clock.monotonic(),
        lost,
      );
      if (event === null) {
        if (lost()) return null;
        throw new ServerSilentError(this.#replyTimeoutMs, "a work reply");
      }
      if (event.kind === "probe") return null;
      const reply = event.message;
      if (
        reply.type !== "build" && reply.type !== "no-build" &&
        reply.type !== "unreadable-reply"
      ) {
        this.#logger.warn("reply ignored", { type: reply.type });
        continue;
      }
      if (reply.type === "unreadable-reply" && !isRefusable(reply)) {
        // Dropped (see ServerConnection), and no build to refuse. It ends the
        // wait only if it surely answers this request: with request ids,
        // by carrying this one (a reply that lost its id could be stale);
        // without, replies come one per request on this connection.
        if (id !== undefined && reply.requestId !== id) continue;
        this.#logger.warn("work reply unreadable", {
          tag: reply.tag,
          action: "asking again",
        });
        return reply;
      }
      if (
        id !== undefined && reply.requestId !== undefined &&
        reply.requestId !== id
      ) {
        this.#logger.warn("stale reply dropped", {
          type: reply.type,
          requestId: reply.requestId,
          expected: id,
        });
        continue;
      }
      return reply;
    }
  }

  /**
   * Runs `job` and reports it. Returns whether it was handed back (see
   * #giveUp): the daemon is likely stuck still, so the caller waits a
   * request period before asking for more.
   */
  async #build(job: Extract<Message, { type: "build" }>): Promise<boolean> {
    const registration = this.#registrar.current!;
    this.#logger.info("build received", { drv: job.drv, system: job.system });
    const cancel = new AbortController();
    const current = { drv: job.drv, cancel };
    this.#current = current;
    this.#options.underway?.add(current);
    try {
      await this.#connection.send({
        type: "build-started",
        drv: job.drv,
        worker: this.#options.name,
      });
      const building = runBuild(
        { drv: job.drv, timeout: job.timeout, maxSilent: job.maxSilent },
        {
          guix: this.#options.guix,
          logger: this.#logger,
          substituteUrls: registration.substituteUrls,
          logServer: registration.logServer,
          cores: this.#options.cores,
          // A stop without drain ends the session, the build with it:
          // guix build would otherwise outlive the worker, its daemon
          // building for nobody. So does the end of a drain, the session
          // staying on to hand it back.
          signal: AbortSignal.any([
            cancel.signal,
            this.#signal,
            ...(this.#options.drainOver ? [this.#options.drainOver] : []),
          ]),
          clock: this.#options.clock,
          daemonSilenceGraceSeconds: this.#options.daemonSilenceGraceSeconds,
        },
      );
      let outcome: BuildOutcome | undefined;
      building.then((result) => {
        outcome = result;
        this.#connection.wake();
      });
      // While building, answer the server's restarts at once, so that the
      // new server knows (and keeps) this build.
      try {
        while (outcome === undefined) {
          const event = await this.#connection.next(
            this.#replyTimeoutMs,
            () => outcome !== undefined,
          );
          if (event?.kind === "probe") {
            await this.#reRegisterWhileBuilding(job.drv);
          }
        }
      } catch (error) {
        // A stop without drain: the session ends once guix build is gone
        // (killed, SIGKILL after its grace if need be), not while it runs
        // on to outlive the worker.
        if (this.#signal.aborted) {
          const ended = await building;
          // guix build ended before the stop, its log still being sent (a
          // log server slow to say it stored it): the outcome is known,
          // and a build handed back would be built again.
          if (ended.status === "succeeded" || ended.status === "failed") {
            await this.#delivery.reportOnStop(
              { drv: job.drv, ok: ended.status === "succeeded" },
              HAND_BACK_TIMEOUT_MS,
            );
          } else await this.#handBackOnStop(job.drv);
        } else {
          // The session ends on an error (a server restarted on another
          // store): nobody would take this build's result.
          cancel.abort();
          await building;
        }
        throw error;
      }
      if (cancel.signal.aborted) {
        this.#logger.info("build canceled", { drv: job.drv });
        return false;
      }
      // The drain is over: a build guix build did not finish is handed
      // back; one it finished (its log being sent as the kill came) is
      // reported below, its ack and fetch awaited within the grace.
      if (
        this.#options.drainOver?.aborted &&
        outcome.status !== "succeeded" && outcome.status !== "failed"
      ) {
        await this.#handBackOnStop(job.drv);
        return false;
      }
      if (outcome.status === "daemon-silent") {
        return await this.#giveUp(job, outcome.silentSeconds);
      }
      if (outcome.status === "killed") {
        return await this.#killedFromOutside(job);
      }
      await this.#report(job.drv, outcome.status === "succeeded");
      return false;
    } finally {
      this.#current = undefined;
      this.#options.underway?.delete(current);
    }
  }

  /**
   * Sends the result of `drv`, registered with the server's current life.
   * A result that cannot be sent is kept for the next session of this name
   * to deliver (see #deliverKept), and the session ends.
   */
  async #report(drv: string, ok: boolean) {
    const result = { drv, ok };
    try {
      if (this.#registrar.stale()) await this.#reRegister([drv]);
    } catch (error) {
      this.#options.results?.keep(result, error);
      throw error;
    }
    // With a build under way, the send waits for a connection as needed.
    await this.#delivery.offer(result);
    this.#logger.info(ok ? "build done" : "build failed", { drv });
  }

  /**
   * Delivers the results this session took at its registrations (see
   * ResultDelivery.take): after the registration, which told a Lorica
   * server that this session holds their builds, and before any work
   * request, which would tell it that the name holds nothing (it would
   * requeue them). A server that no longer counts a build as this worker's
   * ignores its result. False when a draining stop ended the session
   * first.
   */
  async #deliverKept(): Promise<boolean> {
    while (this.#delivery.delivering) {
      // The server restarted since: its new life must hear it first (the
      // registration may take more results to send).
      if (this.#registrar.stale()) {
        this.#connection.keepOnlyProbes();
        if (!await this.#registrar.register([])) return false;
        continue;
      }
      if (!await this.#delivery.deliverNext()) return false;
    }
    return true;
  }

  /**
   * A build whose daemon fell silent: not the package's fault, so it is
   * handed back where the protocol allows, by registering again holding
   * nothing (the server requeues what the name held but does not say it
   * holds). A Cuirass server has no way to take a build back: it is
   * reported failed, the reason at the end of its log. True when handed
   * back.
   */
  async #giveUp(
    job: Extract<Message, { type: "build" }>,
    silentSeconds: number,
  ): Promise<boolean> {
    const handBack = this.#options.extensions !== false &&
      this.#registrar.current!.features.has("holding");
    this.#logger.error("daemon silent", {
      seconds: silentSeconds,
      drv: job.drv,
      max_silent: job.maxSilent,
      action: handBack
        ? "guix build killed, build handed back"
        : "guix build killed, build reported failed",
    });
    if (!handBack) {
      await this.#report(job.drv, false);
      return false;
    }
    await this.#reRegister([]);
    return true;
  }

  /**
   * Answers for a build whose `guix build` a signal this worker did not
   * send ended (runBuild's "killed" with neither a stop nor a cancel): a
   * service manager that signals the whole process group at a stop, the
   * OOM killer. Its outcome is unknown, not a failure of the package: a
   * server that takes builds back ("holding") gets it back, once, as a
   * refused build (see #refuse: a worker whose guix build is killed again
   * and again must not keep the build from every other worker); the next
   * time, or to a server that cannot take it back, it is reported failed.
   * Returns whether it was handed back.
   */
  async #killedFromOutside(
    job: Extract<Message, { type: "build" }>,
  ): Promise<boolean> {
    const handBack = this.#options.extensions !== false &&
      this.#registrar.current!.features.has("holding") &&
      !this.#handedBack.has(job.drv);
    this.#logger.warn("build interrupted", {
      drv: job.drv,
      reason: "guix build killed by a signal this worker did not send",
      action: handBack ? "handed back" : "reported failed",
    });
    if (!handBack) {
      await this.#report(job.drv, false);
      return false;
    }
    this.#handedBack.add(job.drv);
    await this.#reRegister([]);
    return true;
  }

  /**
   * Hands back the build a stop killed (a stop without drain, or a drain
   * that timed out): the worker is going and will never report it, and the
   * server would keep it started until its worker timeout. Said as the
   * same registration holding nothing, on the same connection (the server
   * requeues what the name held), with no answer awaited: the session is
   * ending. A Cuirass server has no way to take a build back.
   */
  async #handBackOnStop(drv: string) {
    const registration = this.#registrar.current;
    if (
      this.#options.extensions === false ||
      registration === undefined ||
      !registration.features.has("holding")
    ) return;
    try {
      await this.#connection.send(
        { ...registration.ready, holding: [] },
        AbortSignal.timeout(HAND_BACK_TIMEOUT_MS),
      );
      this.#logger.warn("build handed back", {
        drv,
        reason: "worker stopping",
      });
    } catch (error) {
      this.#logger.warn("build not handed back", { drv, error });
    }
  }

  /**
   * Registers again (mid-build, or to hand a build back), when the
   * protocol lets us say what we hold: `holding`.
   */
  async #reRegister(holding: string[]) {
    if (this.#options.extensions === false) return; // Cuirass never does.
    try {
      this.#connection.keepOnlyProbes();
      await this.#registrar.register(holding);
    } catch (error) {
      if (!(error instanceof ServerSilentError)) throw error;
      this.#logger.warn("server silent", {
        awaiting: error.awaiting,
        action: "reconnecting",
      });
      await this.#reconnect();
    }
  }

  /**
   * Registers again in the middle of building `drv` (the server restarted).
   * A failure (the connection lost as it was sent) does not end the
   * session: the session's end would leave guix build running for nobody,
   * and the build to be done again. The build goes on; its report
   * registers again first, and keeps the result for the next session if it
   * cannot be sent (see #report).
   */
  async #reRegisterWhileBuilding(drv: string) {
    try {
      await this.#reRegister([drv]);
    } catch (error) {
      // A server restarted on another store cannot use this build either.
      if (this.#signal.aborted || error instanceof StoreDirMismatchError) {
        throw error;
      }
      // Whatever of it was sent, the server may not know this session.
      this.#registrar.markUnknown();
      this.#logger.warn("registration failed", {
        drv,
        error,
        action: "building on; the report registers again",
      });
    }
  }

  #cancel(drv: string) {
    if (this.#current?.drv !== drv) {
      this.#logger.info("cancel ignored", { drv, reason: "not building it" });
      return;
    }
    this.#logger.warn("build cancel received", { drv });
    this.#current.cancel.abort();
  }
}
