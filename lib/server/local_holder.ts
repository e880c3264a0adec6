// The name a server in local mode holds its builds under. Several servers
// in local mode may share one database, each with its own daemon
// (docs/deployment.md, section 5), so each needs a name of its own: one
// that a server starting up may take over, with the builds left under it,
// only once the server that held it is gone. The name is kept as a row of
// the Workers table, as a remote worker's is: it shows on the Workers page,
// and its last contact, renewed while the server runs, lets the worker
// sweep of any live server give the builds of a dead one back to the
// queue after the worker timeout. That sweep is every live server's, each
// with its own `--worker-timeout`, but the row records this server's
// timeout, and every sweep judges it by that one. The row is renewed every
// HOLDER_RENEWAL_SECONDS, well within the shortest timeout any server
// accepts (MIN_WORKER_TIMEOUT_SECONDS), not at a pace drawn from this
// server's own timeout: the sweep of an older version sharing the database
// (during an upgrade) ignores the recorded timeout and applies its own.
//
// Names are "local@HOST", then "local@HOST#2", "#3"... for more servers of
// that host name. A server takes the first name that is free: no row, a
// row of a process of this host that is gone (/proc says so at once, as
// for evaluations in evaluation_owner.ts), or a row silent for the worker
// timeout. A server restarted on its host thus finds its own name again,
// unless another server of the host took it meanwhile: either way the
// builds left under the name go back to the queue at once, their holder
// being dead. Each take is a compare-and-set on the row, so two servers
// starting at once never share a name.
//
// Each claim writes an address of its own (a token counted per claim),
// even a claim of the same name again by the same server: a pop checks
// the address in its own atomic step (PopOptions.holderAddress), so a
// build is held under a name only by a pop made while the claim it was
// made for stood, and whoever ended that claim (an expiry, another
// server's claim, this server's own claim again, its release at a clean
// stop) puts back in the queue what was held under it. A claim does so in
// two steps, the row taken and then the builds requeued: no pop under the
// old address can come between them, as the row no longer has it. Should
// the requeue fail, the builds wait for the next claim of the name (the
// claimant's next use, or a server taking its row once it is gone).

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { EvaluationOwner, Store, Worker } from "../store/types.ts";
import { isLive, thisProcess } from "./evaluation_owner.ts";

/** The one name every server in local mode held its builds under before. */
export const LEGACY_LOCAL_WORKER = "local";

/** Default seconds a holder may stay silent: that of `--worker-timeout`. */
export const DEFAULT_HOLDER_TIMEOUT_SECONDS = 120;

/**
 * Seconds between two renewals of a holder's row, whatever the worker
 * timeout of the server holding it: the row records that timeout, by which
 * every sweep judges it, but an older version's sweep applies its own, so
 * the row stays young enough for the shortest timeout any server may have.
 */
export const HOLDER_RENEWAL_SECONDS = 10;

/**
 * The shortest worker timeout a server accepts (`--worker-timeout`): three
 * renewals of a holder's row, so that two may be lost or late (a database
 * slow or restarting) before any server's sweep takes a live holder for
 * dead; evaluation heartbeats allow as many (evaluation_owner.ts).
 */
export const MIN_WORKER_TIMEOUT_SECONDS = 3 * HOLDER_RENEWAL_SECONDS;

/**
 * The longest worker timeout a server accepts: a year. Each contact
 * records it with the worker's row, and a deadline computed from a larger
 * one would lose its precision.
 */
export const MAX_WORKER_TIMEOUT_SECONDS = 365 * 24 * 3600;

/** Holder names tried on one host name before giving up. */
const MAX_SLOTS = 64;

/** Who this server is, as a holder; each part has a default for production. */
export interface HolderIdentity {
  /** This process; default {@link thisProcess}. */
  self?: EvaluationOwner;
  /** The host name in the holder name; default `Deno.hostname()`. */
  hostName?: string;
  /** Whether a process of this host runs; default {@link isLive}. */
  isLive?: (owner: EvaluationOwner) => Promise<boolean>;
}

export interface LocalHolderOptions extends HolderIdentity {
  store: Store;
  clock: Clock;
  logger: Logger;
  /**
   * Seconds without a renewal after which this server's holder is taken
   * for dead, written with its row; also the limit for rows that record
   * none (written before rows did).
   */
  timeoutSeconds: number;
  /** The systems the server builds, shown with its row. */
  systems: () => Promise<string[]>;
}

/**
 * Whether `name` is one a local-mode server holds its builds under
 * ("local", "local@HOST", "local@HOST#N"): a remote worker of that name
 * would take over the server's row, and with it its builds.
 */
export function isLocalHolderName(name: string): boolean {
  return name === LEGACY_LOCAL_WORKER ||
    name.startsWith(`${LEGACY_LOCAL_WORKER}@`);
}

/** The holder name of `slot` (1, 2, ...) on `hostName`. */
export function holderName(hostName: string, slot: number): string {
  const base = `${LEGACY_LOCAL_WORKER}@${hostName}`;
  return slot === 1 ? base : `${base}#${slot}`;
}

/**
 * The address column of a holder's row: the process holding it and a
 * token of the builder's own, so that two builders in one process (as in
 * tests) tell their rows apart. The host comes last: it may hold spaces.
 */
export function holderAddress(owner: EvaluationOwner, run: string): string {
  return `pid=${owner.pid} start=${owner.started} run=${run} host=${owner.host}`;
}

/** The process and token {@link holderAddress} wrote, or null. */
export function parseHolderAddress(
  address: string,
): { owner: EvaluationOwner; run: string } | null {
  const match = /^pid=(\d+) start=(\S*) run=(\S+) host=(.+)$/.exec(address);
  if (match === null) return null;
  return {
    owner: { pid: Number(match[1]), started: match[2], host: match[4] },
    run: match[3],
  };
}

/**
 * A name taken, the address its row has while the claim stands, and how
 * many builds left under the name went back to the queue.
 */
export type HolderClaim = { name: string; address: string; requeued: number };

/** One server's holder name: taken, renewed, given up at a clean stop. */
export class LocalHolder {
  readonly #options: LocalHolderOptions;
  /** This builder, in the token of each of its claims. */
  readonly #builder = crypto.randomUUID().slice(0, 8);
  #claims = 0;
  /** The token of the last claim: "BUILDER.N". */
  #run = "";
  #self: EvaluationOwner | null = null;
  #name: string | null = null;

  constructor(options: LocalHolderOptions) {
    this.#options = options;
  }

  /** The name taken, or null before {@link claim}. */
  get name(): string | null {
    return this.#name;
  }

  /**
   * Takes the first free holder name and puts the builds left under it
   * back in the queue (their holder is gone); returns the name and how
   * many builds.
   */
  async claim(): Promise<HolderClaim> {
    const { store, clock, logger } = this.#options;
    const self = await this.#process();
    const hostName = this.#options.hostName ?? Deno.hostname();
    this.#run = `${this.#builder}.${++this.#claims}`;
    for (let slot = 1; slot <= MAX_SLOTS; slot++) {
      const name = holderName(hostName, slot);
      const previous = await this.#take(name, self);
      if (previous === undefined) continue;
      this.#name = name;
      const requeued = await store.requeueWorkerBuilds(
        name,
        epochSeconds(clock),
      );
      logger.info("local holder claimed", {
        worker: name,
        previous: previous?.address,
        requeued,
      });
      return { name, address: holderAddress(self, this.#run), requeued };
    }
    throw new Error(
      `Cannot claim a local holder name: ${
        JSON.stringify(holderName(hostName, 1))
      } and its ${MAX_SLOTS - 1} successors are held by live servers`,
    );
  }

  /**
   * Takes `name` if it is free: returns the row taken over (null when
   * there was none), or undefined when it is another live server's.
   */
  async #take(
    name: string,
    self: EvaluationOwner,
  ): Promise<Worker | null | undefined> {
    const { store } = this.#options;
    // A lost race (another server took the row first) is read again: the
    // winner may be dead already, but is far more likely live.
    for (let attempt = 0; attempt < 3; attempt++) {
      const row = await store.getWorker(name);
      if (row !== null && !await this.#free(row, self)) return undefined;
      const mine = await this.#row(name, self);
      const expected = row === null
        ? null
        : { address: row.address, lastSeen: row.lastSeen };
      if (await store.claimWorker(mine, expected)) return row;
    }
    return undefined;
  }

  /**
   * Whether `row`'s holder is gone, or is this very builder (an earlier
   * claim of it).
   */
  async #free(row: Worker, self: EvaluationOwner): Promise<boolean> {
    const { clock, timeoutSeconds } = this.#options;
    const holder = parseHolderAddress(row.address);
    if (holder !== null && holder.owner.host === self.host) {
      const { owner, run } = holder;
      if (
        owner.pid === self.pid && owner.started === self.started &&
        run.startsWith(`${this.#builder}.`)
      ) {
        return true;
      }
      return !await (this.#options.isLive ?? isLive)(owner);
    }
    // Another host, or a row this code did not write: only its silence
    // tells, as for a remote worker, judged by the timeout of the server
    // that wrote it, as every sweep judges it.
    const limit = row.timeoutSeconds ?? timeoutSeconds;
    return epochSeconds(clock) - row.lastSeen > limit;
  }

  /**
   * Renews the row's last contact (and its systems); false when the row is
   * no longer this builder's (expired by another server after a long
   * silence): the builds it held went back to the queue, and the name
   * must be claimed again.
   */
  async renew(): Promise<boolean> {
    const name = this.#name;
    if (name === null) return false;
    const self = await this.#process();
    const mine = await this.#row(name, self);
    return await this.#options.store.claimWorker(mine, {
      address: mine.address,
    });
  }

  /**
   * Whether the row of the name taken is still this builder's: a read,
   * where {@link renew} writes.
   */
  async held(): Promise<boolean> {
    const name = this.#name;
    if (name === null) return false;
    const row = await this.#options.store.getWorker(name);
    return row?.address === holderAddress(await this.#process(), this.#run);
  }

  /**
   * Deletes the row at a clean stop, and requeues anything still held
   * under it (a batch the database could not give back at shutdown);
   * leaves a row that is no longer this builder's alone.
   */
  async release(): Promise<void> {
    const { store, logger } = this.#options;
    const name = this.#name;
    if (name === null) return;
    const self = await this.#process();
    const requeued = await store.releaseWorker(
      name,
      holderAddress(self, this.#run),
    );
    this.#name = null;
    logger.info("local holder released", {
      worker: name,
      requeued: requeued ?? undefined,
      held: requeued !== null,
    });
  }

  async #process(): Promise<EvaluationOwner> {
    this.#self ??= this.#options.self ?? await thisProcess();
    return this.#self;
  }

  async #row(name: string, self: EvaluationOwner): Promise<Worker> {
    return {
      name,
      address: holderAddress(self, this.#run),
      machine: this.#options.hostName ?? Deno.hostname(),
      systems: await this.#options.systems(),
      lastSeen: epochSeconds(this.#options.clock),
      timeoutSeconds: this.#options.timeoutSeconds,
    };
  }
}
