// A session's connection to its server: the DEALER socket its requests and
// the server's replies go on, replaced by a fresh one when the server falls
// silent (a stale reply of the old one then cannot reach the session), and
// the queue of what the server sent, each event numbered with the
// connection it came on. Apart from the session (session.ts), which decides
// what to ask and what an answer means: this reads and decodes, counts
// probes and connections, says the server away or back (ServerAbsence),
// and wakes whatever waits for the server; a wait that ends with no reply
// is a ServerSilentError, and the session replaces the connection.

import { type DealerOptions, DealerSocket } from "../zmtp/dealer.ts";
import { ZmtpClosedError } from "../zmtp/connection.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
} from "../protocol/messages.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  isRefusable,
  type UnreadableReply,
  unreadableReply,
} from "./unreadable_reply.ts";
import { ServerAbsence } from "./server_absence.ts";

/**
 * What the server sent, with the number of the connection it came on (see
 * ServerConnection.connections): a reply answers only what was sent on
 * that connection.
 */
export type ServerEvent =
  & { connection: number }
  & ({ kind: "probe" } | {
    kind: "message";
    message: Message | UnreadableReply;
  });

/** Settings for {@link ServerConnection}. */
export interface ServerConnectionOptions {
  server: { hostname: string; port: number };
  /** The server as the log names it: `host:port`. */
  address: string;
  /** Ends the reading, and every wait for the server. */
  signal: AbortSignal;
  clock: Clock;
  /** Bound to the session's worker name. */
  logger: Logger;
  /** Opens the DEALER socket, and each one replacing it. */
  connectDealer: (options: DealerOptions) => DealerSocket;
  /**
   * Says in the log when the server is away and when it is back; absent,
   * the connection's own, closed with it.
   */
  absence?: ServerAbsence;
  /**
   * Takes a message the session answers as soon as it is read, whatever it
   * waits for meanwhile (a refusal, an acceptance, a cancel, an ack), with
   * the number of the connection it came on: true when taken, and it is not
   * queued.
   */
  takeAtOnce: (
    message: Message | UnreadableReply,
    connection: number,
  ) => boolean;
}

/** No reply from the server in time. */
export class ServerSilentError extends Error {
  constructor(readonly waitedMs: number, readonly awaiting: string) {
    super(
      `Cannot get ${awaiting} from the server: no reply in ${waitedMs} ms`,
    );
    this.name = "ServerSilentError";
  }
}

const EMPTY = new Uint8Array(0);
const MAX_QUEUED_EVENTS = 64;

/** The session's DEALER connection to its server, and its events. */
export class ServerConnection {
  readonly #server: { hostname: string; port: number };
  readonly #signal: AbortSignal;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #connectDealer: (options: DealerOptions) => DealerSocket;
  readonly #takeAtOnce: ServerConnectionOptions["takeAtOnce"];
  #dealer!: DealerSocket;
  #reading: Promise<void> = Promise.resolve();
  #events: ServerEvent[] = [];
  #wake: (() => void) | undefined;
  /** Cuts short the wait under way, if any, at a probe (see onProbe). */
  #onProbe: (() => void) | undefined;
  /** Probes seen on the current DEALER's connections. */
  #probes = 0;
  /**
   * Connections the current DEALER made: a server restart means a new one
   * (see Registrar.register).
   */
  #connections = 0;
  /** Says in the log when the server is away, and when it is back. */
  readonly #absence: ServerAbsence;
  /** Whether #absence is this connection's own, to close with it. */
  readonly #ownsAbsence: boolean;
  /** Set by close(): its socket closing says nothing of the server. */
  #closing = false;

  constructor(options: ServerConnectionOptions) {
    this.#server = options.server;
    this.#signal = options.signal;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#connectDealer = options.connectDealer;
    this.#takeAtOnce = options.takeAtOnce;
    this.#ownsAbsence = options.absence === undefined;
    this.#absence = options.absence ?? new ServerAbsence({
      server: options.address,
      clock: options.clock,
      logger: options.logger,
    });
    this.#connect();
  }

  /** Whether a connection is up: what is sent now goes on it. */
  get connected(): boolean {
    return this.#dealer.connected;
  }

  /**
   * Connections the current DEALER made: the number of the live one (or
   * of the last, while none is up). Counted before a send returns: the
   * dealer says it is connected before it hands out the connection.
   */
  get connections(): number {
    return this.#connections;
  }

  /** Probes seen since the current DEALER was opened. */
  get probes(): number {
    return this.#probes;
  }

  /**
   * Whether connection number `connection` is up: what is sent now goes on
   * it (the dealer takes its live connection as the send is made).
   */
  isLive(connection: number): boolean {
    return this.#dealer.connected && this.#connections === connection;
  }

  /**
   * A fresh DEALER, its connections counted from none: stale replies of the
   * old one cannot reach the session.
   */
  async reconnect() {
    const old = this.#dealer;
    this.#connect();
    await old.close();
  }

  async close(): Promise<void> {
    this.#closing = true;
    if (this.#ownsAbsence) this.#absence.close();
    await this.#dealer.close();
    await this.#reading;
  }

  /** Sends `message` on the live connection, waiting for one if need be. */
  async send(message: Message, signal: AbortSignal = this.#signal) {
    await this.#dealer.send([EMPTY, encodeMessage(message)], signal);
  }

  /** Sends `messages`, in order and on one connection. */
  async sendAll(messages: Message[], signal: AbortSignal = this.#signal) {
    const frames = messages.map((message) => [EMPTY, encodeMessage(message)]);
    await this.#dealer.sendAll(frames, signal);
  }

  /** Wakes whatever waits for the next event, to see where things stand. */
  wake() {
    this.#wake?.();
  }

  /** The next event, or null after `timeoutMs` or once `until()` holds. */
  async next(
    timeoutMs: number,
    until: () => boolean = () => false,
  ): Promise<ServerEvent | null> {
    // Monotonic: a step of the wall clock must not end or stretch the wait.
    const deadline = this.#clock.monotonic() + timeoutMs;
    while (this.#events.length === 0) {
      if (until()) return null;
      const remaining = deadline - this.#clock.monotonic();
      if (remaining <= 0) return null;
      const stop = new AbortController();
      const woken = new Promise<void>((resolve) => (this.#wake = resolve));
      await Promise.race([
        woken,
        this.#clock.sleep(
          remaining,
          AbortSignal.any([stop.signal, this.#signal]),
        ).catch(() => {}),
      ]);
      stop.abort();
      this.#wake = undefined;
      this.#signal.throwIfAborted();
    }
    return this.#events.shift()!;
  }

  /**
   * Drops the events queued but probes: what the server sent before is
   * answered by nothing the session will ask next.
   */
  keepOnlyProbes() {
    this.#events = this.#events.filter((e) => e.kind === "probe");
  }

  /** Whether a probe is queued. */
  probeQueued(): boolean {
    return this.#events.some((e) => e.kind === "probe");
  }

  /** Takes the first probe queued; false when none is. */
  takeProbe(): boolean {
    const index = this.#events.findIndex((e) => e.kind === "probe");
    if (index === -1) return false;
    this.#events.splice(index, 1);
    return true;
  }

  /**
   * Calls `listener` at each probe read from now on (queued as ever), or
   * nobody once it is undefined: a pause cut short by the server's restart.
   */
  onProbe(listener: (() => void) | undefined) {
    this.#onProbe = listener;
  }

  #connect() {
    const dealer: DealerSocket = this.#connectDealer({
      ...this.#server,
      onConnect: () => {
        this.#connections++;
        if (this.#saysAbsence(dealer)) this.#absence.connected();
      },
      // A reply awaited on a lost connection will not come: see the
      // session's #reply.
      onDisconnect: () => {
        if (this.#saysAbsence(dealer)) this.#absence.lost();
        this.#wake?.();
      },
      onConnectFailed: (error) => {
        if (this.#saysAbsence(dealer)) this.#absence.unreachable(error);
      },
    });
    this.#dealer = dealer;
    this.#events = [];
    this.#probes = 0;
    this.#connections = 0;
    this.#reading = this.#readLoop(this.#dealer);
  }

  /**
   * Whether `dealer`'s connections tell #absence of the server: not once it
   * was replaced by a fresh one (see reconnect), nor once the connection
   * closes (a shared #absence outlives it).
   */
  #saysAbsence(dealer: DealerSocket): boolean {
    return dealer === this.#dealer && !this.#closing;
  }

  async #readLoop(dealer: DealerSocket) {
    while (!this.#signal.aborted) {
      let frames: Uint8Array[];
      try {
        frames = await dealer.receive(this.#signal);
      } catch (error) {
        if (!(error instanceof ZmtpClosedError) && !this.#signal.aborted) {
          this.#logger.warn("receive failed", { error });
        }
        return;
      }
      if (dealer !== this.#dealer) return;
      this.#absence.heard();
      // The dealer reads a new connection only after a back-off sleep, and
      // this loop takes each message as soon as it is read: every message
      // of a connection is here before the next connection is counted.
      const connection = this.#connections;
      if (frames.length === 1 && frames[0].length === 0) {
        this.#probes++;
        this.#push({ kind: "probe", connection });
        this.#onProbe?.();
        continue;
      }
      const payload = frames.length === 2 && frames[0].length === 0
        ? frames[1]
        : frames[frames.length - 1];
      let message: Message | UnreadableReply;
      try {
        message = decodeMessage(payload);
      } catch (error) {
        // A work reply goes on as far as it could be read: a build named
        // is refused (see the session's #refuse), and one that answers the
        // request waited on ends the wait (see its #reply). Anything else
        // is dropped.
        const unreadable = unreadableReply(error);
        if (unreadable === null || !isRefusable(unreadable)) {
          this.#logger.warn("reply dropped", { reason: error });
        }
        if (unreadable === null) continue;
        message = unreadable;
      }
      if (this.#takeAtOnce(message, connection)) continue;
      this.#push({ kind: "message", message, connection });
    }
  }

  #push(event: ServerEvent) {
    this.#events.push(event);
    if (this.#events.length > MAX_QUEUED_EVENTS) this.#events.shift();
    this.#wake?.();
  }
}
