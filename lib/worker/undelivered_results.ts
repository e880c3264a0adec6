// The build results a worker name's sessions could not deliver: the build
// finished and its outcome is known, but the send failed (the connection
// lost mid-message, the server restarting) or the session ended first. A
// session that fails is followed by a new one of the same name (worker.ts),
// which delivers them (session.ts): otherwise a Lorica server requeues the
// build and it is built again, and a Cuirass server keeps it started for as
// long as the worker's name goes on pinging (cuirass.md §2.5, §2.8).

import type { Logger } from "../log.ts";

/** A build's outcome that the server has not heard. */
export interface UndeliveredResult {
  readonly drv: string;
  readonly ok: boolean;
}

/** Settings for {@link UndeliveredResults}. */
export interface UndeliveredResultsOptions {
  /** Says what happens to each result; bound to the worker name. */
  logger: Logger;
  /**
   * Most results kept [4]: a session runs one build at a time and ends
   * when a result cannot be sent, so more than one means sessions failing
   * one after another.
   */
  maxKept?: number;
  /** Sessions that try to deliver a result before it is dropped [3]. */
  maxAttempts?: number;
}

interface Kept {
  drv: string;
  ok: boolean;
  /** Sessions that took it for delivery. */
  attempts: number;
}

/** The undelivered results of one worker name, shared by its sessions. */
export class UndeliveredResults {
  readonly #logger: Logger;
  readonly #maxKept: number;
  readonly #maxAttempts: number;
  #kept: Kept[] = [];

  constructor(options: UndeliveredResultsOptions) {
    this.#logger = options.logger;
    this.#maxKept = options.maxKept ?? 4;
    this.#maxAttempts = options.maxAttempts ?? 3;
  }

  /** How many results wait for a session to deliver them. */
  get size(): number {
    return this.#kept.length;
  }

  /**
   * Keeps `result`, which could not be sent because of `reason`, for the
   * next session; the oldest result is dropped when too many wait.
   */
  keep(result: UndeliveredResult, reason: unknown): void {
    let kept = this.#kept.find((k) => k.drv === result.drv);
    if (kept === undefined) {
      if (this.#kept.length >= this.#maxKept) {
        // The oldest has failed the most deliveries already.
        const oldest = this.#kept.shift()!;
        this.#logger.warn("result dropped", {
          drv: oldest.drv,
          status: statusOf(oldest.ok),
          reason: `${this.#maxKept} undelivered results wait already`,
        });
      }
      kept = { ...result, attempts: 0 };
      this.#kept.push(kept);
    }
    kept.ok = result.ok;
    this.#logger.warn("result kept", {
      drv: kept.drv,
      status: statusOf(kept.ok),
      attempts: kept.attempts,
      reason,
    });
  }

  /**
   * The results one session is to deliver, each counted as one attempt of
   * that session; a result that had all its attempts is dropped, with a
   * warning, instead.
   */
  startAttempt(): UndeliveredResult[] {
    const exhausted = this.#kept.filter((k) => k.attempts >= this.#maxAttempts);
    for (const kept of exhausted) {
      this.#logger.warn("result dropped", {
        drv: kept.drv,
        status: statusOf(kept.ok),
        reason: `not delivered in ${kept.attempts} sessions`,
      });
    }
    this.#kept = this.#kept.filter((k) => k.attempts < this.#maxAttempts);
    for (const kept of this.#kept) kept.attempts++;
    return this.#kept.map(({ drv, ok }) => ({ drv, ok }));
  }

  /** The server has been sent the result of `drv`: it is kept no more. */
  delivered(drv: string): void {
    const kept = this.#kept.find((k) => k.drv === drv);
    if (kept === undefined) return;
    this.#kept = this.#kept.filter((k) => k !== kept);
    this.#logger.info("result delivered", {
      drv,
      status: statusOf(kept.ok),
      attempts: kept.attempts,
    });
  }
}

function statusOf(ok: boolean): string {
  return ok ? "succeeded" : "failed";
}
