// The build results a session owes its server, and what the server says
// back of them. A server that acknowledges results ("result-ack") gets each
// again until its ack comes, and one that says when it fetched a success's
// outputs ("outputs-fetched") is waited for by a draining session; results
// a session could not send are delivered by the next one of its name
// (UndeliveredResults). Apart from the session (session.ts), which decides
// when it registers and when it may send: this takes the results to send
// at each registration, makes the messages that carry them, and keeps the
// acks and fetch ends in the name's shared records.

import type { Message } from "../protocol/messages.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { SessionOptions } from "./session.ts";
import type { ServerConnection, ServerEvent } from "./server_connection.ts";
import type { OutputsBeingFetched } from "./outputs_being_fetched.ts";
import type { UntoldFetches } from "./untold_fetches.ts";
import type {
  UndeliveredResult,
  UndeliveredResults,
} from "./undelivered_results.ts";

/** What a session's registration says of the results sent under it. */
export interface ResultTerms {
  /** The Lorica features the server agreed to. */
  readonly features: ReadonlySet<string>;
  /** This worker's publish server, the results' URL. */
  readonly publishUrl: string;
}

/** Settings for {@link ResultDelivery}: the session's own, and these. */
export interface ResultDeliveryOptions
  extends Pick<SessionOptions, "results" | "fetching" | "untold"> {
  /** The session's connection: its events, and sends that wait for none. */
  connection: ServerConnection;
  clock: Clock;
  /** Bound to the session's worker name. */
  logger: Logger;
  /** Longest wait for an ack before the result is sent again. */
  replyTimeoutMs: number;
  /** The session's last registration; undefined before the first. */
  registration: () => ResultTerms | undefined;
  /**
   * Whether a result sent now may reach a server that does not know the
   * session's registration (see Registrar.stale).
   */
  registrationStale: () => boolean;
  /**
   * Sends `message` as the session sends (see its #offer): false when a
   * draining stop found no connection.
   */
  offer: (message: Message) => Promise<boolean>;
}

/** The results one session is to send, and those it awaits answers for. */
export class ResultDelivery {
  readonly #results: UndeliveredResults | undefined;
  readonly #fetching: OutputsBeingFetched | undefined;
  readonly #untold: UntoldFetches | undefined;
  readonly #connection: ServerConnection;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #replyTimeoutMs: number;
  readonly #registration: () => ResultTerms | undefined;
  readonly #registrationStale: () => boolean;
  readonly #offer: (message: Message) => Promise<boolean>;
  /**
   * The results this session is to send (see deliverNext), taken at each
   * registration (see take): those earlier sessions kept, at the first;
   * those sent since and not acknowledged, at a later one.
   */
  #delivering: UndeliveredResult[] | undefined;

  constructor(options: ResultDeliveryOptions) {
    this.#results = options.results;
    this.#fetching = options.fetching;
    this.#untold = options.untold;
    this.#connection = options.connection;
    this.#clock = options.clock;
    this.#logger = options.logger;
    this.#replyTimeoutMs = options.replyTimeoutMs;
    this.#registration = options.registration;
    this.#registrationStale = options.registrationStale;
    this.#offer = options.offer;
  }

  /**
   * Whether the server still needs this session: results wait for its ack
   * (see awaitingAcks), or their outputs are being fetched (the end of
   * the fetch comes on this session's connection).
   */
  owesServer(): boolean {
    return this.awaitingAcks() || (this.#fetching?.size ?? 0) > 0;
  }

  /**
   * Whether results this name's sessions sent wait for the server's ack. A
   * draining session waits for them as for a build under way, registering
   * again if the server restarts meanwhile: leaving at once would lose for
   * good a result lost in flight. The drain's timeout bounds the wait.
   */
  awaitingAcks(): boolean {
    return (this.#results?.awaitingAck().length ?? 0) > 0;
  }

  /**
   * Takes the results to send once the registration under way is made,
   * and returns them (the registration says it holds their builds): at the
   * session's first, every result its name keeps (one attempt of this
   * session); at a later one (the server restarted, or the session hands a
   * build back), those not sent yet and, besides, those sent since whose
   * ack has not come (one attempt each), for a server's new life may not
   * have them.
   */
  take(): readonly UndeliveredResult[] {
    this.#delivering = this.#toDeliver();
    return this.#delivering;
  }

  #toDeliver(): UndeliveredResult[] {
    const results = this.#results;
    if (results === undefined) return [];
    if (this.#delivering === undefined) return results.startAttempt();
    const taken = new Set(this.#delivering.map((result) => result.drv));
    return [...this.#delivering, ...results.resendAttempt(taken)];
  }

  /** Whether results taken at a registration (see take) wait to be sent. */
  get delivering(): boolean {
    return this.#results !== undefined &&
      (this.#delivering?.length ?? 0) > 0;
  }

  /**
   * Sends the first result taken (see take), unless its ack came meanwhile
   * (that of its last sending). False when a draining stop kept it (see
   * offer), and it stays first.
   */
  async deliverNext(): Promise<boolean> {
    const results = this.#results!;
    const result = this.#delivering![0];
    if (results.has(result.drv)) {
      if (!await this.offer(result)) return false;
      if (!this.#registration()!.features.has("result-ack")) {
        results.delivered(result.drv);
      }
    }
    this.#delivering!.shift();
    return true;
  }

  /**
   * Offers `result` to the server (see the session's #offer). One that
   * cannot be sent is kept for the next session of this name; false when
   * it was kept because a draining stop found no connection. Sent to a
   * server that acknowledges results, it is kept until its ack comes.
   */
  async offer(result: UndeliveredResult): Promise<boolean> {
    const results = this.#results;
    // Before the send: its ack may be read before the send returns.
    if (this.#registration()!.features.has("result-ack")) {
      results?.awaitAck(result);
    }
    let sent: boolean;
    try {
      sent = await this.#offer(this.#resultMessage(result));
    } catch (error) {
      results?.keep(result, error);
      throw error;
    }
    if (!sent) {
      results?.keep(result, "no connection, and the worker is stopping");
      return false;
    }
    this.#reported(result);
    return true;
  }

  /**
   * Waits for the acks of the results sent (see offer) before a draining
   * session leaves (see awaitingAcks), and before a work request, which
   * tells a Lorica server that the name holds nothing: it would requeue a
   * build whose result it never took in (a turn it could not commit and
   * stayed up: no ack, nor any other answer). A result whose ack has not
   * come within the reply timeout is sent again, as one of its attempts
   * (see UndeliveredResults.resendAttempt), on the connection the
   * registration went on. False when the session is to register again
   * first (a probe came, or that connection is gone): the registration
   * says it holds these builds and sends them again.
   */
  async awaitAcks(): Promise<boolean> {
    const results = this.#results;
    if (
      results === undefined ||
      !this.#registration()!.features.has("result-ack")
    ) return true;
    const acked = () => results.awaitingAck().length === 0;
    // Checked first: with nothing to wait for, the events queued are left
    // for the work request to judge.
    while (!acked()) {
      const deadline = this.#clock.monotonic() + this.#replyTimeoutMs;
      let event: ServerEvent | null;
      do {
        event = await this.#connection.next(
          deadline - this.#clock.monotonic(),
          acked,
        );
        if (event?.kind === "probe") return false;
        // Nothing was asked that this could answer.
        if (event !== null) {
          this.#logger.warn("reply ignored", { type: event.message.type });
        }
      } while (event !== null);
      if (acked()) break;
      if (this.#registrationStale()) return false;
      for (const result of results.resendAttempt(new Set())) {
        this.#logger.warn("result sent again", {
          drv: result.drv,
          waited: this.#replyTimeoutMs,
          reason: "no ack came",
        });
        if (!await this.offer(result)) return false;
      }
    }
    return true;
  }

  /**
   * The server's ack of the result of `drv`: it need not be sent again.
   * One for a result not kept (sent twice, or dropped since) changes
   * nothing.
   */
  acknowledged(drv: string, outcome: string) {
    const kept = this.#results?.acknowledged(drv, outcome);
    if (
      kept && outcome === "fetching" &&
      this.#registration()?.features.has("outputs-fetched")
    ) {
      const dropped = this.#fetching?.add(drv);
      if (dropped !== undefined) {
        this.#logger.warn("fetch end no longer awaited", {
          drv: dropped,
          reason: "too many fetches the server has not said the end of",
        });
      }
    }
    // Whatever waits for the server sees whether acks are still awaited.
    this.#connection.wake();
    if (kept) return;
    this.#logger.debug("ack ignored", {
      drv,
      outcome,
      reason: "no such result awaits an ack",
    });
  }

  /**
   * The server says its fetch of the outputs of `drv` ended: a draining
   * session need not stay for it. One not awaited changes nothing.
   */
  outputsFetched(drv: string) {
    const awaited = this.#fetching?.ended(drv) ?? false;
    this.#connection.wake();
    this.#logger.debug("outputs fetched", { drv, awaited });
  }

  /**
   * Before a draining session leaves: waits, with its connection up, until
   * the server says it fetched the outputs of this name's successes (see
   * SessionOptions.fetching); the worker's drain timeout bounds the wait.
   * Returns early on a probe (consumed): the server restarted, resumes its
   * fetches, and tells their ends on the connection the session registers
   * on again.
   */
  async awaitFetches(): Promise<void> {
    const fetching = this.#fetching;
    if (fetching === undefined) return;
    while (fetching.size > 0) {
      const event = await this.#connection.next(
        this.#replyTimeoutMs,
        () => fetching.size === 0,
      );
      if (event?.kind === "probe") return;
      // Nothing was asked that this could answer.
      if (event !== null) {
        this.#logger.warn("reply ignored", { type: event.message.type });
      }
    }
  }

  /**
   * Sends the result of a build that ended as a stop cut its session short
   * (see the session's #build): on the registered connection, with no
   * answer awaited, within `timeoutMs`. A result that cannot be sent so
   * (no such connection, or the send failed) is kept with the name's
   * undelivered results, as is one whose ack has not come: the stop names
   * them.
   */
  async reportOnStop(result: UndeliveredResult, timeoutMs: number) {
    const results = this.#results;
    const registration = this.#registration();
    if (registration === undefined || this.#registrationStale()) {
      results?.keep(result, "no registered connection, the worker stopping");
      return;
    }
    if (registration.features.has("result-ack")) results?.awaitAck(result);
    try {
      await this.#connection.send(
        this.#resultMessage(result),
        AbortSignal.timeout(timeoutMs),
      );
      this.#reported(result);
      this.#logger.info(result.ok ? "build done" : "build failed", {
        drv: result.drv,
        reason: "worker stopping",
      });
    } catch (error) {
      results?.keep(result, error);
    }
  }

  /**
   * `result` was sent: a success reported to a server that will not say
   * when it fetched its outputs is told to SessionOptions.untold.
   */
  #reported({ drv, ok }: UndeliveredResult) {
    if (ok && !this.#registration()?.features.has("outputs-fetched")) {
      this.#untold?.reported(drv);
    }
  }

  #resultMessage({ drv, ok }: UndeliveredResult): Message {
    return {
      type: ok ? "build-succeeded" : "build-failed",
      drv,
      url: this.#registration()!.publishUrl,
      log: null,
    };
  }
}
