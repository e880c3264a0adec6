// A ZMTP DEALER socket: one outgoing connection, kept up in the background
// with exponential back-off, sending only while connected.

import type { Logger } from "../log.ts";
import { type Clock, systemClock } from "../clock.ts";
import { ZmtpClosedError, ZmtpConnection } from "./connection.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./frame.ts";
import { type Waiter, waitInLine } from "./waiter.ts";

/** Settings for {@linkcode DealerSocket.connect}. */
export interface DealerOptions {
  hostname: string;
  port: number;
  /** Asks the ROUTER to use this routing id; default: let it pick one. */
  identity?: Uint8Array;
  /** First reconnect delay; default 100 ms. */
  reconnectInitialMs?: number;
  /** Longest reconnect delay (doubling, with jitter); default 5000 ms. */
  reconnectMaxMs?: number;
  /** Time allowed for TCP connect, and again for the ZMTP handshake; default 5000 ms. */
  connectTimeoutMs?: number;
  /** A larger frame or message from the ROUTER drops the connection; default 64 MiB. */
  maxMessageBytes?: number;
  /** A send stalled this long drops the connection; default 60 s. */
  sendTimeoutMs?: number;
  /** Messages queued before reads pause; default 1000. */
  highWaterMark?: number;
  /** Used for the back-off sleeps; default the system clock. */
  clock?: Clock;
  /** Receives connection-level events ("zmtp connect failed", ...). */
  logger?: Logger;
  onConnect?: () => void;
  onDisconnect?: (error?: unknown) => void;
  /** An attempt to connect failed (TCP or handshake); another follows. */
  onConnectFailed?: (error: unknown) => void;
}

interface SessionEnd {
  connected: boolean;
  error?: unknown;
}

/** A DEALER socket; create it with {@linkcode DealerSocket.connect}. */
export class DealerSocket {
  #options: DealerOptions;
  #clock: Clock;
  #conn: ZmtpConnection | null = null;
  #current: ZmtpConnection | null = null;
  #attempt: AbortController | null = null;
  #stop = new AbortController();
  #inbox: Uint8Array[][] = [];
  #receivers: Waiter<Uint8Array[]>[] = [];
  #senders: Waiter<ZmtpConnection>[] = [];
  #wakeReader: (() => void) | undefined;
  #closed = false;
  #loop: Promise<void> = Promise.resolve();

  private constructor(options: DealerOptions) {
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
  }

  /** Starts connecting in the background and returns at once; reconnects until closed. */
  static connect(options: DealerOptions): DealerSocket {
    const socket = new DealerSocket(options);
    socket.#loop = socket.#run();
    return socket;
  }

  /** True while a handshaken connection is up. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /**
   * Sends one message, first waiting for a connection if there is none;
   * nothing is queued for later, so an aborted send is simply not sent.
   * @throws {ZmtpClosedError} when the socket is closed or the connection drops mid-send
   */
  send(frames: Uint8Array[], signal?: AbortSignal): Promise<void> {
    return this.sendAll([frames], signal);
  }

  /**
   * Sends `messages` in order, all on one connection (the live one, or the
   * next if there is none): a peer that answers them in turn gets none of
   * them on a connection and the rest on another, whatever drops meanwhile.
   * @throws {ZmtpClosedError} when the socket is closed or the connection drops mid-send
   */
  async sendAll(messages: Uint8Array[][], signal?: AbortSignal): Promise<void> {
    if (this.#closed) throw closedError("send");
    signal?.throwIfAborted();
    const conn = this.#conn ?? await waitInLine(this.#senders, signal);
    // Queued at once: the connection writes them in this order.
    await Promise.all(messages.map((frames) => conn.send(frames)));
  }

  /**
   * Resolves with the next message received.
   * @throws {ZmtpClosedError} once the socket is closed
   */
  receive(signal?: AbortSignal): Promise<Uint8Array[]> {
    if (this.#closed) return Promise.reject(closedError("receive"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const message = this.#inbox.shift();
    if (message === undefined) return waitInLine(this.#receivers, signal);
    this.#wakeReader?.();
    return Promise.resolve(message);
  }

  /** Closes the connection and stops reconnecting; resolves when all is released. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#stop.abort();
      this.#attempt?.abort();
      this.#current?.close();
      this.#wakeReader?.();
      for (const waiter of this.#receivers.splice(0)) {
        waiter.reject(closedError("receive"));
      }
      for (const waiter of this.#senders.splice(0)) {
        waiter.reject(closedError("send"));
      }
    }
    await this.#loop;
  }

  async #run(): Promise<void> {
    const {
      reconnectInitialMs = 100,
      reconnectMaxMs = 5000,
    } = this.#options;
    let delay = reconnectInitialMs;
    while (!this.#closed) {
      const end = await this.#session();
      if (end.connected) {
        delay = reconnectInitialMs;
        this.#notify(() => this.#options.onDisconnect?.(end.error));
      } else {
        this.#options.logger?.debug("zmtp connect failed", {
          error: end.error instanceof Error ? end.error.message : end.error,
        });
        if (!this.#closed) {
          this.#notify(() => this.#options.onConnectFailed?.(end.error));
        }
      }
      if (this.#closed) break;
      try {
        // Jitter in [delay/2, delay) keeps many workers from reconnecting in step.
        await this.#clock.sleep(
          delay * (0.5 + Math.random() / 2),
          this.#stop.signal,
        );
      } catch {
        break;
      }
      delay = Math.min(delay * 2, reconnectMaxMs);
    }
  }

  async #session(): Promise<SessionEnd> {
    const {
      hostname,
      port,
      identity,
      connectTimeoutMs = 5000,
      maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
      sendTimeoutMs = 60_000,
    } = this.#options;

    let tcp: Deno.TcpConn;
    const attempt = new AbortController();
    this.#attempt = attempt;
    const timer = setTimeout(() => attempt.abort(), connectTimeoutMs);
    try {
      tcp = await Deno.connect({
        hostname,
        port,
        transport: "tcp",
        signal: attempt.signal,
      });
    } catch (error) {
      return { connected: false, error };
    } finally {
      clearTimeout(timer);
      this.#attempt = null;
    }

    const conn = new ZmtpConnection(tcp, {
      socketType: "DEALER",
      identity,
      maxMessageBytes,
      handshakeTimeoutMs: connectTimeoutMs,
      sendTimeoutMs,
    });
    this.#current = conn;
    let connected = false;
    try {
      if (this.#closed) return { connected };
      await conn.handshake();
      if (this.#closed) return { connected };
      this.#conn = conn;
      connected = true;
      for (const waiter of this.#senders.splice(0)) waiter.resolve(conn);
      this.#notify(() => this.#options.onConnect?.());
      while (true) {
        const frames = await conn.read();
        if (frames === null) return { connected };
        await this.#deliver(frames);
      }
    } catch (error) {
      return { connected, error };
    } finally {
      this.#conn = null;
      this.#current = null;
      conn.close();
      await conn.drained();
    }
  }

  async #deliver(frames: Uint8Array[]): Promise<void> {
    const receiver = this.#receivers.shift();
    if (receiver !== undefined) return receiver.resolve(frames);
    this.#inbox.push(frames);
    const { highWaterMark = 1000 } = this.#options;
    if (this.#inbox.length >= highWaterMark && !this.#closed) {
      // Back-pressure: stop reading until the application catches up.
      await new Promise<void>((resolve) => {
        this.#wakeReader = resolve;
      });
      this.#wakeReader = undefined;
    }
  }

  #notify(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      this.#options.logger?.error("zmtp callback failed", {
        error: String(error),
      });
    }
  }
}

function closedError(action: string): ZmtpClosedError {
  return new ZmtpClosedError(
    `Cannot ${action} on ZMTP DEALER: socket is closed`,
  );
}
