// A task asked for again while it runs is run once more after that run,
// however many times it was asked meanwhile: a burst of notifications
// (one PostgreSQL NOTIFY per cancel made elsewhere) costs a server two
// looks at the database, not one look each, all at once, crowding its
// connection pool.

/** `task` run one at a time, the askings during a run folded into one. */
export class Coalesced {
  readonly #task: () => Promise<void>;
  #running: Promise<void> | null = null;
  /** The run asked for while one runs, begun when that one ends. */
  #next: Promise<void> | null = null;

  constructor(task: () => Promise<void>) {
    this.#task = task;
  }

  /**
   * Runs the task, now or once the run under way ends; resolves when a
   * run begun after this call has ended (so that it saw what the caller
   * changed before the call), rejecting as that run does.
   */
  run(): Promise<void> {
    const running = this.#running;
    if (running === null) return this.#start();
    this.#next ??= running.catch(() => {}).then(() => {
      this.#next = null;
      return this.#start();
    });
    return this.#next;
  }

  #start(): Promise<void> {
    const run: Promise<void> = this.#task().finally(() => {
      if (this.#running === run) this.#running = null;
    });
    this.#running = run;
    return run;
  }
}
