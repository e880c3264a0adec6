// What a dispatcher turn's messages leave for its end, to be done at once:
// the builds of all its work requests taken with one store call (on
// PostgreSQL one round trip per set of systems), all its starts recorded
// with another and the fetches its successes owe saved with a third,
// instead of a call per message.

import type { Logger } from "../log.ts";
import type { Build, OutputFetch, StartReport, Store } from "../store/types.ts";
import type { PendingReply, Turn } from "./turn.ts";

/** Log fields naming the connection a message came from. */
export type Sender = { peer: string; address: string };

/** A work request whose build is taken at the end of its turn. */
export interface WorkRequest {
  name: string;
  systems: string[];
  requestId: number | undefined;
  /** Its place among the turn's replies: no-build until a build is found. */
  reply: PendingReply;
}

interface Gathered {
  requests: WorkRequest[];
  /** The names of `requests`. */
  asking: Set<string>;
  starts: { report: StartReport; sender: Sender }[];
  /** The output fetches the turn's successes owe (see BuildReports). */
  owed: OutputFetch[];
}

export interface TurnWorkOptions {
  logger: Logger;
  /** Makes `request`'s reply hand it `build`, taken for it at `now`. */
  handOut(request: WorkRequest, build: Build, now: number): void;
  /**
   * Fails `build`, just taken for `worker`, when its derivation is gone
   * from the store (case C14), and says so; absent, never asked.
   */
  failIfMissing?(
    store: Store,
    build: Build,
    worker: string,
    now: number,
  ): Promise<boolean>;
}

/** Rounds of taking builds for requests whose build turned out missing. */
const MISSING_ROUNDS = 4;

/** The work requests and starts of each turn, until its end. */
export class TurnWork {
  readonly #options: TurnWorkOptions;
  readonly #turns = new WeakMap<Turn, Gathered>();

  constructor(options: TurnWorkOptions) {
    this.#options = options;
  }

  /** Whether a request of `name` waits in `turn`. */
  asking(turn: Turn, name: string): boolean {
    return this.#turns.get(turn)?.asking.has(name) ?? false;
  }

  /** Keeps `request` for the end of `turn`. */
  request(turn: Turn, request: WorkRequest): void {
    const gathered = this.#in(turn);
    gathered.requests.push(request);
    gathered.asking.add(request.name);
  }

  /** Keeps a worker's report that it started a build for the turn's end. */
  start(turn: Turn, report: StartReport, sender: Sender): void {
    this.#in(turn).starts.push({ report, sender });
  }

  /** Keeps a fetch a success owes, to be saved at the end of `turn`. */
  owe(turn: Turn, fetch: OutputFetch): void {
    this.#in(turn).owed.push(fetch);
  }

  /**
   * Takes back the requests of `name` waiting in `turn`, which get no
   * build: a registration starts a new session of the name, holding
   * nothing but what it says (a request of the old session, queued in
   * the same turn, would give the name a second build).
   */
  withdraw(turn: Turn, name: string, sender: Sender): void {
    const gathered = this.#turns.get(turn);
    if (gathered === undefined || !gathered.asking.has(name)) return;
    gathered.requests = gathered.requests.filter((r) => r.name !== name);
    gathered.asking.delete(name);
    this.#options.logger.info("work request withdrawn", {
      ...sender,
      worker: name,
      reason: "the worker registered again in the same turn",
    });
  }

  /**
   * Records at once the starts of `drv` waiting in `turn`, before its
   * failure or requeue is: recorded after it, they would find it finished
   * or taken back already.
   */
  async startsBefore(turn: Turn, drv: string, now: number): Promise<void> {
    const gathered = this.#turns.get(turn);
    if (!gathered?.starts.some(({ report }) => report.derivation === drv)) {
      return;
    }
    const early = gathered.starts.filter((s) => s.report.derivation === drv);
    gathered.starts = gathered.starts.filter((s) =>
      s.report.derivation !== drv
    );
    await this.#record(turn.store, early, now);
  }

  /**
   * The end of `turn`: its owed fetches saved, its starts recorded, its
   * work requests served; each whatever became of the one before.
   */
  async finish(turn: Turn, now: number): Promise<void> {
    const gathered = this.#turns.get(turn);
    if (gathered === undefined) return;
    this.#turns.delete(turn);
    try {
      if (gathered.owed.length > 0) {
        await turn.store.saveOwedFetches(gathered.owed);
      }
    } finally {
      try {
        await this.#record(turn.store, gathered.starts, now);
      } finally {
        await this.#serve(turn.store, gathered.requests, now);
      }
    }
  }

  #in(turn: Turn): Gathered {
    let gathered = this.#turns.get(turn);
    if (gathered === undefined) {
      gathered = { requests: [], asking: new Set(), starts: [], owed: [] };
      this.#turns.set(turn, gathered);
    }
    return gathered;
  }

  /** Records `starts` with one query, and logs each. */
  async #record(
    store: Store,
    starts: Gathered["starts"],
    now: number,
  ): Promise<void> {
    if (starts.length === 0) return;
    const recorded = await store.markStartedMany(
      starts.map(({ report }) => report),
      now,
    );
    starts.forEach(({ report, sender }, i) => {
      const fields = { drv: report.derivation, worker: report.worker };
      if (recorded[i]) this.#options.logger.info("build started", fields);
      else {
        this.#options.logger.warn("start ignored", {
          ...sender,
          ...fields,
          reason: "build not submitted to this worker",
        });
      }
    });
  }

  /**
   * Takes a build for each request with one query. A build whose
   * derivation is gone fails instead of being handed out (no worker could
   * build it), and its request is served again, for a few rounds.
   */
  async #serve(
    store: Store,
    requests: WorkRequest[],
    now: number,
  ): Promise<void> {
    const missing = this.#options.failIfMissing;
    let waiting = requests;
    for (let round = 0; round < MISSING_ROUNDS; round++) {
      if (waiting.length === 0) return;
      // A worker is sent the derivation: not its outputs.
      const builds = await store.popBuilds(
        waiting.map(({ name, systems }) => ({ worker: name, systems })),
        now,
        { withoutOutputs: true },
      );
      const again: WorkRequest[] = [];
      for (const [i, build] of builds.entries()) {
        if (build === null) continue;
        if (await missing?.(store, build, waiting[i].name, now)) {
          again.push(waiting[i]);
        } else {
          this.#options.handOut(waiting[i], build, now);
        }
      }
      waiting = again;
    }
  }
}
