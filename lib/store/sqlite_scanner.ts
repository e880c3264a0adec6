// Scans of a SQLite database (sql_scans.ts) on a thread of their own.
//
// At a million builds, counting the queue by system or the builds by status
// reads 50-100 ms of index; listing the jobs of a 50,000-job evaluation,
// 100 ms. On the writing connection, that would be as long during which the
// dispatcher answers no worker, at every scrape of the metrics, every view
// of the workers page, every /api/jobs. A second connection on a
// worker thread runs them instead; in WAL mode its reads and the writer's
// commits do not wait for each other. It sees committed writes only, which
// is all a count or a list shown to a person or a scraper needs (the worker
// sweeper, which acts on the queue's length, reads the builds it fails again
// on the writer's connection). A read holds the log back from starting
// over while it runs: scans back to back under steady writes let the log
// grow somewhat larger (42 to 58 MB over a minute, measured).
//
// Where the thread is unavailable (it could not start, open the database,
// or it died) or stopping, scans run on the caller's connection, as without
// it. A stop overtakes the scans queued for the thread, so that its
// connection closes before the store's (which then removes the log).
//
// The thread keeps the process alive until the store is closed.

import { StoreError, type StoreErrorCode } from "./types.ts";
import { endThread } from "./worker_thread.ts";
import type { Scan, ScanArgs, ScanName } from "./sql_scans.ts";
import type { Logger } from "../log.ts";

/** Options of {@link startScanner}. */
export interface ScannerOptions {
  /** Runs a scan on the caller's connection, when the thread cannot. */
  runHere: Scan;
  /** How long the thread's reads wait for a lock; default 5000 ms. */
  busyTimeoutMs?: number;
  /** Where the thread's unavailability is logged. */
  logger?: Logger;
}

/** What the main thread tells the scan thread. */
export type ScannerCommand =
  | {
    type: "open";
    path: string;
    busyTimeoutMs: number;
    /** Non-zero once the main thread stops (on a SharedArrayBuffer). */
    stopping: Int32Array<SharedArrayBuffer>;
  }
  | { type: "scan"; id: number; name: ScanName; args: unknown[] }
  | { type: "stop" };

/**
 * An error of a scan, as it crosses threads: a StoreError keeps its code
 * and offending value, a built-in error its class.
 */
export interface ScanFailure {
  name: string;
  message: string;
  code?: StoreErrorCode;
  value?: unknown;
}

/** What the scan thread reports. */
export type ScannerReport =
  | { type: "done"; id: number; value: unknown }
  | { type: "failed"; id: number; error: ScanFailure }
  /** The thread could not run scan `id` (no connection): run it here. */
  | { type: "unavailable"; id: number; message: string }
  /** The thread is stopping: run scan `id` here. */
  | { type: "declined"; id: number }
  | { type: "stopped" };

/** A running scan thread. */
export interface Scanner {
  scan: Scan;
  /**
   * Ends the thread; scans still waiting for it run on the caller's
   * connection (which must stay open until this resolves).
   */
  stop(): Promise<void>;
}

interface Waiting {
  name: ScanName;
  args: unknown[];
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** Built-in errors a scan may throw, rebuilt as such. */
const BUILT_IN_ERRORS: Record<string, ErrorConstructor> = {
  TypeError,
  RangeError,
  SyntaxError,
};

/** The error a scan thread reported, rebuilt on this side. */
export function scanError(failure: ScanFailure): Error {
  if (failure.code !== undefined) {
    return new StoreError(failure.message, failure.code, failure.value);
  }
  const error = new (BUILT_IN_ERRORS[failure.name] ?? Error)(failure.message);
  error.name = failure.name;
  return error;
}

/**
 * Starts a thread running scans of the database at `path` (in WAL mode)
 * on a read-only connection of its own. Failures are logged, never
 * thrown: scans then run through `runHere`.
 */
export function startScanner(path: string, options: ScannerOptions): Scanner {
  const { runHere, busyTimeoutMs = 5000, logger } = options;
  const unavailable = (error: unknown) =>
    logger?.warn("background scans unavailable", { database: path, error });
  let worker: Worker;
  try {
    worker = new Worker(
      new URL("./sqlite_scan_worker.ts", import.meta.url).href,
      { type: "module" },
    );
  } catch (error) {
    unavailable(error);
    return { scan: runHere, stop: () => Promise.resolve() };
  }
  const waiting = new Map<number, Waiting>();
  let lastId = 0;
  // False once the thread died or is stopping: scans run here.
  let running = true;
  let lastFailure = "";
  let stopped: () => void = () => {};
  const whenStopped = new Promise<void>((resolve) => stopped = resolve);

  const runWaitingHere = (id: number) => {
    const scan = waiting.get(id);
    if (scan === undefined) return;
    waiting.delete(id);
    runHere(scan.name, scan.args as ScanArgs<ScanName>)
      .then(scan.resolve, scan.reject);
  };

  worker.onmessage = (event: MessageEvent<ScannerReport>) => {
    const report = event.data;
    if (report.type === "stopped") {
      stopped();
      return;
    }
    if (report.type === "declined") {
      runWaitingHere(report.id);
      return;
    }
    if (report.type === "unavailable") {
      // Logged once until it changes: every scan tries to connect again.
      if (report.message !== lastFailure) unavailable(report.message);
      lastFailure = report.message;
      runWaitingHere(report.id);
      return;
    }
    lastFailure = "";
    const scan = waiting.get(report.id);
    waiting.delete(report.id);
    if (report.type === "done") scan?.resolve(report.value);
    else scan?.reject(scanError(report.error));
  };
  worker.onerror = (event) => {
    // Handled here: an error left to propagate would end the server.
    event.preventDefault();
    unavailable(event.message);
    running = false;
    for (const id of [...waiting.keys()]) runWaitingHere(id);
    stopped();
  };
  const stopFlag = new Int32Array(new SharedArrayBuffer(4));
  const open: ScannerCommand = {
    type: "open",
    path,
    busyTimeoutMs,
    stopping: stopFlag,
  };
  worker.postMessage(open);

  let stopping: Promise<void> | undefined;
  return {
    scan(name, args) {
      if (!running) return runHere(name, args);
      const id = ++lastId;
      const command: ScannerCommand = { type: "scan", id, name, args };
      try {
        worker.postMessage(command);
      } catch {
        // Arguments that cannot cross threads: the caller's connection
        // answers as it would without the thread.
        return runHere(name, args);
      }
      return new Promise((resolve, reject) =>
        waiting.set(id, {
          name,
          args,
          resolve: resolve as (value: unknown) => void,
          reject,
        })
      );
    },
    stop() {
      stopping ??= (async () => {
        running = false;
        Atomics.store(stopFlag, 0, 1);
        const stop: ScannerCommand = { type: "stop" };
        await endThread(worker, stop, whenStopped);
        // Only left when the thread did not answer in time (a long scan).
        for (const id of [...waiting.keys()]) runWaitingHere(id);
      })();
      return stopping;
    },
  };
}
