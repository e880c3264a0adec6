// The successes of a worker name that a server acknowledged as "fetching"
// and said it would tell the end of ("outputs-fetched"): until it does, its
// fetcher reads them from this worker's publish server, so a draining
// worker must not stop that server yet (worker.ts, session.ts). Once that
// server is dead no fetch from it can succeed: none is awaited any more.

/**
 * Most derivations kept [16]: a session builds one at a time and a fetch
 * takes minutes at most, so more means a server that never says; the
 * oldest is dropped then, rather than grow for the life of the process.
 */
const DEFAULT_MAX_KEPT = 16;

/** The derivations of one worker name whose outputs are being fetched. */
export class OutputsBeingFetched {
  readonly #maxKept: number;
  readonly #drvs = new Set<string>();
  readonly #abandoned = new AbortController();

  constructor(options: { maxKept?: number } = {}) {
    this.#maxKept = options.maxKept ?? DEFAULT_MAX_KEPT;
  }

  /** How many fetches the server has yet to say the end of. */
  get size(): number {
    return this.#drvs.size;
  }

  /**
   * Aborted once the fetches are abandoned (see abandon()): what waits for
   * their ends listens to it.
   */
  get abandoned(): AbortSignal {
    return this.#abandoned.signal;
  }

  /** The derivations being fetched, oldest first. */
  drvs(): string[] {
    return [...this.#drvs];
  }

  /**
   * The server fetches the outputs of `drv` (its result acknowledged as
   * "fetching"); returns the derivation dropped to make room, if any.
   */
  add(drv: string): string | undefined {
    if (this.#abandoned.signal.aborted) return undefined;
    let dropped: string | undefined;
    if (!this.#drvs.has(drv) && this.#drvs.size >= this.#maxKept) {
      dropped = this.#drvs.values().next().value!;
      this.#drvs.delete(dropped);
    }
    this.#drvs.add(drv);
    return dropped;
  }

  /** The server's fetch of `drv` ended; false when it was not kept. */
  ended(drv: string): boolean {
    return this.#drvs.delete(drv);
  }

  /**
   * The publish server the fetches read from is dead: their ends are
   * awaited no more, nor those of fetches added later. Returns the
   * derivations that were being fetched, oldest first.
   */
  abandon(): string[] {
    const drvs = this.drvs();
    this.#drvs.clear();
    this.#abandoned.abort();
    return drvs;
  }
}
