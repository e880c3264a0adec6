// The local build mode: scheduled builds go to this machine's daemon in
// batches through lib/guix's build driver, whose event stream builders
// cannot spoof; after each batch every build is reconciled with the store.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  type DerivationState,
  type GuixSpawner,
  queryDerivations,
  runBuildDriver,
} from "../guix/build_events.ts";
import type { GcRoots } from "../guix/gc_roots.ts";
import { type SilenceWatchdog, watchDaemon } from "../guix/silence_watchdog.ts";
import { type Build, BuildStatus, type Store } from "../store/types.ts";
import { Coalesced } from "./coalesced.ts";
import { GroupEvents } from "./local_group_events.ts";
import {
  type BatchSummary,
  emptySummary,
  Flight,
  type FlightRecorder,
} from "./local_flight.ts";
import {
  DEFAULT_HOLDER_TIMEOUT_SECONDS,
  HOLDER_RENEWAL_SECONDS,
  type HolderIdentity,
  LEGACY_LOCAL_WORKER,
  LocalHolder,
} from "./local_holder.ts";
import { sweepWorkers } from "./worker_sweeper.ts";
import { type HeldName, HolderKeeper } from "./holder_keeper.ts";

export type { BatchSummary } from "./local_flight.ts";

export interface LocalBuilderOptions {
  store: Store;
  /** Runs `guix ARGS...` with the server's environment. */
  spawnGuix: GuixSpawner;
  clock: Clock;
  logger: Logger;
  /** Build logs go to `<logCacheDir>/<hash>.log.gz`, as in remote mode. */
  logCacheDir: string;
  storeDir: string;
  /** Systems to take builds for; "all" means every specification's. */
  systems: string[] | "all";
  /** Derivations handed to the daemon at once; default 200. */
  batchSize?: number;
  /** Builds the daemon runs in parallel within a batch; default 1. */
  maxJobs?: number;
  /** Batches in flight at once; default 1. */
  concurrency?: number;
  /** Seconds between looks at an empty queue; default 5. */
  pollSeconds?: number;
  /** Roots for outputs of succeeded builds. */
  gcRoots?: GcRoots;
  /** The Guile build driver; default the one in lib/guix. */
  driver?: string;
  /**
   * Seconds past a group's max-silent-time the daemon may say nothing
   * before its builds are given up on and requeued; default that of
   * {@link watchDaemon}.
   */
  daemonSilenceGraceSeconds?: number;
  /**
   * Seconds between looks at the database, while a build driver runs, for
   * builds of its batch that another process canceled or restarted (a web
   * front end on the same PostgreSQL database); default 5.
   */
  heldCheckSeconds?: number;
  /**
   * Seconds after which a server in local mode that stopped renewing its
   * holder row is taken for dead, its builds requeued by the worker sweep
   * of a live server (this one's among them): `--worker-timeout`; default
   * 120. The row records it, and every sweep judges the row by it; the row
   * is renewed every HOLDER_RENEWAL_SECONDS whatever this timeout, as the
   * sweeps of older versions apply timeouts of their own.
   */
  workerTimeoutSeconds?: number;
  /** Time between worker sweeps; default as sweepWorkers() chooses. */
  sweepIntervalMs?: number;
  /** Who this server is, for its holder name (local_holder.ts). */
  holder?: HolderIdentity;
}

/**
 * How a build leaves the batch it was part of: canceled or restarted here,
 * or "taken back" when the database no longer has it held by this server
 * (canceled or restarted by another process).
 */
type Withdrawal = "canceled" | "restarted" | "taken back";

/**
 * Batches taken in one takeBatch call while the name is claimed again
 * each time, before it gives up until the next call.
 */
const MAX_TAKE_ATTEMPTS = 3;

/**
 * Pause after a batch whose builds went back to the queue (a daemon fallen
 * silent, a database down) before the next batch is taken.
 */
export const REQUEUE_PAUSE_SECONDS = 30;

/** Builds scheduled builds with the local daemon. */
export class LocalBuilder {
  readonly #options: LocalBuilderOptions;
  #wakeUp: (() => void) | null = null;
  /** A wake-up that came while no lane was pausing. */
  #wokenWhileBusy = false;
  readonly #flights = new Set<Flight>();
  /** The claim each build takeBatch() handed out was taken under. */
  readonly #takenUnder = new WeakMap<Build, HeldName>();
  readonly #holder: HolderKeeper;
  /** What every batch records its builds' outcomes with. */
  readonly #recorder: FlightRecorder;
  /** The look at the database for every batch (see #takeBackNow). */
  readonly #lookNow = new Coalesced(() => this.#takeBack([...this.#flights]));

  constructor(options: LocalBuilderOptions) {
    this.#options = options;
    this.#recorder = {
      ...options,
      holderName: () => this.holderName(),
    };
    this.#holder = new HolderKeeper({
      holder: new LocalHolder({
        ...options.holder,
        store: options.store,
        clock: options.clock,
        logger: options.logger,
        timeoutSeconds: this.#timeoutSeconds(),
        systems: () => this.#systems(),
      }),
      clock: options.clock,
      logger: options.logger,
      intervalMs: HOLDER_RENEWAL_SECONDS * 1000,
      onLost: () => this.#withdrawAll(),
    });
  }

  #timeoutSeconds(): number {
    return this.#options.workerTimeoutSeconds ??
      DEFAULT_HOLDER_TIMEOUT_SECONDS;
  }

  /**
   * The name this server holds its builds under, claimed at the first
   * call (local_holder.ts).
   */
  holderName(): Promise<string> {
    return this.#holder.name();
  }

  /**
   * Claims this server's holder name, which puts the builds a dead holder
   * of it left submitted or started back in the queue, and those held
   * under the name older versions gave every server in local mode; they
   * are then reconciled before anything is rebuilt. Returns how many
   * builds were requeued.
   */
  async recover(): Promise<number> {
    const { store, clock, logger } = this.#options;
    const own = await this.#holder.firstClaim();
    // Held by a server of an older version: as before, requeued at once,
    // even from one that still runs.
    const legacy = await store.requeueWorkerBuilds(
      LEGACY_LOCAL_WORKER,
      epochSeconds(clock),
    );
    if (legacy > 0) {
      logger.info("local builds requeued", {
        count: legacy,
        worker: LEGACY_LOCAL_WORKER,
      });
    }
    return own + legacy;
  }

  /** Looks at the queue now instead of at the next poll. */
  wake(): void {
    // With no lane pausing, a lane is taking or building a batch, perhaps
    // from a snapshot older than the builds it is told of: it then looks
    // again instead of pausing for the poll.
    this.#wokenWhileBusy = this.#wakeUp === null;
    this.#wakeUp?.();
  }

  /** Recovers, then builds batches until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    await this.recover();
    // Builds that another process made dispatchable (on PostgreSQL: a web
    // front end restarting one, another server registering an evaluation)
    // wake the lanes at once rather than at their next poll.
    this.#options.store.watchQueue?.(() => this.wake(), signal);
    // A build another process canceled or restarted is taken from its
    // batch at once, not at the batch's next look.
    this.#options.store.watchHoldings?.(() => {
      if (this.#flights.size > 0) this.#takeBackNow();
    }, signal);
    const lanes = Math.max(1, this.#options.concurrency ?? 1);
    const { store, clock, logger, sweepIntervalMs } = this.#options;
    const timeoutSeconds = this.#timeoutSeconds();
    await Promise.all([
      ...Array.from({ length: lanes }, () => this.#lane(signal)),
      this.#holder.keep(signal),
      // The builds of a server in local mode that died for good go back
      // to the queue here, once its holder row is older than the timeout
      // (and the workers of a remote-mode server that stopped talking,
      // were one to share the database).
      sweepWorkers(
        { store, clock, logger, timeoutSeconds, intervalMs: sweepIntervalMs },
        signal,
      ),
    ]);
    // The lanes gave their batches back at the stop.
    await this.#holder.release();
  }

  /**
   * Withdraws every build of every batch: the holder row was lost, and
   * the builds held under it went back to the queue (holder_keeper.ts).
   */
  async #withdrawAll(): Promise<void> {
    for (const flight of [...this.#flights]) {
      await flight.turns.run(() => {
        for (const drv of [...flight.open]) {
          this.#withdraw(flight, drv, "taken back");
        }
        return Promise.resolve();
      });
    }
  }

  async #lane(signal: AbortSignal): Promise<void> {
    const { logger } = this.#options;
    while (!signal.aborted) {
      let flight: Flight | null = null;
      try {
        flight = await this.#takeBatch((builds, held) =>
          builds.length === 0 ? null : this.#openFlight(builds, held)
        );
        if (flight !== null) {
          const summary = await this.#fly(flight, signal);
          // A withdrawal failed nothing: the rest of its batch is taken
          // again at once.
          if (
            summary.requeued > 0 && summary.interruption !== "withdrawal" &&
            !signal.aborted
          ) {
            // Not a wakeable pause: on PostgreSQL the requeue's own NOTIFY
            // would wake it at once, and the daemon or database that just
            // failed would be tried again without a breath.
            await this.#options.clock.sleep(
              REQUEUE_PAUSE_SECONDS * 1000,
              signal,
            ).catch(() => {});
          }
          continue;
        }
      } catch (error) {
        logger.error("local batch failed", { error });
        // Its open builds only: one withdrawn from it (restarted elsewhere)
        // may be another batch's by now, under the same name.
        if (flight !== null) {
          await this.#requeueUntilDone(flight, signal);
        }
      }
      if (this.#wokenWhileBusy) {
        this.#wokenWhileBusy = false;
        continue;
      }
      await this.#pause(signal, this.#options.pollSeconds ?? 5);
    }
  }

  async #pause(signal: AbortSignal, seconds: number): Promise<void> {
    const woken = new Promise<void>((resolve) => (this.#wakeUp = resolve));
    await Promise.race([
      this.#options.clock.sleep(seconds * 1000, signal).catch(() => {}),
      woken,
    ]);
    this.#wakeUp = null;
  }

  /**
   * Cancels build `id` in the store; when it is being built here, its
   * driver is stopped and the rest of its batch requeued, as in remote
   * mode its worker is told to stop.
   */
  async cancelBuild(id: number): Promise<boolean> {
    const { store, clock } = this.#options;
    const build = await store.getBuild(id);
    if (build === null) return false;
    const result = await store.cancelBuild(id, epochSeconds(clock));
    // A canceled build is taken by no batch again: those holding it now
    // are the ones to stop.
    const holders = this.#holders(build.derivation);
    this.#log("canceled", id, build.derivation, result);
    if (result.worker === this.#holder.known) {
      for (const flight of holders) {
        this.#withdraw(flight, build.derivation, "canceled");
      }
    }
    return result.changed;
  }

  /**
   * Schedules build `id` again; when it is being built here, its driver is
   * stopped and the rest of its batch requeued.
   */
  async restartBuild(id: number): Promise<boolean> {
    const { store, clock } = this.#options;
    const build = await store.getBuild(id);
    if (build === null) return false;
    const result = await store.restartBuild(id, epochSeconds(clock));
    this.#log("restarted", id, build.derivation, result);
    if (result.worker === this.#holder.known) {
      // The batch to stop is found once the restart is saved, from the
      // database: meanwhile the build may have left the batch holding it
      // when the restart was asked for another one. A batch taking it
      // after the restart keeps it, as the database has it held then.
      await this.#takeBackNow();
    }
    if (result.changed) this.wake();
    return result.changed;
  }

  /**
   * Cancels the pending builds of evaluation `id`; the drivers building
   * them here are stopped and the rest of their batches requeued.
   */
  async cancelEvaluation(id: number): Promise<number> {
    const { store, clock, logger } = this.#options;
    const count = (await store.cancelEvaluation(id, epochSeconds(clock)))
      .changed;
    logger.info("evaluation canceled", { evaluation: id, builds: count });
    if (count > 0) await this.#takeBackNow();
    return count;
  }

  /**
   * Schedules every build of evaluation `id` again; the drivers building
   * them here are stopped and the rest of their batches requeued.
   */
  async restartEvaluation(id: number): Promise<number> {
    const { store, clock, logger } = this.#options;
    const count = (await store.restartEvaluation(id, epochSeconds(clock)))
      .changed;
    logger.info("evaluation restarted", { evaluation: id, builds: count });
    if (count > 0) {
      await this.#takeBackNow();
      this.wake();
    }
    return count;
  }

  /**
   * Looks at the database for every batch now, after a change made here;
   * a look that fails is left to the next periodic one.
   */
  async #takeBackNow(): Promise<void> {
    // Asked again while one runs (a burst of notifications), it runs once
    // more after it, for every batch in flight then.
    await this.#lookNow.run().catch((error) =>
      this.#options.logger.warn("held builds not checked", { error })
    );
  }

  #holders(drv: string): Flight[] {
    return [...this.#flights].filter((flight) => flight.open.has(drv));
  }

  #log(
    action: Withdrawal,
    id: number,
    drv: string,
    result: { changed: boolean; worker: string | null },
  ) {
    this.#options.logger.info(`build ${action}`, {
      build: id,
      drv,
      worker: result.worker ?? undefined,
      changed: result.changed,
    });
  }

  /**
   * Takes `drv` out of `flight`: its events are ignored from now on, it is
   * neither requeued nor reconciled, and the driver building it is
   * stopped (SIGTERM, then SIGKILL after the spawner's grace).
   */
  #withdraw(flight: Flight, drv: string, action: Withdrawal) {
    if (!flight.open.delete(drv)) return;
    // Only while a driver runs are a look at the database and the batch's
    // own records kept apart (flight.turns): otherwise the build may be gone
    // from the database because this batch has just settled or requeued
    // it, which is no news.
    if (action === "taken back" && flight.group !== null) {
      this.#options.logger.info("build taken back", {
        drv,
        worker: this.#holder.known ?? undefined,
      });
    }
    if (!flight.group?.has(drv)) return;
    this.#options.logger.info("build driver stopped", {
      drv,
      reason: action,
      builds: flight.group.size,
    });
    flight.stopGroup?.abort(new Error(`build ${action}: ${drv}`));
  }

  /** Takes up to a batch of dispatchable builds for this server. */
  takeBatch(): Promise<Build[]> {
    return this.#takeBatch((builds, held) => {
      for (const build of builds) this.#takenUnder.set(build, held);
      return builds;
    });
  }

  /**
   * {@link takeBatch}, handing the batch to `onTaken` in the same step as
   * the check that the name it was taken under is still the one claimed:
   * a regain, whose withdrawal of every batch begins with the batches in
   * #flights, cannot fall between the two when `onTaken` puts it there.
   */
  async #takeBatch<T>(
    onTaken: (builds: Build[], held: HeldName) => T,
  ): Promise<T> {
    const { store, clock } = this.#options;
    // Not under a name whose row another server expired meanwhile: a
    // third server may have claimed it since, and builds taken under it
    // now would be held in its name, by nothing that builds them. (A read:
    // a renewal would be a write per batch, and the renewals keep their
    // own schedule.) The row may still change between the read and the
    // pop: the pop checks it again, in its own atomic step.
    let taken: Build[] = [];
    let held = await this.#holder.own(false);
    for (let attempt = 1;; attempt++) {
      const worker = held.name;
      const systems = await this.#systems();
      const size = this.#options.batchSize ?? 200;
      const requests = Array.from(
        { length: size },
        () => ({ worker, systems }),
      );
      const builds = await store.popBuilds(requests, epochSeconds(clock), {
        holderAddress: held.address,
      });
      taken = builds.filter((build) => build !== null);
      if (this.#holder.isCurrent(held)) break;
      // The claim was found lost while the batch was taken: the regain did
      // not see this batch, which it would have withdrawn. The batch is
      // left, not given back: the pop found the claim's row as it was, so
      // whoever ended the claim did so after the pop, and put its builds
      // back in the queue (local_holder.ts); a requeue now could take
      // from another holder what it got since.
      this.#options.logger.info("local batch left", {
        worker,
        builds: taken.length,
      });
      taken = [];
      if (attempt === MAX_TAKE_ATTEMPTS) break;
      held = await this.#holder.own(false);
    }
    // A build handed out again was restarted meanwhile (by another
    // process): a batch still holding it lost it, and must neither record
    // its result over the new run nor requeue it from the new batch.
    for (const build of taken) {
      for (const flight of this.#holders(build.derivation)) {
        this.#withdraw(flight, build.derivation, "taken back");
      }
    }
    return onTaken(taken, held);
  }

  async #systems(): Promise<string[]> {
    const { systems, store } = this.#options;
    if (systems !== "all") return systems;
    const specs = await store.listSpecifications();
    return [...new Set(specs.flatMap((spec) => spec.systems))];
  }

  /**
   * Builds `builds` (already submitted to this server): outputs
   * already valid count as built, missing derivations fail alone, the rest
   * go to the daemon grouped by their time limits; then every build is
   * reconciled with the store.
   */
  buildBatch(builds: Build[], signal?: AbortSignal): Promise<BatchSummary> {
    const claim = builds.length === 0
      ? null
      : this.#takenUnder.get(builds[0]) ?? null;
    return this.#fly(this.#openFlight(builds, claim), signal);
  }

  /** A flight of `builds`, taken under `claim`, in #flights from now on. */
  #openFlight(builds: Build[], claim: HeldName | null): Flight {
    const flight = new Flight(builds, claim, this.#recorder);
    this.#flights.add(flight);
    return flight;
  }

  /** Builds `flight` (see buildBatch), and takes it out of #flights. */
  async #fly(flight: Flight, signal?: AbortSignal): Promise<BatchSummary> {
    const summary = emptySummary();
    const byDrv = new Map(
      flight.builds.map((build) => [build.derivation, build]),
    );
    const drvs = [...byDrv.keys()].sort();
    try {
      // Withdrawn whole before its start (a regain just after the take).
      if (flight.open.size === 0) {
        summary.interruption = "withdrawal";
        return summary;
      }
      return await this.#buildFlight(flight, drvs, byDrv, summary, signal);
    } finally {
      this.#flights.delete(flight);
    }
  }

  async #buildFlight(
    flight: Flight,
    drvs: string[],
    byDrv: Map<string, Build>,
    summary: BatchSummary,
    signal?: AbortSignal,
  ): Promise<BatchSummary> {
    const { logger } = this.#options;
    const { open } = flight;
    logger.info("local batch started", { builds: drvs.length });

    let before: Map<string, DerivationState>;
    try {
      before = await queryDerivations(this.#options.spawnGuix, drvs, {
        driver: this.#options.driver,
        signal,
      });
    } catch (error) {
      logger.error("local batch query failed", { error });
      summary.requeued = await flight.requeue(flight.openBuilds());
      summary.interruption = "fault";
      return summary;
    }
    const toBuild: Build[] = [];
    for (const drv of drvs) {
      if (!open.has(drv)) continue;
      const state = before.get(drv);
      if (state === "valid" || state === "missing") {
        await flight.settle(byDrv.get(drv)!, state, summary);
        open.delete(drv);
      } else {
        toBuild.push(byDrv.get(drv)!);
      }
    }

    const groups = new Map<string, Build[]>();
    for (const build of toBuild) {
      const key = `${build.timeout}:${build.maxSilent}`;
      groups.set(key, [...(groups.get(key) ?? []), build]);
    }
    let driverFailed = false;
    for (const all of groups.values()) {
      if (signal?.aborted) break;
      const group = all.filter((build) => open.has(build.derivation));
      if (group.length === 0) continue;
      const ran = await this.#runGroup(group, byDrv, flight, summary, signal);
      if (ran === "withdrawn") {
        // As after a silent daemon, the rest of the batch goes back to the
        // queue rather than wait in this lane.
        summary.interruption = "withdrawal";
        break;
      }
      if (ran !== "done") driverFailed = true;
      // A stuck daemon would hold each of the other groups for its own
      // max-silent-time and the grace: they go back to the queue at once.
      if (ran === "daemon-silent") break;
    }

    if (signal?.aborted || driverFailed || summary.interruption !== null) {
      summary.interruption ??= signal?.aborted ? "shutdown" : "fault";
      summary.requeued = await flight.requeue(flight.openBuilds());
      logger.info("local batch interrupted", { ...summary });
      return summary;
    }
    try {
      const after = await queryDerivations(
        this.#options.spawnGuix,
        [...open],
        { driver: this.#options.driver, signal },
      );
      for (const drv of [...open]) {
        // Withdrawn while an earlier one was settled: a restarted build
        // may already be another batch's, which the state read before the
        // restart must not overwrite.
        if (!open.has(drv)) continue;
        await flight.settle(byDrv.get(drv)!, after.get(drv)!, summary);
        open.delete(drv);
      }
    } catch (error) {
      logger.error("local batch query failed", { error });
      summary.requeued = await flight.requeue(flight.openBuilds());
      summary.interruption = "fault";
    }
    logger.info("local batch done", { ...summary });
    return summary;
  }

  /**
   * Runs the driver on one group: "done" when the driver ran to its end,
   * "failed" when the driver itself failed, "daemon-silent" when it was
   * stopped because the daemon stopped answering, "withdrawn" when it was
   * stopped because one of its builds was canceled or restarted.
   */
  async #runGroup(
    group: Build[],
    byDrv: Map<string, Build>,
    flight: Flight,
    summary: BatchSummary,
    signal?: AbortSignal,
  ): Promise<"done" | "failed" | "daemon-silent" | "withdrawn"> {
    const { logger } = this.#options;
    const events = new GroupEvents(
      flight,
      await flight.writerName(),
      byDrv,
      summary,
      this.#recorder,
    );
    const sample = group[0];
    const silent = new AbortController();
    const withdrawal = new AbortController();
    const watchdog = this.#watchdog(group, flight.open, silent);
    flight.group = new Set(group.map((build) => build.derivation));
    flight.stopGroup = withdrawal;
    const stopLooking = new AbortController();
    const looking = this.#lookWhileBuilding(flight, stopLooking.signal);
    try {
      const result = await runBuildDriver(this.#options.spawnGuix, {
        drvs: group.map((build) => build.derivation).sort(),
        timeout: sample.timeout,
        maxSilentTime: sample.maxSilent,
        maxJobs: this.#options.maxJobs ?? 1,
        driver: this.#options.driver,
        signal: AbortSignal.any([
          ...(signal ? [signal] : []),
          silent.signal,
          withdrawal.signal,
        ]),
      }, (event) => {
        watchdog?.alive();
        return flight.turns.run(() => events.handle(event));
      });
      if (silent.signal.aborted) return "daemon-silent";
      if (withdrawal.signal.aborted) return "withdrawn";
      if (result.exitCode === 0 || result.exitCode === 1) return "done";
      if (!signal?.aborted) {
        logger.error("build driver failed", {
          code: result.exitCode,
          signal: result.signal,
          stderr: result.stderr.slice(-2000),
        });
      }
      return "failed";
    } catch (error) {
      logger.error("build driver failed", { error });
      return "failed";
    } finally {
      stopLooking.abort();
      await looking;
      flight.group = null;
      flight.stopGroup = null;
      watchdog?.stop();
      await events.close();
    }
  }

  /**
   * Looks at the database every `heldCheckSeconds` until `signal` aborts,
   * so that a cancel or restart made by another process stops the driver
   * as one made here does.
   */
  async #lookWhileBuilding(flight: Flight, signal: AbortSignal) {
    const { clock, logger, heldCheckSeconds } = this.#options;
    while (true) {
      try {
        await clock.sleep((heldCheckSeconds ?? 5) * 1000, signal);
      } catch {
        return;
      }
      await this.#takeBack([flight]).catch((error) =>
        logger.warn("held builds not checked", { error })
      );
    }
  }

  /**
   * Withdraws from `flights` the builds that the database no longer has
   * held by this server. Each flight is changed in its turn: a build its
   * driver has just reported is recorded and out of the flight before,
   * never taken for one canceled elsewhere.
   */
  async #takeBack(flights: Flight[]): Promise<void> {
    const { store, concurrency, batchSize } = this.#options;
    // The builds name their holder, not its claim: once this server's row
    // is lost, a server of this host that claimed the name since holds
    // its builds under it, this server's among them if it took them. The
    // row is read first: lost, every batch is given up and a name claimed
    // again (HolderKeeper.own), rather than a batch built on and recorded
    // under the other server's claim until the next renewal.
    if (this.#holder.known !== null && flights.length > 0) {
      await this.#holder.own(false);
    }
    const worker = this.#holder.known;
    // One read in the usual case. A list cut at its limit (more builds
    // held under this server's name than its batches hold, as left by a
    // batch the database could not give back) says nothing of the builds
    // past the cut: those are read one by one.
    const limit = 2 * (concurrency ?? 1) * (batchSize ?? 200);
    const list = worker === null ? [] : await store.queue({ worker }, limit);
    const held = new Set(list.map((build) => build.derivation));
    const gone = new Set<string>();
    for (const drv of flights.flatMap((flight) => [...flight.open])) {
      if (held.has(drv) || gone.has(drv)) continue;
      if (
        list.length < limit ||
        !heldBy(worker, await store.getBuildByDerivation(drv))
      ) {
        gone.add(drv);
      }
    }
    for (const flight of flights) {
      await flight.turns.run(() => {
        for (const drv of gone) this.#withdraw(flight, drv, "taken back");
        return Promise.resolve();
      });
    }
  }

  /**
   * Aborts `silent` once the daemon said nothing for the group's
   * max-silent-time and the grace: it would have killed and reported a
   * build that silent, so it is stuck. None for a group without the limit
   * (a build may then be silent for as long as it likes).
   */
  #watchdog(
    group: Build[],
    open: Set<string>,
    silent: AbortController,
  ): SilenceWatchdog | null {
    const maxSilent = group[0].maxSilent;
    const { clock, logger, daemonSilenceGraceSeconds } = this.#options;
    return watchDaemon(clock, maxSilent, daemonSilenceGraceSeconds, (ms) => {
      logger.error("daemon silent", {
        seconds: Math.round(ms / 1000),
        max_silent: maxSilent,
        builds: group.filter((build) => open.has(build.derivation)).length,
        action: "driver stopped, builds requeued",
      });
      silent.abort(new Error(`daemon silent for ${Math.round(ms / 1000)} s`));
    });
  }

  /**
   * Puts back in the queue what is left of a batch that failed, trying
   * again (1 s, doubled up to 30 s) while the store refuses (a database
   * down): the lane must outlive the outage, and the batch must not stay
   * submitted to this server for good. Gives up only at shutdown, when the
   * next start's recover() requeues it.
   */
  async #requeueUntilDone(flight: Flight, signal: AbortSignal) {
    const builds = flight.openBuilds();
    const { clock, logger } = this.#options;
    for (let delay = 1000;; delay = Math.min(delay * 2, 30_000)) {
      try {
        // Not a build another batch of this server took meanwhile (one
        // restarted elsewhere, then taken again under the same name): this
        // batch is out of the flights, where a new batch's take withdraws
        // its builds from older ones.
        await flight.requeue(
          builds.filter((build) =>
            this.#holders(build.derivation).length === 0
          ),
        );
        return;
      } catch (error) {
        logger.error("local builds not requeued", {
          builds: builds.length,
          retryMs: delay,
          error,
        });
      }
      try {
        await clock.sleep(delay, signal);
      } catch {
        return;
      }
    }
  }
}

/** Whether `build` is submitted or started under holder name `worker`. */
function heldBy(worker: string | null, build: Build | null): boolean {
  return build !== null && worker !== null && build.worker === worker &&
    (build.status === BuildStatus.submitted ||
      build.status === BuildStatus.started);
}
