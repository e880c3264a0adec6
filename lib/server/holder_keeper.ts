// Keeps a local-mode server's holder name (local_holder.ts) for its
// lanes: claims it once, checks it before a batch is taken and at each
// look at the database while one is built, renews it on its schedule,
// and, when another server expired its row (a silence past the worker
// timeout), claims a name again once for every lane that finds it lost.
// The builds held under the lost name went back to the queue with the
// row, so the batches building them must give them up first: that is
// `onLost`, the builder's.

import { type Clock, everyInterval } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { HolderClaim, LocalHolder } from "./local_holder.ts";

/** A holder name, the claim it was read from, and its row's address. */
export interface HeldName {
  name: string;
  claim: Promise<HolderClaim>;
  /** What the row has while the name is this server's. */
  address: string;
}

export interface HolderKeeperOptions {
  holder: LocalHolder;
  clock: Clock;
  logger: Logger;
  /** Time between two renewals of the row. */
  intervalMs: number;
  /** Gives up every batch: the row, and the builds, were taken back. */
  onLost(): Promise<void>;
}

/** One server's holder name, claimed, checked, renewed and given up. */
export class HolderKeeper {
  readonly #options: HolderKeeperOptions;
  /**
   * The claim of the name, once asked for; a claim made again (the row
   * lost, or a claim failed) is another promise, which tells a caller
   * that read a name whether that name is still the one claimed.
   */
  #claim: Promise<HolderClaim> | null = null;
  /** The claim of a name again under way, its row lost. */
  #regaining: Promise<HeldName> | null = null;
  /**
   * Given up at a clean stop: what still looks at the name then (a look
   * at the database begun before the stop) must not claim one again,
   * which would leave a row behind, to age as a dead server's.
   */
  #released = false;

  constructor(options: HolderKeeperOptions) {
    this.#options = options;
  }

  /** The name claimed, or null before the first claim and after release. */
  get known(): string | null {
    return this.#options.holder.name;
  }

  /** The name claimed, claimed now if it is not yet. */
  async name(): Promise<string> {
    return (await this.#current()).name;
  }

  /**
   * How many builds the first claim put back in the queue when this call
   * made it (the leftovers of a dead holder of the name), else 0.
   */
  async firstClaim(): Promise<number> {
    this.#released = false;
    const first = this.#claim === null;
    const claim = await this.#current();
    return first ? claim.requeued : 0;
  }

  /**
   * The name, once its row is found still this server's, by a renewal
   * (`renew`) or a mere read; claimed again first if the row was lost
   * (see the header).
   */
  async own(renew: boolean): Promise<HeldName> {
    const { holder, logger, onLost } = this.#options;
    // The claim is noted with the name it gives, before any await: a
    // regain between the two would otherwise pass for not made yet, and
    // this caller, finding the old row lost, would make a second one,
    // withdrawing the batches just taken under the new name.
    const { name, claim } = await this.#named();
    const own = renew ? await holder.renew() : await holder.held();
    if (own || this.#claim !== claim) return await this.#named();
    this.#regaining ??= (async () => {
      try {
        logger.warn("local holder lost", { worker: name });
        await onLost();
        this.#claim = null;
        return await this.#named();
      } finally {
        this.#regaining = null;
      }
    })();
    return await this.#regaining;
  }

  /**
   * Whether `held` is still the name claimed, with no claim again under
   * way: a batch taken under it meanwhile escaped the regain.
   */
  isCurrent(held: HeldName): boolean {
    return this.#claim === held.claim && this.#regaining === null;
  }

  /**
   * Renews the row every `intervalMs` (from each renewal's issue, see
   * everyInterval) until `signal` aborts, claiming a name again if the
   * row was lost.
   */
  async keep(signal: AbortSignal): Promise<void> {
    const { clock, logger, intervalMs } = this.#options;
    await everyInterval(clock, intervalMs, signal, async () => {
      const name = this.known;
      try {
        await this.own(true);
      } catch (error) {
        logger.warn("local holder not renewed", {
          worker: name ?? undefined,
          error,
        });
      }
      return true;
    });
  }

  /**
   * Deletes the row at a clean stop (see LocalHolder.release); no name is
   * claimed again until {@link firstClaim} (a start).
   */
  async release(): Promise<void> {
    const { holder, logger } = this.#options;
    this.#released = true;
    // A claim under way (a regain begun before the stop) ends first: its
    // row, written after the release, would outlive the stop and age as a
    // dead server's.
    await this.#claim?.catch(() => {});
    await holder.release().catch((error) =>
      logger.warn("local holder not released", {
        worker: holder.name ?? undefined,
        error,
      })
    );
    this.#claim = null;
  }

  /** The claim of the name, asked for now if none is. */
  #current(): Promise<HolderClaim> {
    if (this.#released) {
      return Promise.reject(
        new Error(
          "Cannot claim a local holder name: this server gave its name up at its clean stop",
        ),
      );
    }
    if (this.#claim === null) {
      const claim: Promise<HolderClaim> = this.#options.holder.claim()
        .catch((error) => {
          if (this.#claim === claim) this.#claim = null;
          throw error;
        });
      this.#claim = claim;
    }
    return this.#claim;
  }

  /** The name claimed now, with the claim it is of. */
  async #named(): Promise<HeldName> {
    const claim = this.#current();
    const { name, address } = await claim;
    return { name, claim, address };
  }
}
