// The builds a worker refused and handed back to the server (session.ts
// #refuse), remembered for the life of the worker process: a build handed
// out again is then refused for good, whichever session meets it. Kept per
// session, it would be lost with each session that fails or is restarted
// (the server moved), and each of the worker's names would have its own:
// the same build would go back to the queue once per session, ahead of
// every other build each time.

/** Settings for {@link HandedBackBuilds}. */
export interface HandedBackBuildsOptions {
  /**
   * Most derivations remembered, the oldest forgotten first [256]: enough
   * for every build a server could hand the worker's sessions again soon.
   */
  maxSize?: number;
}

/** The derivations a worker's sessions handed back, shared by them all. */
export class HandedBackBuilds {
  readonly #maxSize: number;
  /** Insertion order is age: the first entry is the oldest. */
  readonly #drvs = new Set<string>();

  constructor(options: HandedBackBuildsOptions = {}) {
    this.#maxSize = options.maxSize ?? 256;
  }

  /** Whether `drv` was handed back (and is remembered still). */
  has(drv: string): boolean {
    return this.#drvs.has(drv);
  }

  /** Remembers `drv` as handed back; the oldest goes past the bound. */
  add(drv: string): void {
    this.#drvs.add(drv);
    if (this.#drvs.size > this.#maxSize) {
      this.#drvs.delete(this.#drvs.values().next().value!);
    }
  }
}
