// The events of one run of the build driver over a group of a batch's
// builds, recorded as they come: each build's log written to the log cache
// as the daemon sends it, its start and its end saved in the store under
// the batch's claim (local_flight.ts). A build the batch no longer holds
// (withdrawn: canceled or restarted meanwhile) is not recorded.

import { epochSeconds } from "../clock.ts";
import type { BuildEvent } from "../guix/build_events.ts";
import { logFileName } from "../protocol/log_channel.ts";
import { type Build, BuildStatus } from "../store/types.ts";
import { LogWriter } from "./local_build_log.ts";
import type { BatchSummary, Flight, FlightRecorder } from "./local_flight.ts";

/** Records the events of one driver run of `flight`'s current group. */
export class GroupEvents {
  readonly #flight: Flight;
  /** The holder name the batch's writes are made under. */
  readonly #worker: string;
  readonly #byDrv: ReadonlyMap<string, Build>;
  readonly #summary: BatchSummary;
  readonly #recorder: FlightRecorder;
  /** The log being written for each build process the daemon runs. */
  readonly #writers = new Map<number, LogWriter>();
  /** The daemon's process building each derivation, once started. */
  readonly #pidOf = new Map<string, number>();

  constructor(
    flight: Flight,
    worker: string,
    byDrv: ReadonlyMap<string, Build>,
    summary: BatchSummary,
    recorder: FlightRecorder,
  ) {
    this.#flight = flight;
    this.#worker = worker;
    this.#byDrv = byDrv;
    this.#summary = summary;
    this.#recorder = recorder;
  }

  /** Records `event`; the caller orders the calls (Flight.turns). */
  async handle(event: BuildEvent): Promise<void> {
    const { logger } = this.#recorder;
    switch (event.type) {
      case "build-started":
        if (!this.#flight.open.has(event.drv) || event.pid === null) return;
        await this.#started(event.drv, event.pid);
        return;
      case "build-log":
        await this.#writers.get(event.pid)?.write(event.data);
        return;
      case "build-succeeded":
      case "build-failed": {
        if (!this.#flight.open.has(event.drv)) return;
        const pid = this.#pidOf.get(event.drv);
        if (pid !== undefined) await this.#closeLog(pid, event.drv);
        const succeeded = event.type === "build-succeeded";
        const changed = await this.#flight.complete(
          this.#byDrv.get(event.drv)!,
          succeeded ? BuildStatus.succeeded : BuildStatus.failed,
          this.#summary,
        );
        this.#flight.open.delete(event.drv);
        // Unchanged: canceled or restarted meanwhile, not this batch's.
        if (!changed) return;
        logger.info(succeeded ? "build succeeded" : "build failed", {
          drv: event.drv,
          worker: this.#worker,
          ...(event.type === "build-failed"
            ? { reason: event.message || event.code }
            : {}),
        });
        return;
      }
      case "message":
        logger.debug("daemon message", { text: event.text });
        return;
      case "trace":
        logger.debug("daemon trace", { name: event.name });
        return;
    }
  }

  /** Closes the logs still open: the driver run is over. */
  async close(): Promise<void> {
    for (const [drv, pid] of this.#pidOf) await this.#closeLog(pid, drv);
  }

  async #started(drv: string, pid: number): Promise<void> {
    const { store, clock, logger, logCacheDir, storeDir } = this.#recorder;
    const log = logFileName(logCacheDir, storeDir, drv);
    // Started again: the earlier run's log ends here.
    const previous = this.#pidOf.get(drv);
    if (previous !== undefined) await this.#closeLog(previous, drv);
    // A log that cannot be written (a full disk) costs the build its log,
    // not its result.
    const writer = await LogWriter.open(log).catch((error) => {
      logger.warn("log not stored", { drv, path: log, error });
      return undefined;
    });
    if (writer) this.#writers.set(pid, writer);
    this.#pidOf.set(drv, pid);
    await store.markStarted(
      drv,
      this.#worker,
      log,
      epochSeconds(clock),
      this.#flight.writeCheck(),
    );
    logger.info("build started", { drv, worker: this.#worker });
  }

  async #closeLog(pid: number, drv: string): Promise<void> {
    const writer = this.#writers.get(pid);
    this.#writers.delete(pid);
    const error = await writer?.close();
    if (error) {
      this.#recorder.logger.warn("log not stored", {
        drv,
        path: writer!.path,
        error,
      });
    }
  }
}
