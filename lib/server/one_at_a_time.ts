// Runs asynchronous tasks one at a time, each once the tasks asked for
// before it have settled: the dispatcher's turns, its looks at what the
// workers still hold, which must not see a turn half done, and the cancels
// and restarts made through it, which a look must not see half done; a
// local batch's build events and its looks at the database, likewise.

/** A queue of tasks run in turn. */
export class OneAtATime {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` after every task given before it; returns its result. */
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }
}
