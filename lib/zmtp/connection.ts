// One ZMTP 3.1 peer connection over TCP: NULL handshake, message reads, PING
// answers and PINGs of our own, and a serialised write queue.

import {
  DEFAULT_MAX_MESSAGE_BYTES,
  encodeCommandFrame,
  encodeMessage,
  type Frame,
  FrameDecoder,
  ZmtpSyntaxError,
} from "./frame.ts";
import {
  encodeError,
  encodeGreeting,
  encodePing,
  encodePong,
  encodeReady,
  GreetingReader,
  parseCommand,
  parseErrorReason,
  parseMetadata,
  parsePing,
} from "./greeting.ts";

/** The socket types this implementation speaks. */
export type SocketType = "ROUTER" | "DEALER";

/** Settings for {@linkcode ZmtpConnection}. */
export interface ConnectionOptions {
  socketType: SocketType;
  /** Sent as the READY `Identity` property; default empty. */
  identity?: Uint8Array;
  /** Largest frame, and largest message, accepted; default 64 MiB. */
  maxMessageBytes?: number;
  /** Time allowed for greeting plus READY exchange; default 30 s. */
  handshakeTimeoutMs?: number;
  /** A write stalled this long drops the connection; default 60 s. */
  sendTimeoutMs?: number;
}

/** What the peer told us during the handshake. */
export interface PeerHandshake {
  socketType: string;
  /** The peer's `Identity` property, empty when it sent none. */
  identity: Uint8Array;
  /** All READY properties, keyed by lower-case name. */
  properties: Map<string, Uint8Array>;
  /** The ZMTP minor version both sides speak (the lower one). */
  minor: number;
}

/** The handshake failed: wrong mechanism or socket type, ERROR from the peer, timeout. */
export class ZmtpHandshakeError extends Error {
  /** Stable reason: "mechanism", "socket-type", "peer-error", "timeout", "protocol". */
  code: string;
  /** The ERROR reason the peer sent, if any. */
  peerReason?: string;
  constructor(
    code: string,
    message: string,
    options?: ErrorOptions & { peerReason?: string },
  ) {
    super(message, options);
    this.name = "ZmtpHandshakeError";
    this.code = code;
    this.peerReason = options?.peerReason;
  }
}

/** The connection (or socket) was closed before the operation completed. */
export class ZmtpClosedError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ZmtpClosedError";
  }
}

// RFC 37: which peer socket types each of ours may talk to.
const COMPATIBLE: Record<SocketType, readonly string[]> = {
  ROUTER: ["DEALER", "REQ", "ROUTER"],
  DEALER: ["REP", "DEALER", "ROUTER"],
};
// A message of more frames than this is treated as an attack, not data.
const MAX_FRAMES_PER_MESSAGE = 4096;
const READ_CHUNK = 64 * 1024;

const IPV4_MAPPED_REGEXP = /^::ffff:([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)$/i;

/**
 * `address` with an IPv4-mapped IPv6 address (what a dual-stack listener
 * sees of an IPv4 peer) in its dotted IPv4 form. The server hands a peer's
 * address back to it in `server-info`, and a Cuirass worker pastes that
 * into its publish URL unbracketed, so only the dotted form stays a URL.
 */
export function plainPeerAddress(address: string): string {
  return address.replace(IPV4_MAPPED_REGEXP, "$1");
}

/** Wraps one TCP connection and speaks ZMTP 3.1 (NULL mechanism) on it. */
export class ZmtpConnection {
  /** The remote IP as seen by us (IPv6 without brackets). */
  readonly peerAddress: string;
  #conn: Deno.TcpConn;
  #socketType: SocketType;
  #identity: Uint8Array;
  #handshakeTimeoutMs: number;
  #sendTimeoutMs: number;
  #decoder: FrameDecoder;
  #frames: Frame[] = [];
  #readBuffer = new Uint8Array(READ_CHUNK);
  #writeChain: Promise<void> = Promise.resolve();
  /** Bytes queued for writing that the socket has not taken yet. */
  #unsentBytes = 0;
  #closed = false;
  #timedOut = false;
  /** A PONG is queued and not yet taken by the socket. */
  #pongWaiting = false;
  /** When the peer last sent a byte (performance.now()). */
  #lastHeardMs = performance.now();
  /** A PING of ours is queued and not yet taken by the socket. */
  #pingWaiting = false;

  constructor(conn: Deno.TcpConn, options: ConnectionOptions) {
    const {
      socketType,
      identity = new Uint8Array(0),
      maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
      handshakeTimeoutMs = 30_000,
      sendTimeoutMs = 60_000,
    } = options;
    this.#conn = conn;
    this.#socketType = socketType;
    this.#identity = identity;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#sendTimeoutMs = sendTimeoutMs;
    // A frame header announcing more than the limit (alone or with the
    // frames before it) ends the connection before its body is read.
    this.#decoder = new FrameDecoder({
      maxFrameBytes: maxMessageBytes,
      maxMessageBytes,
    });
    this.peerAddress = plainPeerAddress(conn.remoteAddr.hostname);
    try {
      conn.setNoDelay(true);
    } catch {
      // Only an optimisation; a closed socket is noticed by the first read.
    }
    try {
      // A peer whose host vanished without a FIN (power loss, a dropped
      // link) leaves a connection that only a write could end, holding one
      // of the places its address may have. A ROUTER's heartbeat (ping)
      // ends it within a minute or two; the kernel's probes, after its
      // tcp_keepalive_time (two hours by default), end those of peers that
      // cannot be pinged (ZMTP 3.0).
      conn.setKeepAlive(true);
    } catch {
      // As above: a closed socket is noticed by the first read.
    }
  }

  /**
   * Bytes of sent messages not yet taken by the socket: they grow while the
   * peer does not read.
   */
  get unsentBytes(): number {
    return this.#unsentBytes;
  }

  /** When the peer last sent anything (milliseconds of performance.now()). */
  get lastHeardMs(): number {
    return this.#lastHeardMs;
  }

  /**
   * Sends a PING, which a ZMTP 3.1 peer answers with a PONG even while its
   * application reads nothing (libzmq answers from its I/O thread). For
   * peers of ZMTP 3.1 only: a 3.0 peer knows no such command. Its time to
   * live is 0, which asks nothing of the peer. A failed write closes the
   * connection, which its reader sees.
   */
  ping(): void {
    if (this.#pingWaiting || this.#closed) return;
    this.#pingWaiting = true;
    this.#enqueue(encodeCommandFrame(encodePing(0)))
      .catch(() => {})
      .finally(() => this.#pingWaiting = false);
  }

  /** True once {@linkcode close} ran or the connection failed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Exchanges greetings and READY commands; closes the connection on failure.
   * @throws {ZmtpHandshakeError} on a refused or malformed handshake
   * @throws {ZmtpClosedError} when the peer hangs up first
   */
  async handshake(): Promise<PeerHandshake> {
    const timer = setTimeout(() => {
      this.#timedOut = true;
      this.close();
    }, this.#handshakeTimeoutMs);
    try {
      return await this.#handshake();
    } catch (error) {
      this.close();
      if (this.#timedOut) {
        throw new ZmtpHandshakeError(
          "timeout",
          `Cannot complete ZMTP handshake with ${
            JSON.stringify(this.peerAddress)
          }: no READY within ${this.#handshakeTimeoutMs} ms`,
          { cause: error },
        );
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Returns the next message (all its frames), answering PINGs on the way;
   * null once the peer closed or {@linkcode close} was called.
   * @throws {ZmtpSyntaxError} on a framing error (the connection is closed)
   * @throws {ZmtpFrameSizeError} on a frame header announcing an oversized
   * frame or message (the connection is closed)
   */
  async read(): Promise<Uint8Array[] | null> {
    const message: Uint8Array[] = [];
    try {
      while (true) {
        const frame = await this.#nextFrame();
        if (frame === null) return null;
        if (frame.command) {
          this.#handleCommand(frame.body);
          continue;
        }
        message.push(frame.body);
        if (message.length > MAX_FRAMES_PER_MESSAGE) {
          throw new ZmtpSyntaxError(
            "too-many-frames",
            `Cannot read ZMTP message: more than ${MAX_FRAMES_PER_MESSAGE} frames`,
          );
        }
        if (!frame.more) return message;
      }
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * Writes one message; writes are queued so messages never interleave.
   * @throws {ZmtpClosedError} when the connection is or becomes closed
   */
  send(frames: readonly Uint8Array[]): Promise<void> {
    return this.#enqueue(encodeMessage(frames));
  }

  /** Closes the TCP connection; pending reads end with null, pending sends reject. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by Deno after an error.
    }
  }

  /** Resolves once every queued write has settled (use after close). */
  async drained(): Promise<void> {
    await this.#writeChain;
  }

  async #handshake(): Promise<PeerHandshake> {
    const ours = this.#socketType;
    await this.#enqueue(encodeGreeting());
    const reader = new GreetingReader();
    let result: ReturnType<GreetingReader["push"]>;
    do {
      const chunk = await this.#readChunk();
      if (chunk === null) throw this.#hungUp("greeting");
      result = reader.push(chunk);
    } while (result === undefined);
    const { greeting, rest } = result;
    if (greeting.mechanism !== "NULL") {
      throw new ZmtpHandshakeError(
        "mechanism",
        `Cannot complete ZMTP handshake: peer mechanism ${
          JSON.stringify(greeting.mechanism)
        } is not "NULL"`,
      );
    }
    const minor = greeting.major > 3 ? 1 : Math.min(1, greeting.minor);
    this.#frames.push(...this.#decoder.push(rest));

    await this.#enqueue(encodeCommandFrame(encodeReady({
      "Socket-Type": ours,
      "Identity": this.#identity,
    })));
    const frame = await this.#nextFrame();
    if (frame === null) throw this.#hungUp("READY");
    if (!frame.command) {
      throw new ZmtpHandshakeError(
        "protocol",
        "Cannot complete ZMTP handshake: peer sent a message before READY",
      );
    }
    const command = parseCommand(frame.body);
    if (command.name === "ERROR") {
      const peerReason = parseErrorReason(command.data);
      throw new ZmtpHandshakeError(
        "peer-error",
        `Cannot complete ZMTP handshake: peer sent ERROR ${
          JSON.stringify(peerReason)
        }`,
        { peerReason },
      );
    }
    if (command.name !== "READY") {
      throw new ZmtpHandshakeError(
        "protocol",
        `Cannot complete ZMTP handshake: expected READY, found ${
          JSON.stringify(command.name)
        }`,
      );
    }
    const properties = parseMetadata(command.data);
    const socketType = new TextDecoder().decode(
      properties.get("socket-type") ?? new Uint8Array(0),
    );
    if (!COMPATIBLE[ours].includes(socketType)) {
      await this.#enqueue(
        encodeCommandFrame(encodeError("Invalid socket type")),
      )
        .catch(() => {});
      throw new ZmtpHandshakeError(
        "socket-type",
        `Cannot complete ZMTP handshake: peer socket type ${
          JSON.stringify(socketType)
        } cannot talk to ${ours}`,
      );
    }
    return {
      socketType,
      identity: properties.get("identity") ?? new Uint8Array(0),
      properties,
      minor,
    };
  }

  #handleCommand(body: Uint8Array): void {
    const command = parseCommand(body);
    switch (command.name) {
      case "PING": {
        const { context } = parsePing(command.data);
        // One PONG at a time: a peer that pings on and reads nothing would
        // otherwise have every answer wait in memory, without bound. Any
        // traffic proves liveness to a libzmq peer, so one answer for a
        // burst of PINGs loses nothing.
        if (this.#pongWaiting) return;
        this.#pongWaiting = true;
        // A failed PONG write closes the connection; the next read sees it.
        this.#enqueue(encodeCommandFrame(encodePong(context)))
          .catch(() => {})
          .finally(() => this.#pongWaiting = false);
        return;
      }
      case "ERROR":
        throw new ZmtpHandshakeError(
          "peer-error",
          `Cannot keep ZMTP connection: peer sent ERROR ${
            JSON.stringify(parseErrorReason(command.data))
          }`,
          { peerReason: parseErrorReason(command.data) },
        );
      case "READY":
        throw new ZmtpHandshakeError(
          "protocol",
          "Cannot keep ZMTP connection: peer sent a second READY",
        );
      default:
        // PONG and PUB/SUB commands carry nothing for ROUTER or DEALER.
        return;
    }
  }

  async #nextFrame(): Promise<Frame | null> {
    while (this.#frames.length === 0) {
      this.#decoder.check();
      const chunk = await this.#readChunk();
      if (chunk === null) return null;
      this.#frames = this.#decoder.push(chunk);
    }
    return this.#frames.shift()!;
  }

  async #readChunk(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    let n: number | null;
    try {
      n = await this.#conn.read(this.#readBuffer);
    } catch (error) {
      if (this.#closed) return null;
      this.close();
      throw new ZmtpClosedError(
        `Cannot read from ZMTP peer ${JSON.stringify(this.peerAddress)}: ${
          errorText(error)
        }`,
        { cause: error },
      );
    }
    if (n === null) {
      this.close();
      return null;
    }
    this.#lastHeardMs = performance.now();
    // The decoders copy what they keep, so the buffer can be reused.
    return this.#readBuffer.subarray(0, n);
  }

  #enqueue(bytes: Uint8Array): Promise<void> {
    this.#unsentBytes += bytes.length;
    const run = this.#writeChain.then(() => this.#writeAll(bytes)).finally(
      () => this.#unsentBytes -= bytes.length,
    );
    this.#writeChain = run.catch(() => {});
    return run;
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    if (this.#closed) {
      throw new ZmtpClosedError(
        `Cannot send to ZMTP peer ${
          JSON.stringify(this.peerAddress)
        }: connection is closed`,
      );
    }
    let stalled = false;
    const timer = setTimeout(() => {
      stalled = true;
      this.close();
    }, this.#sendTimeoutMs);
    try {
      let offset = 0;
      while (offset < bytes.length) {
        offset += await this.#conn.write(bytes.subarray(offset));
      }
    } catch (error) {
      this.close();
      throw new ZmtpClosedError(
        `Cannot send to ZMTP peer ${JSON.stringify(this.peerAddress)}: ${
          stalled
            ? `write stalled for ${this.#sendTimeoutMs} ms`
            : errorText(error)
        }`,
        { cause: error },
      );
    } finally {
      clearTimeout(timer);
    }
  }

  #hungUp(stage: string): ZmtpClosedError {
    return new ZmtpClosedError(
      `Cannot complete ZMTP handshake with ${
        JSON.stringify(this.peerAddress)
      }: connection closed while waiting for ${stage}`,
    );
  }
}

function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return JSON.stringify(text.slice(0, 200));
}
