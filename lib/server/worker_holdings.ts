// What the dispatcher remembers of each worker name between messages: that
// it is registered (and when its last contact was written), and which
// build it holds. A name holds at most one build (case C03); these caches
// spare a busy worker's requests the store lookups. When a turn's writes
// are rolled back, what the caches learnt from them is dropped, and the
// builds handed out in it are taken back; what was known of the builds
// handed out before stays, as the look at held builds needs it.

import type { Logger } from "../log.ts";
import {
  type Build,
  BuildStatus,
  type Holding,
  type Store,
} from "../store/types.ts";

/** What the holdings need around them. */
export interface WorkerHoldingsOptions {
  logger: Logger;
  /**
   * Whether `worker`'s result of `drv` is being fetched: then the build is
   * no longer held by it.
   */
  fetching(drv: string, worker: string): boolean;
  /**
   * Seconds between two writes of a requesting worker's last contact; must
   * stay well below the worker timeout [5].
   */
  touchIntervalSeconds?: number;
  /** The server's worker timeout, written with each contact. */
  workerTimeoutSeconds: number;
}

/** A registered worker, as a work request needs it. */
export interface KnownWorker {
  systems: string[];
  /** When its last contact was last written to the store. */
  touched: number;
}

/** Whether a build in `status` is held by a worker (submitted or started). */
export function heldStatus(status: BuildStatus): boolean {
  return status === BuildStatus.submitted || status === BuildStatus.started;
}

/** A build handed out here that its worker has not said it started. */
interface Unstarted {
  drv: string;
  /** The routing key of the connection its reply went out on. */
  connection: string;
  /**
   * The reply to a later request of the worker: not withheld yet, withheld
   * and owed, or withheld and then sent (see WorkerHoldings.withholdReply).
   */
  laterReply: "due" | "owed" | "sent";
}

/** The registration and held build of each worker name. */
export class WorkerHoldings {
  readonly #options: WorkerHoldingsOptions;
  readonly #workers = new Map<string, KnownWorker>();
  /** Names known to hold no build: their requests skip the store query. */
  readonly #holdNothing = new Set<string>();
  /**
   * The build handed to each name that held nothing before, or that it
   * registered holding (the store agreeing): once the name reports that
   * build's result, it holds nothing again.
   */
  readonly #handedOut = new Map<string, string>();
  /**
   * The builds handed out (name to derivation) by the turn under way,
   * whose writes may yet be rolled back.
   */
  readonly #uncommitted = new Map<string, string>();
  /**
   * The builds handed out here whose start their worker has not reported:
   * the connection their reply went out on, and whether the reply to a
   * later request of the worker is withheld (see {@link withholdReply}).
   */
  readonly #unstarted = new Map<string, Unstarted>();
  /** Names whose reply the turn under way withheld (undone on rollback). */
  readonly #withheldThisTurn: string[] = [];

  constructor(options: WorkerHoldingsOptions) {
    this.#options = options;
  }

  /** Records a worker that registered or pinged. */
  remember(name: string, systems: string[], now: number): void {
    this.#workers.set(name, { systems, touched: now });
  }

  /**
   * The registered worker `name`, its last contact written at most once per
   * touch interval; null when it is unknown or was expired meanwhile.
   */
  async known(
    store: Store,
    name: string,
    now: number,
  ): Promise<KnownWorker | null> {
    const interval = this.#options.touchIntervalSeconds ?? 5;
    let known = this.#workers.get(name);
    if (known === undefined) {
      const row = await store.getWorker(name);
      if (row === null) return null;
      known = { systems: row.systems, touched: 0 };
      this.#workers.set(name, known);
    }
    if (now - known.touched >= interval) {
      // The sweeper may have expired it since: then it is unknown again
      // until its next ping registers it.
      const timeout = this.#options.workerTimeoutSeconds;
      if (!await store.touchWorker(name, now, timeout)) {
        this.drop(name);
        return null;
      }
      known.touched = now;
    }
    return known;
  }

  /**
   * A session of `name` registered, holding `holding` (derivations): the
   * rest of what the name held is lost and goes back to the queue.
   * Returns how many builds were requeued.
   */
  async registered(
    store: Store,
    name: string,
    holding: Set<string>,
    now: number,
  ): Promise<number> {
    const { requeued, kept } = await this.#requeueHeld(
      store,
      name,
      holding,
      now,
    );
    this.#handedOut.delete(name);
    this.#unstarted.delete(name);
    // The build it goes on with, which the store has as its too, counts
    // as one handed out here (after a server restart, this process learns
    // of it only this way). A session runs one build: of a name that
    // claims more, none is counted.
    if (kept.length === 1) this.#handedOut.set(name, kept[0]);
    if (holding.size === 0) this.#holdNothing.add(name);
    return requeued;
  }

  /**
   * `name` asks for work: one session runs one build, so what it still
   * holds was lost (a reply that never arrived, a stale one it dropped)
   * and goes back to the queue.
   */
  async askedForWork(store: Store, name: string, now: number): Promise<void> {
    // Whatever it was handed before, it no longer builds: believed still
    // its, a build taken elsewhere meanwhile would be "taken back" from a
    // worker that is not building it.
    this.#handedOut.delete(name);
    this.#unstarted.delete(name);
    if (this.#holdNothing.has(name)) return;
    await this.#requeueHeld(store, name, new Set(), now);
    this.#holdNothing.add(name);
  }

  /**
   * `name` was given `drv` on `connection` (its routing key): until it
   * reports, it holds that build.
   */
  handedOut(name: string, drv: string, connection: string): void {
    this.#holdNothing.delete(name);
    this.#handedOut.set(name, drv);
    this.#unstarted.set(name, { drv, connection, laterReply: "due" });
    this.#uncommitted.set(name, drv);
  }

  /** `name` says it started `drv`. */
  startReported(name: string, drv: string): void {
    if (this.#unstarted.get(name)?.drv === drv) this.#unstarted.delete(name);
  }

  /**
   * Whether the reply to a work request of `name`, come on `connection`,
   * is to be withheld: the build it was sent on that connection and has
   * not started, if so; null when the request is to be answered. A
   * Cuirass worker matches replies to requests by their order alone, and
   * once it has taken a probe for a reply (after a server restart) it reads
   * each reply one request late (cuirass.md §1.13): it asks, then reads
   * the build it was sent for the request before. Such a request comes
   * while the build handed to it on that connection is not started yet.
   * Left unanswered, it puts the worker back in step: the build is the
   * reply it reads, and its next request gets a reply of its own. Answered,
   * the worker would stay a reply behind for good, each "no build" it
   * reads late costing it a whole request period between two builds. Once
   * per build: a second such request means the reply was lost, and the
   * build goes back to the queue. A worker that was in step after all
   * waits for its reply until the caller gives it (see
   * {@link stillWithheld}).
   */
  withholdReply(name: string, connection: string): string | null {
    const unstarted = this.#unstarted.get(name);
    if (
      unstarted === undefined || unstarted.laterReply !== "due" ||
      unstarted.connection !== connection ||
      this.#handedOut.get(name) !== unstarted.drv
    ) return null;
    unstarted.laterReply = "owed";
    this.#withheldThisTurn.push(name);
    return unstarted.drv;
  }

  /**
   * Whether the reply withheld from `name` for `drv` is still owed: the
   * worker has neither started nor reported that build, nor asked again,
   * so it may be waiting for that reply rather than a reply late.
   */
  stillWithheld(name: string, drv: string): boolean {
    const unstarted = this.#unstarted.get(name);
    return unstarted?.drv === drv && unstarted.laterReply === "owed";
  }

  /**
   * The reply withheld from `name` went out after all: its build stays
   * held, and a further request with it still not started gives it back.
   */
  answeredWithheld(name: string): void {
    const unstarted = this.#unstarted.get(name);
    if (unstarted?.laterReply === "owed") unstarted.laterReply = "sent";
  }

  /**
   * Whether `drv` is the build this process handed to `name` (or that
   * `name` registered holding), which it has not reported since (nor had
   * it canceled, restarted or requeued here). The sweeper, or another
   * process, may still have taken it: this only spares a read to callers
   * whose writes name the worker.
   */
  awaitsResult(name: string, drv: string): boolean {
    return this.#handedOut.get(name) === drv;
  }

  /**
   * `drv` is no longer `name`'s: it reported the result (recorded, being
   * fetched, or requeued), or the build was canceled or restarted. If that
   * was the build it was handed, it holds nothing now.
   */
  released(name: string, drv: string): void {
    if (this.#handedOut.get(name) !== drv) return;
    this.#handedOut.delete(name);
    this.#unstarted.delete(name);
    this.#holdNothing.add(name);
  }

  /**
   * The builds handed to each name that it has not reported (nor had
   * canceled, restarted or requeued here): what this process believes the
   * workers are building.
   */
  believed(): Holding[] {
    return [...this.#handedOut].map(([worker, derivation]) => ({
      worker,
      derivation,
    }));
  }

  /** Whether `name` holds a submitted or started build not being fetched. */
  async holdsAny(store: Store, name: string): Promise<boolean> {
    return (await this.#held(store, name)).length > 0;
  }

  /**
   * Forgets `name`, which no open connection speaks for any more. All of
   * it is a cache of the store, read again if the name comes back; kept,
   * it would grow by the session names of every worker process that ever
   * connected.
   */
  drop(name: string): void {
    this.#workers.delete(name);
    this.#holdNothing.delete(name);
    this.#handedOut.delete(name);
    this.#unstarted.delete(name);
  }

  /** The worker names something is remembered about. */
  names(): Set<string> {
    return new Set([
      ...this.#workers.keys(),
      ...this.#holdNothing,
      ...this.#handedOut.keys(),
    ]);
  }

  /** The turn under way committed: its handouts are the workers' now. */
  committed(): void {
    this.#uncommitted.clear();
    this.#withheldThisTurn.length = 0;
  }

  /**
   * The turn under way was rolled back: the caches it may have written
   * (last contacts, names holding nothing) are dropped, to be read again
   * from the store, and its handouts, whose replies never go out, are
   * undone. The rest of what was handed out stays believed: forgotten, a
   * build canceled elsewhere would go on running on its worker, the look
   * at held builds knowing nothing to take back. (A build that the turn
   * let go of stays let go: its worker reported it, or asked for work,
   * and builds it no more.)
   */
  rolledBack(): void {
    this.#workers.clear();
    this.#holdNothing.clear();
    for (const [name, drv] of this.#uncommitted) {
      if (this.#handedOut.get(name) === drv) this.#handedOut.delete(name);
      if (this.#unstarted.get(name)?.drv === drv) this.#unstarted.delete(name);
    }
    this.#uncommitted.clear();
    // Its replies never went out: the one it withheld too, which the turn
    // served again must be free to withhold.
    for (const name of this.#withheldThisTurn.splice(0)) {
      const unstarted = this.#unstarted.get(name);
      if (unstarted?.laterReply === "owed") unstarted.laterReply = "due";
    }
  }

  /**
   * The submitted or started builds of `name` whose result is not being
   * fetched (a fetched one is done, whatever the worker does next).
   */
  async #held(store: Store, name: string): Promise<Build[]> {
    const held = await store.queue({ worker: name }, 64);
    return held.filter((build) =>
      build.worker === name &&
      heldStatus(build.status) &&
      !this.#options.fetching(build.derivation, name)
    );
  }

  /**
   * Puts back to scheduled the builds `name` holds but does not say it
   * holds.
   */
  async #requeueHeld(
    store: Store,
    name: string,
    holding: Set<string>,
    now: number,
  ): Promise<{ requeued: number; kept: string[] }> {
    let requeued = 0;
    const kept: string[] = [];
    for (const build of await this.#held(store, name)) {
      if (holding.has(build.derivation)) {
        kept.push(build.derivation);
        continue;
      }
      if (await store.requeueBuild(build.derivation, now, { worker: name })) {
        requeued++;
        this.#options.logger.warn("build requeued", {
          drv: build.derivation,
          worker: name,
          reason: "the worker no longer holds it",
        });
      }
    }
    return { requeued, kept };
  }
}
