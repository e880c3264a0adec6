// A ZMTP ROUTER socket: binds, tags each peer with a routing id, receives
// fairly across peers and sends to one peer by id (ROUTER_MANDATORY style).

import { toHex } from "../hex.ts";
import type { Logger } from "../log.ts";
import {
  plainPeerAddress,
  ZmtpClosedError,
  ZmtpConnection,
} from "./connection.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, ZmtpFrameSizeError } from "./frame.ts";
import { type Waiter, waitInLine } from "./waiter.ts";

/** Settings for {@linkcode RouterSocket.bind}. */
export interface RouterOptions {
  /** Address to listen on; default "0.0.0.0". */
  hostname?: string;
  /** TCP port; 0 picks a free one (read it back from `port`). */
  port: number;
  /** Send one empty frame to each new peer right after READY; default true. */
  probe?: boolean;
  /**
   * A frame header announcing a larger frame or message drops that
   * connection before the body is read; default 64 MiB.
   */
  maxMessageBytes?: number;
  /**
   * Connections held at once, handshaking ones included; a newcomer past it
   * is closed at once. Default {@linkcode DEFAULT_MAX_CONNECTIONS}.
   */
  maxConnections?: number;
  /**
   * Connections one remote address may hold at once, so that one host
   * cannot take every place; default
   * {@linkcode DEFAULT_MAX_CONNECTIONS_PER_ADDRESS} (or `maxConnections`
   * when smaller).
   */
  maxConnectionsPerAddress?: number;
  /** Peers that do not finish the handshake in time are dropped; default 30 s. */
  handshakeTimeoutMs?: number;
  /** A send stalled this long drops that peer; default 60 s. */
  sendTimeoutMs?: number;
  /**
   * Bytes sent to one peer that its socket has not taken yet, past which a
   * further send drops that peer instead of queueing (the peer does not
   * read); default `maxMessageBytes`. A send to a peer with nothing
   * pending is always queued, whatever its size.
   */
  maxUnsentBytes?: number;
  /** Messages queued per peer before its reads pause; default 1000. */
  highWaterMark?: number;
  /**
   * Bytes of messages queued per peer before its reads pause; default
   * `maxMessageBytes`.
   */
  highWaterBytes?: number;
  /**
   * Peers silent this long are sent a PING, and dropped when nothing at
   * all came from them `timeoutMs` after it: a peer whose host vanished
   * without a FIN is otherwise found only by TCP keepalive, after hours.
   * Only ZMTP 3.1 peers are pinged (3.0 knows no PING). Default
   * {@linkcode DEFAULT_HEARTBEAT}; null turns it off.
   */
  heartbeat?: Heartbeat | null;
  /** Receives connection-level events ("zmtp peer dropped", ...). */
  logger?: Logger;
  onConnect?: (peer: RouterPeer) => void;
  onDisconnect?: (peer: RouterPeer) => void;
}

/** When a ROUTER pings a silent peer, and how long it waits for a word. */
export interface Heartbeat {
  /** Silence after which a peer is pinged, in ms. */
  intervalMs: number;
  /** Time after the ping by which any traffic must have come, in ms. */
  timeoutMs: number;
}

/**
 * A dead peer found in about a minute and a half. Live peers always
 * answer in time: libzmq answers a PING from its I/O thread, busy or not,
 * and so does this implementation's reader.
 */
export const DEFAULT_HEARTBEAT: Heartbeat = {
  intervalMs: 30_000,
  timeoutMs: 60_000,
};

/** A connected peer as the application sees it. */
export interface RouterPeer {
  routingId: Uint8Array;
  /** Remote IP as seen by us, like libzmq's Peer-Address (IPv6 without brackets). */
  peerAddress: string;
}

/** One received message, with its sender. */
export interface RouterMessage {
  routingId: Uint8Array;
  peerAddress: string;
  /** The frames, without the routing id. */
  frames: Uint8Array[];
}

/** No live peer has this routing id (libzmq's EHOSTUNREACH with ROUTER_MANDATORY). */
export class PeerUnreachableError extends Error {
  routingId: Uint8Array;
  constructor(routingId: Uint8Array, options?: ErrorOptions) {
    super(
      `Cannot send to ZMTP peer ${
        JSON.stringify(toHex(routingId).slice(0, 64))
      }: no live connection has this routing id`,
      options,
    );
    this.name = "PeerUnreachableError";
    this.routingId = routingId.slice();
  }
}

/** Connections a ROUTER holds at once unless told otherwise. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Connections one address may hold unless told otherwise: a worker holds
 * two per session, so 128 sessions on one host.
 */
export const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256;

interface PeerState {
  routingId: Uint8Array;
  key: string;
  peerAddress: string;
  conn: ZmtpConnection;
  queue: RouterMessage[];
  /** Body bytes of the messages in `queue`. */
  queuedBytes: number;
  live: boolean;
  wakeReader?: () => void;
  /** The ZMTP minor version spoken: 1 for peers that can be pinged. */
  minor: number;
  /** When the peer was last pinged (performance.now()), if it was. */
  pingedAtMs?: number;
}

/** A bound ROUTER socket; create it with {@linkcode RouterSocket.bind}. */
export class RouterSocket {
  /** The TCP port actually bound. */
  readonly port: number;
  #listener: Deno.TcpListener;
  #options: Required<
    Pick<
      RouterOptions,
      | "probe"
      | "maxMessageBytes"
      | "maxConnections"
      | "maxConnectionsPerAddress"
      | "handshakeTimeoutMs"
      | "sendTimeoutMs"
      | "maxUnsentBytes"
      | "highWaterMark"
      | "highWaterBytes"
    >
  >;
  #logger?: Logger;
  #onConnect?: (peer: RouterPeer) => void;
  #onDisconnect?: (peer: RouterPeer) => void;
  #peers = new Map<string, PeerState>();
  #connections = new Set<ZmtpConnection>();
  /** Connections per remote address. */
  #addresses = new Map<string, number>();
  #ready: PeerState[] = [];
  #waiters: Waiter<RouterMessage>[] = [];
  #tasks = new Set<Promise<void>>();
  #counter = crypto.getRandomValues(new Uint32Array(1))[0];
  #closing: Promise<void> | null = null;
  #heartbeat: Heartbeat | null;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  private constructor(listener: Deno.TcpListener, options: RouterOptions) {
    const {
      probe = true,
      maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
      maxConnections = DEFAULT_MAX_CONNECTIONS,
      maxConnectionsPerAddress = Math.min(
        maxConnections,
        DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
      ),
      handshakeTimeoutMs = 30_000,
      sendTimeoutMs = 60_000,
      maxUnsentBytes = maxMessageBytes,
      highWaterMark = 1000,
      highWaterBytes = maxMessageBytes,
    } = options;
    this.#listener = listener;
    this.port = listener.addr.port;
    this.#options = {
      probe,
      maxMessageBytes,
      maxConnections,
      maxConnectionsPerAddress,
      handshakeTimeoutMs,
      sendTimeoutMs,
      maxUnsentBytes,
      highWaterMark,
      highWaterBytes,
    };
    this.#logger = options.logger;
    this.#onConnect = options.onConnect;
    this.#onDisconnect = options.onDisconnect;
    this.#heartbeat = options.heartbeat === undefined
      ? DEFAULT_HEARTBEAT
      : options.heartbeat;
    if (this.#heartbeat !== null) {
      const { intervalMs, timeoutMs } = this.#heartbeat;
      // Looked at four times per shortest wait: a verdict comes at most a
      // quarter late.
      this.#heartbeatTimer = setInterval(
        () => this.#checkSilentPeers(),
        Math.max(10, Math.min(intervalMs, timeoutMs) / 4),
      );
    }
  }

  /**
   * Listens on the given address and starts accepting peers.
   * @throws {Deno.errors.AddrInUse} when the port is taken
   */
  static bind(options: RouterOptions): Promise<RouterSocket> {
    const { hostname = "0.0.0.0", port } = options;
    const listener = Deno.listen({ hostname, port, transport: "tcp" });
    const socket = new RouterSocket(listener, options);
    socket.#track(socket.#acceptLoop());
    return Promise.resolve(socket);
  }

  /**
   * Resolves with the next message, taking peers in turn so none starves.
   * @throws {ZmtpClosedError} once the socket is closed
   */
  receive(signal?: AbortSignal): Promise<RouterMessage> {
    if (this.#closing !== null) return Promise.reject(closedError("receive"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const peer = this.#ready.shift();
    if (peer !== undefined) return Promise.resolve(this.#take(peer));
    return waitInLine(this.#waiters, signal);
  }

  /**
   * The next message if one is already waiting, without waiting for one
   * (so that a caller can take a whole burst at once).
   */
  tryReceive(): RouterMessage | undefined {
    if (this.#closing !== null) return undefined;
    const peer = this.#ready.shift();
    return peer === undefined ? undefined : this.#take(peer);
  }

  /**
   * Whether a live connection has this routing id: false once its peer
   * left, even while messages it sent before wait to be received.
   */
  isConnected(routingId: Uint8Array): boolean {
    return this.#peers.get(toHex(routingId))?.live === true;
  }

  /** Iterates over received messages until the socket is closed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<RouterMessage, void> {
    while (true) {
      try {
        yield await this.receive();
      } catch (error) {
        if (error instanceof ZmtpClosedError) return;
        throw error;
      }
    }
  }

  /**
   * Sends one message (frames without the routing id) to the given peer.
   * The message is queued at once (so sends to one peer keep their order);
   * the promise settles when the socket has taken it.
   * @throws {PeerUnreachableError} when no live peer has this id, it drops
   * during the write, or it has more than `maxUnsentBytes` not taken yet
   * (then it is dropped)
   */
  async send(routingId: Uint8Array, frames: Uint8Array[]): Promise<void> {
    const peer = this.#peers.get(toHex(routingId));
    if (peer === undefined || !peer.live) {
      throw new PeerUnreachableError(routingId);
    }
    const unsent = peer.conn.unsentBytes;
    const size = messageBytes(frames);
    const limit = this.#options.maxUnsentBytes;
    if (unsent > 0 && unsent + size > limit) {
      // Queueing more would only grow the memory held for a peer that
      // reads nothing; libzmq drops at its high-water mark too.
      this.#logger?.warn("zmtp slow peer dropped", {
        peer: peer.peerAddress,
        identity: peer.key.slice(0, 64),
        unsent,
        limit,
      });
      peer.conn.close();
      throw new PeerUnreachableError(routingId, {
        cause: new Error(
          `${unsent} bytes already wait for the peer to read, limit ${limit}`,
        ),
      });
    }
    try {
      await peer.conn.send(frames);
    } catch (error) {
      if (error instanceof TypeError) throw error;
      throw new PeerUnreachableError(routingId, { cause: error });
    }
  }

  /** Stops listening and closes every connection; resolves when all is released. */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    clearInterval(this.#heartbeatTimer);
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(closedError("receive"));
    }
    for (const connection of this.#connections) connection.close();
    for (const peer of this.#peers.values()) peer.wakeReader?.();
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }

  async #acceptLoop(): Promise<void> {
    while (this.#closing === null) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing !== null) return;
        if (error instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: pause instead of spinning.
        this.#logger?.warn("zmtp accept failed", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.#closing !== null) {
        conn.close();
        return;
      }
      const address = plainPeerAddress(conn.remoteAddr.hostname);
      const refusal = this.#refusal(address);
      if (refusal !== undefined) {
        this.#logger?.warn("zmtp connection refused", {
          peer: address,
          ...refusal,
        });
        conn.close();
        continue;
      }
      this.#addresses.set(address, (this.#addresses.get(address) ?? 0) + 1);
      this.#track(this.#servePeer(conn, address));
    }
  }

  /** Why a newcomer from `address` cannot be taken in; undefined if it can. */
  #refusal(address: string): { reason: string; limit: number } | undefined {
    // Each connection may buffer a message or two (maxMessageBytes): the
    // cap bounds the total, and one address's share leaves room for the
    // others. Handshaking connections count too.
    const { maxConnections, maxConnectionsPerAddress } = this.#options;
    if (this.#connections.size >= maxConnections) {
      return { reason: "too many connections", limit: maxConnections };
    }
    if ((this.#addresses.get(address) ?? 0) >= maxConnectionsPerAddress) {
      return {
        reason: "too many connections from this address",
        limit: maxConnectionsPerAddress,
      };
    }
    return undefined;
  }

  async #servePeer(tcp: Deno.TcpConn, address: string): Promise<void> {
    const conn = new ZmtpConnection(tcp, {
      socketType: "ROUTER",
      maxMessageBytes: this.#options.maxMessageBytes,
      handshakeTimeoutMs: this.#options.handshakeTimeoutMs,
      sendTimeoutMs: this.#options.sendTimeoutMs,
    });
    this.#connections.add(conn);
    let peer: PeerState | undefined;
    let announced = false;
    try {
      const handshake = await conn.handshake();
      peer = this.#register(conn, handshake.identity, handshake.minor);
      if (peer === undefined) return;
      if (this.#options.probe) await conn.send([new Uint8Array(0)]);
      this.#notify(this.#onConnect, peer);
      announced = true;
      while (true) {
        const frames = await conn.read();
        if (frames === null) break;
        await this.#deliver(peer, frames);
      }
    } catch (error) {
      if (error instanceof ZmtpFrameSizeError) {
        this.#logger?.warn("zmtp message refused", {
          peer: conn.peerAddress,
          identity: peer?.key.slice(0, 64),
          size: error.size,
          limit: error.maxBytes,
        });
      } else {
        this.#logger?.debug("zmtp peer dropped", {
          peer: conn.peerAddress,
          error: error instanceof Error ? error.message : String(error),
        });
      }
    } finally {
      conn.close();
      await conn.drained();
      this.#connections.delete(conn);
      const left = (this.#addresses.get(address) ?? 1) - 1;
      if (left > 0) this.#addresses.set(address, left);
      else this.#addresses.delete(address);
      if (peer !== undefined) {
        peer.live = false;
        if (this.#peers.get(peer.key) === peer) this.#peers.delete(peer.key);
        if (announced) this.#notify(this.#onDisconnect, peer);
      }
    }
  }

  #register(
    conn: ZmtpConnection,
    identity: Uint8Array,
    minor: number,
  ): PeerState | undefined {
    if (this.#closing !== null) return undefined;
    let routingId: Uint8Array;
    if (identity.length > 0) {
      routingId = identity.slice();
      if (this.#peers.has(toHex(routingId))) {
        // Same as libzmq without ROUTER_HANDOVER: the newcomer is refused.
        this.#logger?.warn("zmtp duplicate identity refused", {
          peer: conn.peerAddress,
          identity: toHex(routingId).slice(0, 64),
        });
        return undefined;
      }
    } else {
      do routingId = this.#generateId(); while (
        this.#peers.has(toHex(routingId))
      );
    }
    const peer: PeerState = {
      routingId,
      key: toHex(routingId),
      peerAddress: conn.peerAddress,
      conn,
      queue: [],
      queuedBytes: 0,
      live: true,
      minor,
    };
    this.#peers.set(peer.key, peer);
    return peer;
  }

  /**
   * Pings the peers silent for the heartbeat's interval, and drops those
   * that said nothing for its timeout after their ping.
   */
  #checkSilentPeers(): void {
    const { intervalMs, timeoutMs } = this.#heartbeat!;
    const now = performance.now();
    for (const peer of this.#peers.values()) {
      // A peer whose reads are paused (the application is behind) has its
      // bytes waiting unread: that is not silence.
      if (!peer.live || peer.minor < 1 || peer.wakeReader !== undefined) {
        continue;
      }
      const heard = peer.conn.lastHeardMs;
      if (now - heard < intervalMs) continue;
      if (peer.pingedAtMs === undefined || peer.pingedAtMs < heard) {
        peer.pingedAtMs = now;
        peer.conn.ping();
      } else if (now - peer.pingedAtMs >= timeoutMs) {
        this.#logger?.warn("zmtp silent peer dropped", {
          peer: peer.peerAddress,
          identity: peer.key.slice(0, 64),
          silentMs: Math.round(now - heard),
          reason: "no answer to a ping",
        });
        // Its reader ends and the peer is let go as on a hang-up.
        peer.conn.close();
      }
    }
  }

  #generateId(): Uint8Array {
    // libzmq's form: a zero byte, then a 32-bit counter (random start here,
    // so ids of a restarted server do not repeat the previous run's).
    const id = new Uint8Array(5);
    this.#counter = (this.#counter + 1) >>> 0;
    new DataView(id.buffer).setUint32(1, this.#counter);
    return id;
  }

  async #deliver(peer: PeerState, frames: Uint8Array[]): Promise<void> {
    const message = {
      routingId: peer.routingId.slice(),
      peerAddress: peer.peerAddress,
      frames,
    };
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) return waiter.resolve(message);
    peer.queue.push(message);
    peer.queuedBytes += messageBytes(frames);
    if (peer.queue.length === 1) this.#ready.push(peer);
    if (
      peer.queue.length >= this.#options.highWaterMark ||
      peer.queuedBytes >= this.#options.highWaterBytes
    ) {
      // Back-pressure: stop reading this peer until the application catches up.
      await new Promise<void>((resolve) => {
        peer.wakeReader = resolve;
      });
      peer.wakeReader = undefined;
    }
  }

  #take(peer: PeerState): RouterMessage {
    const message = peer.queue.shift()!;
    peer.queuedBytes -= messageBytes(message.frames);
    if (peer.queue.length > 0) this.#ready.push(peer);
    peer.wakeReader?.();
    return message;
  }

  #notify(
    callback: ((peer: RouterPeer) => void) | undefined,
    peer: PeerState,
  ): void {
    try {
      callback?.({
        routingId: peer.routingId.slice(),
        peerAddress: peer.peerAddress,
      });
    } catch (error) {
      this.#logger?.error("zmtp callback failed", { error: String(error) });
    }
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    const forget = () => this.#tasks.delete(task);
    task.then(forget, forget);
  }
}

function closedError(action: string): ZmtpClosedError {
  return new ZmtpClosedError(
    `Cannot ${action} on ZMTP ROUTER: socket is closed`,
  );
}

function messageBytes(frames: readonly Uint8Array[]): number {
  let total = 0;
  for (const frame of frames) total += frame.length;
  return total;
}
