// Which worker name speaks over which ZeroMQ connection, as the server learns it.

/** Hex form of a routing id, for maps and log lines. */
export function routingKey(routingId: Uint8Array): string {
  return Array.from(routingId, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Remembers the worker name last seen on each connection. Cuirass peers put
 * no name on results, so the connection is what proves who sent them.
 */
export class WorkerLinks {
  readonly #names = new Map<string, string>();

  /** Records that `name` spoke on the connection `routingId`. */
  learn(routingId: Uint8Array, name: string): void {
    this.#names.set(routingKey(routingId), name);
  }

  /** The worker name seen on `routingId`, if any. */
  nameOf(routingId: Uint8Array): string | undefined {
    return this.#names.get(routingKey(routingId));
  }

  /** Forgets a closed connection. */
  forget(routingId: Uint8Array): void {
    this.#names.delete(routingKey(routingId));
  }
}
