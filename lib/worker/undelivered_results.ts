// The build results a worker name's sessions have not seen the server take:
// the build finished and its outcome is known, but the send failed (the
// connection lost mid-message, the server restarting) or the session ended
// first; or it was sent to a server that acknowledges results
// ("result-ack") and no ack came yet, the server perhaps gone before it
// committed it, or still up but unable to commit it. A session that fails
// is followed by a new one of the same name (worker.ts), and a session
// registers again after a server restart; either then says it holds these
// builds and sends their results again, and a session whose ack is late
// sends its result again before it asks for work (session.ts): otherwise a
// Lorica server requeues the build and it is built again, and a Cuirass
// server keeps it started for as long as the worker's name goes on pinging
// (cuirass.md §2.5, §2.8).

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
   * Most results kept [4]: a session runs one build at a time, ends when a
   * result cannot be sent, and hears a result's ack before its next build
   * is handed out, so more than one means sessions failing one after
   * another, or a server restarting again and again.
   */
  maxKept?: number;
  /**
   * Deliveries of a result tried after its first sending, before it is
   * dropped [3]: one per session for a result never sent, one per
   * registration, or per reply timeout its ack is late, for one sent and
   * not acknowledged.
   */
  maxAttempts?: number;
}

interface Kept {
  drv: string;
  ok: boolean;
  /** Deliveries tried after the first sending. */
  attempts: number;
  /** Sent to a server that acknowledges results; no ack heard yet. */
  sent: boolean;
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

  /** How many results wait for a session to deliver them, or for an ack. */
  get size(): number {
    return this.#kept.length;
  }

  /**
   * The derivations whose results were sent to a server that acknowledges
   * results and wait for its ack.
   */
  awaitingAck(): string[] {
    return this.#kept.filter((k) => k.sent).map((k) => k.drv);
  }

  /** The derivations whose results are kept, sent or not. */
  drvs(): string[] {
    return this.#kept.map((k) => k.drv);
  }

  /** Whether the result of `drv` is kept still. */
  has(drv: string): boolean {
    return this.#kept.some((k) => k.drv === drv);
  }

  /**
   * Keeps `result`, which could not be sent because of `reason`, for the
   * next session; the oldest result is dropped when too many wait.
   */
  keep(result: UndeliveredResult, reason: unknown): void {
    const kept = this.#entry(result);
    kept.sent = false;
    this.#logger.warn("result kept", {
      drv: kept.drv,
      status: statusOf(kept.ok),
      attempts: kept.attempts,
      reason,
    });
  }

  /**
   * Keeps `result`, sent (or being sent) to a server that acknowledges
   * results, until {@link acknowledged}: until then each registration says
   * it holds the build and sends it again (see {@link resendAttempt}).
   */
  awaitAck(result: UndeliveredResult): void {
    this.#entry(result).sent = true;
  }

  /**
   * The server says it took the result of `drv` (`outcome`: what it made
   * of it): it is kept no more. False when no such result was kept (an
   * ack sent twice, or for a result dropped since).
   */
  acknowledged(drv: string, outcome: string): boolean {
    const kept = this.#kept.find((k) => k.drv === drv);
    if (kept === undefined) return false;
    this.#kept = this.#kept.filter((k) => k !== kept);
    // The first sending acknowledged is every build's lot: not news.
    const fields = {
      drv,
      status: statusOf(kept.ok),
      outcome,
      attempts: kept.attempts,
    };
    if (kept.attempts === 0) this.#logger.debug("result acknowledged", fields);
    else this.#logger.info("result acknowledged", fields);
    return true;
  }

  /**
   * The results one session is to deliver, each counted as one attempt of
   * that session; a result that had all its attempts is dropped, with a
   * warning, instead.
   */
  startAttempt(): UndeliveredResult[] {
    return this.#attempt(this.#kept);
  }

  /**
   * The results sent to a server that acknowledges results whose ack has
   * not come, but those of `except` (the caller has them already): to be
   * sent again after a registration, for the server may have lost them
   * (it restarted), or once their ack is late (it could not commit them).
   * Each is counted as one attempt; a result that had all
   * its attempts is dropped, with a warning, instead.
   */
  resendAttempt(except: ReadonlySet<string>): UndeliveredResult[] {
    return this.#attempt(
      this.#kept.filter((k) => k.sent && !except.has(k.drv)),
    );
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

  /** The entry of `result`, made (the oldest dropped if need be) if new. */
  #entry(result: UndeliveredResult): Kept {
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
      kept = { ...result, attempts: 0, sent: false };
      this.#kept.push(kept);
    }
    kept.ok = result.ok;
    return kept;
  }

  /**
   * `taken`, each counted as one more attempt, but those that had all
   * their attempts: dropped, with a warning.
   */
  #attempt(taken: Kept[]): UndeliveredResult[] {
    const exhausted = taken.filter((k) => k.attempts >= this.#maxAttempts);
    for (const kept of exhausted) {
      this.#logger.warn("result dropped", {
        drv: kept.drv,
        status: statusOf(kept.ok),
        reason: kept.sent
          ? `not acknowledged after ${kept.attempts + 1} sendings`
          : `not delivered in ${kept.attempts} sessions`,
      });
    }
    this.#kept = this.#kept.filter((k) => !exhausted.includes(k));
    const left = taken.filter((k) => !exhausted.includes(k));
    for (const kept of left) kept.attempts++;
    return left.map(({ drv, ok }) => ({ drv, ok }));
  }
}

function statusOf(ok: boolean): string {
  return ok ? "succeeded" : "failed";
}
