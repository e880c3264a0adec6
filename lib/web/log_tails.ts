// The decoded ends of build logs for the build pages. A gzip log has to be
// inflated from its start to reach its end: up to 256 MiB of work on the
// thread that also dispatches builds. So only a few logs are read at once,
// a few more requests wait their turn and the rest are told to come back,
// and the tails of logs that did not change since are kept.

import { type LogTail, readLogTail } from "./build_log.ts";
import { HttpError } from "./http_error.ts";

export interface LogTailsOptions {
  /** Logs inflated at once; default 2. */
  maxReads?: number;
  /** Requests waiting for a read beyond those; default 32. */
  maxWaiting?: number;
  /** Tails kept, the least recently asked for dropped first; default 16. */
  cacheEntries?: number;
  /** Reads a tail; default {@link readLogTail}. */
  read?: (path: string) => Promise<LogTail | null>;
}

/** The tails of build logs, read a bounded few at a time and kept. */
export class LogTails {
  readonly #maxReads: number;
  readonly #maxWaiting: number;
  readonly #cacheEntries: number;
  readonly #read: (path: string) => Promise<LogTail | null>;
  /** By path: the tail and the file's size and time it was read at. */
  readonly #cache = new Map<string, { version: string; tail: LogTail }>();
  readonly #waiting: (() => void)[] = [];
  #reading = 0;

  constructor(options: LogTailsOptions = {}) {
    this.#maxReads = options.maxReads ?? 2;
    this.#maxWaiting = options.maxWaiting ?? 32;
    this.#cacheEntries = options.cacheEntries ?? 16;
    this.#read = options.read ?? ((path) => readLogTail(path));
  }

  /** Logs being read now, and requests waiting for their turn. */
  get busy(): { reading: number; waiting: number } {
    return { reading: this.#reading, waiting: this.#waiting.length };
  }

  /**
   * The tail of the log at `path`; null when there is none.
   * @throws {HttpError} 503 when too many requests already wait for a read
   */
  async tail(path: string): Promise<LogTail | null> {
    const version = await fileVersion(path);
    if (version === null) return null;
    const kept = this.#cache.get(path);
    if (kept?.version === version) {
      // Most recently asked for last, so that the first is the one to drop.
      this.#cache.delete(path);
      this.#cache.set(path, kept);
      return kept.tail;
    }
    await this.#turn();
    try {
      const tail = await this.#read(path);
      // A log still being written is read again next time anyway.
      if (tail !== null && !tail.incomplete) this.#keep(path, version, tail);
      return tail;
    } finally {
      // The place goes to the first one waiting, if any.
      const next = this.#waiting.shift();
      if (next === undefined) this.#reading--;
      else next();
    }
  }

  /** Resolves when this request may read (counted as reading). */
  #turn(): Promise<void> {
    if (this.#reading < this.#maxReads) {
      this.#reading++;
      return Promise.resolve();
    }
    if (this.#waiting.length >= this.#maxWaiting) {
      throw new HttpError(
        503,
        `Cannot show the build log now: ${this.#reading} logs being read and ${this.#waiting.length} requests waiting; try again shortly`,
      );
    }
    // A read that ends hands its place over: the count stays as it is.
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #keep(path: string, version: string, tail: LogTail): void {
    this.#cache.delete(path);
    this.#cache.set(path, { version, tail });
    while (this.#cache.size > this.#cacheEntries) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
  }
}

/** The size and modification time of a file, or null when it is absent. */
async function fileVersion(path: string): Promise<string | null> {
  try {
    const info = await Deno.stat(path);
    return `${info.size}:${info.mtime?.getTime() ?? 0}`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}
