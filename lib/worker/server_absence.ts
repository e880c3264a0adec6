// A session's server away, said in the log. The DEALER socket tries its
// connection again every few seconds in silence (dealer.ts), and a session
// whose server went away said so only at its next reply timeout, a minute
// or more on: an operator saw nothing meanwhile. Now the first connection
// attempt that fails says it at once, with the server and how long it has
// been silent; one fails every few seconds while it lasts, and says it
// again once every interval, not each time; and the connection back says
// the server is there again. A worker's sessions of one server (--workers=N)
// share one: their sockets fail together, and it is said once, not N times.

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";

/** Settings for {@link ServerAbsence}. */
export interface ServerAbsenceOptions {
  /** The server as the log names it: `host:port`. */
  server: string;
  clock: Clock;
  /**
   * Bound to the session's worker name, or the worker's when its sessions
   * share this.
   */
  logger: Logger;
  /** Least time between two warnings while the server stays away [60 s]. */
  repeatMs?: number;
}

/**
 * Whether a session's server (or that of a worker's sessions) is away, and
 * since when it said nothing.
 */
export class ServerAbsence {
  readonly #server: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #repeatMs: number;
  /**
   * When the server was last known there: it sent something, or a
   * connection to it was up (a worker building for hours hears nothing
   * from it meanwhile), or the session began.
   */
  #heardAt: number;
  /** When the last warning was said; undefined while the server is up. */
  #warnedAt: number | undefined;
  #closed = false;

  constructor(options: ServerAbsenceOptions) {
    this.#server = options.server;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#repeatMs = options.repeatMs ?? 60_000;
    this.#heardAt = this.#clock.monotonic();
  }

  /** The server sent something. */
  heard(): void {
    this.#heardAt = this.#clock.monotonic();
  }

  /** A connection to the server was lost: it was there until now. */
  lost(): void {
    this.#heardAt = this.#clock.monotonic();
  }

  /**
   * An attempt to connect to the server failed with `error`: said at once
   * when it is the first since a connection was up, or since the session
   * began, and then when the last warning is `repeatMs` old.
   */
  unreachable(error: unknown): void {
    if (this.#closed) return;
    const now = this.#clock.monotonic();
    if (
      this.#warnedAt !== undefined && now - this.#warnedAt < this.#repeatMs
    ) return;
    this.#warnedAt = now;
    this.#logger.warn("server unreachable", {
      server: this.#server,
      silent: this.#silentSeconds(now),
      error,
    });
  }

  /** A connection to the server is up: said when it was said away. */
  connected(): void {
    if (this.#closed || this.#warnedAt === undefined) return;
    this.#warnedAt = undefined;
    this.#logger.info("server reachable again", {
      server: this.#server,
      silent: this.#silentSeconds(this.#clock.monotonic()),
    });
  }

  /** The sessions are over: their sockets closing say nothing. */
  close(): void {
    this.#closed = true;
  }

  /** Whole seconds since the server was last known there. */
  #silentSeconds(now: number): number {
    return Math.round((now - this.#heardAt) / 1000);
  }
}
