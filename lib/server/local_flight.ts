// A batch of the local build mode in flight: the builds not finished yet,
// the group the build driver is building now with the means to stop it,
// and the writes that record the batch's outcomes in the store. Every
// write is made under the claim the batch was taken under and checks that
// it still stands: once it ended, whoever ended it put the batch's builds
// back in the queue, and another server may hold them now under the same
// name (local_holder.ts).

import { registerBuildProducts } from "./build_products.ts";
import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { DerivationState } from "../guix/build_events.ts";
import type { GcRoots } from "../guix/gc_roots.ts";
import { logFileName } from "../protocol/log_channel.ts";
import {
  type Build,
  BuildStatus,
  type HolderCheck,
  type Store,
} from "../store/types.ts";
import { OneAtATime } from "./one_at_a_time.ts";
import {
  MISSING_DERIVATION,
  writeMissingDerivationLog,
} from "./missing_derivation.ts";
import type { HeldName } from "./holder_keeper.ts";

/** How the builds of one batch ended. */
export interface BatchSummary {
  succeeded: number;
  failed: number;
  failedDependency: number;
  missing: number;
  /** Put back in the queue (driver failure, shutdown or a withdrawal). */
  requeued: number;
  /**
   * Why the batch ended before its reconciliation, if it did: "withdrawal"
   * when a build of the group being built was canceled or restarted.
   */
  interruption: "fault" | "shutdown" | "withdrawal" | null;
}

/** A summary of a batch of which nothing has ended yet. */
export function emptySummary(): BatchSummary {
  return {
    succeeded: 0,
    failed: 0,
    failedDependency: 0,
    missing: 0,
    requeued: 0,
    interruption: null,
  };
}

/** What a {@link Flight} records its outcomes with. */
export interface FlightRecorder {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** Build logs go to `<logCacheDir>/<hash>.log.gz`. */
  logCacheDir: string;
  storeDir: string;
  /** Roots for outputs of succeeded builds. */
  gcRoots?: GcRoots;
  /** The name this server holds its builds under now. */
  holderName(): Promise<string>;
}

/** A batch being built, and the writes that record how its builds end. */
export class Flight {
  readonly builds: readonly Build[];
  /**
   * The claim the batch was taken under, which its writes check (the
   * store's HolderCheck); null for builds not taken by this builder.
   */
  readonly claim: HeldName | null;
  /** The derivations neither finished nor withdrawn yet. */
  readonly open: Set<string>;
  /** The derivations the driver is building now, if it runs. */
  group: Set<string> | null = null;
  /** Stops the driver building {@link group}. */
  stopGroup: AbortController | null = null;
  /** Orders the handling of the driver's events and the looks at the database. */
  readonly turns = new OneAtATime();
  readonly #recorder: FlightRecorder;

  constructor(
    builds: readonly Build[],
    claim: HeldName | null,
    recorder: FlightRecorder,
  ) {
    this.builds = builds;
    this.claim = claim;
    this.open = new Set(builds.map((build) => build.derivation));
    this.#recorder = recorder;
  }

  /** The builds not finished nor withdrawn yet. */
  openBuilds(): Build[] {
    return this.builds.filter((build) => this.open.has(build.derivation));
  }

  /**
   * The name the writes are made under: the one the batch was taken under,
   * which a claim made since may have replaced.
   */
  async writerName(): Promise<string> {
    return this.claim?.name ?? await this.#recorder.holderName();
  }

  /** What the writes check: that the batch's claim still stands. */
  writeCheck(): HolderCheck {
    return this.claim === null ? {} : { holderAddress: this.claim.address };
  }

  /** Records the outcome the store's state implies (cuirass.md 3). */
  async settle(
    build: Build,
    state: DerivationState,
    summary: BatchSummary,
  ): Promise<void> {
    switch (state) {
      case "valid":
        await this.complete(build, BuildStatus.succeeded, summary);
        return;
      case "failed":
        await this.complete(build, BuildStatus.failed, summary);
        return;
      case "none":
        await this.complete(build, BuildStatus.failedDependency, summary);
        return;
      case "missing": {
        const { store, clock, logger, logCacheDir, storeDir } = this.#recorder;
        const log = logFileName(logCacheDir, storeDir, build.derivation);
        await writeMissingDerivationLog(log, build.derivation);
        await store.markStarted(
          build.derivation,
          await this.writerName(),
          log,
          epochSeconds(clock),
          this.writeCheck(),
        );
        logger.warn("build failed", {
          drv: build.derivation,
          reason: MISSING_DERIVATION,
        });
        summary.missing++;
        await this.complete(build, BuildStatus.failedOther, summary);
        return;
      }
    }
  }

  /** Records `status`; false when the build was no longer this batch's. */
  async complete(
    build: Build,
    status: BuildStatus,
    summary: BatchSummary,
  ): Promise<boolean> {
    const { store, clock, logger, gcRoots } = this.#recorder;
    const result = await store.completeBuild(build.derivation, status, {
      worker: await this.writerName(),
      now: epochSeconds(clock),
      ...this.writeCheck(),
    });
    if (!result.changed) return false;
    if (status === BuildStatus.succeeded) {
      summary.succeeded++;
      // The build is done: roots that cannot be made do not undo it.
      await gcRoots?.register(build.outputs.map((output) => output.path))
        .catch((error) =>
          logger.error("roots not registered", {
            drv: build.derivation,
            error,
          })
        );
      await registerBuildProducts(build, { store, logger, gcRoots })
        .catch((error) =>
          logger.error("after success failed", {
            drv: build.derivation,
            error,
          })
        );
    } else if (status === BuildStatus.failedDependency) {
      summary.failedDependency++;
    } else if (status === BuildStatus.failed) {
      summary.failed++;
    }
    return true;
  }

  /**
   * Puts `builds` back in the queue, each only while it is still held
   * under the name it was taken under: one restarted meanwhile (by another
   * process) may have been taken since by another server, whose build it
   * is now. (One held under a name this server no longer claims went back
   * to the queue when the claim ended.)
   */
  async requeue(builds: Iterable<Build>): Promise<number> {
    const { store, clock } = this.#recorder;
    let count = 0;
    for (const build of builds) {
      const worker = build.worker ?? await this.writerName();
      const now = epochSeconds(clock);
      const check = worker === this.claim?.name ? this.writeCheck() : {};
      if (
        await store.requeueBuild(build.derivation, now, { worker, ...check })
      ) {
        count++;
      }
    }
    return count;
  }
}
