// What the server knows about each ZeroMQ connection: the worker name that
// speaks on it, the Lorica extensions it negotiated, its auth state.

import { plainPeerAddress } from "../zmtp/connection.ts";
import type { ConnectionNonces } from "./connection_nonces.ts";

/** Hex form of a routing id, for maps and log lines. */
export function routingKey(routingId: Uint8Array): string {
  // Called several times per message: a table lookup, not toString/padStart.
  let key = "";
  for (const byte of routingId) key += HEX[byte];
  return key;
}

const HEX = Array.from(
  { length: 256 },
  (_, b) => b.toString(16).padStart(2, "0"),
);

/** Compares IP addresses, treating IPv4-mapped IPv6 as IPv4. */
export function sameAddress(a: string, b: string): boolean {
  return plainPeerAddress(a) === plainPeerAddress(b);
}

/** One connection's state. */
export interface WorkerLink {
  routingId: Uint8Array;
  /** The worker name last seen on this connection. */
  name?: string;
  /** True once the peer sent `lorica-hello`. */
  lorica: boolean;
  /** Lorica features both ends support. */
  features: Set<string>;
  /** The nonces sent in `lorica-welcome`, which auth proofs cover. */
  nonces?: ConnectionNonces;
  /** The name this connection proved a key for. */
  authenticated?: string;
  /** The peer's address, as the server sees it. */
  peerAddress?: string;
  /** Probed since it last asked for work as a known worker (see Dispatcher). */
  askedToRegister?: boolean;
  /**
   * Its work requests refused unauthenticated were logged as a warning
   * since it last authenticated: the next ones are debug lines.
   */
  refusalWarned?: boolean;
}

/** Connections remembered at most; the oldest are forgotten first. */
const MAX_LINKS = 10_000;

/**
 * Remembers the state of each connection, and which connection each worker
 * name uses for its work requests. Cuirass peers put no name on results, so
 * the connection is what proves who sent them.
 */
export class WorkerLinks {
  readonly #links = new Map<string, WorkerLink>();
  readonly #byName = new Map<string, string>();

  /** The state of `routingId`, created empty on first use. */
  get(routingId: Uint8Array): WorkerLink {
    const key = routingKey(routingId);
    let link = this.#links.get(key);
    if (link === undefined) {
      if (this.#links.size >= MAX_LINKS) {
        const oldest = this.#links.keys().next().value!;
        this.#drop(oldest);
      }
      link = {
        routingId: routingId.slice(),
        lorica: false,
        features: new Set(),
      };
      this.#links.set(key, link);
    }
    return link;
  }

  /** The state of `routingId` if known, without creating it. */
  peek(routingId: Uint8Array): WorkerLink | undefined {
    return this.#links.get(routingKey(routingId));
  }

  /**
   * Records that `name` spoke on `routingId`; `main` marks the connection
   * its work requests use (where a cancel must go).
   */
  learn(routingId: Uint8Array, name: string, main = false): void {
    const link = this.get(routingId);
    link.name = name;
    if (main) this.#byName.set(name, routingKey(routingId));
  }

  /** The worker name seen on `routingId`, if any. */
  nameOf(routingId: Uint8Array): string | undefined {
    return this.peek(routingId)?.name;
  }

  /** The connection `name` requests work on, if still open. */
  connectionOf(name: string): WorkerLink | undefined {
    const key = this.#byName.get(name);
    return key === undefined ? undefined : this.#links.get(key);
  }

  /** Forgets a closed connection. */
  forget(routingId: Uint8Array): void {
    this.#drop(routingKey(routingId));
  }

  /** Number of connections remembered. */
  get size(): number {
    return this.#links.size;
  }

  #drop(key: string) {
    const link = this.#links.get(key);
    this.#links.delete(key);
    if (link?.name !== undefined && this.#byName.get(link.name) === key) {
      this.#byName.delete(link.name);
    }
  }
}
