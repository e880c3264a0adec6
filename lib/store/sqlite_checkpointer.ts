// Checkpoints of a SQLite database in WAL mode, on a thread of their own.
//
// A checkpoint copies the pages committed to the write-ahead log back into
// the database file, then syncs the file. SQLite runs one on the committing
// connection once the log reaches wal_autocheckpoint pages: at a few
// thousand builds a second, tens of milliseconds of copying and fsync on
// the dispatcher's thread, during which no worker is answered. A second
// connection on a worker thread checkpoints instead, every few milliseconds
// while the log grows. The writer's own automatic checkpoint stays on:
// under steady writes it is the one that copies the log to its very end,
// right after a commit, so that the next write can start the log over; it
// finds almost every page copied and synced already, so it is short.
//
// The thread keeps the process alive until the store is closed.

import { endThread } from "./worker_thread.ts";
import type { Logger } from "../log.ts";

/** Options of {@link startCheckpointer}. */
export interface CheckpointerOptions {
  /** The wait between checkpoints while the log grows; default 10 ms. */
  busyIntervalMs?: number;
  /**
   * The longest wait once the log stopped growing (the wait doubles up to
   * it); default 1000 ms.
   */
  idleIntervalMs?: number;
  /** Where a checkpointer that cannot run says so. */
  logger?: Logger;
}

/** What the main thread tells the checkpoint thread. */
export type CheckpointerCommand =
  | {
    type: "start";
    path: string;
    busyIntervalMs: number;
    idleIntervalMs: number;
  }
  | { type: "stop" };

/** What the checkpoint thread reports. */
export type CheckpointerReport =
  | { type: "failed"; message: string }
  | { type: "stopped" };

/** A running checkpoint thread. */
export interface Checkpointer {
  /** Closes the thread's connection and ends the thread. */
  stop(): Promise<void>;
}

/**
 * Starts checkpointing the database at `path` (in WAL mode) on a worker
 * thread. Failures are logged, never thrown: without the thread, SQLite's
 * automatic checkpoints on the writing connection still keep the log
 * bounded, only with longer stalls.
 */
export function startCheckpointer(
  path: string,
  options: CheckpointerOptions = {},
): Checkpointer {
  const { busyIntervalMs = 10, idleIntervalMs = 1000, logger } = options;
  let worker: Worker;
  try {
    worker = new Worker(
      new URL("./sqlite_checkpoint_worker.ts", import.meta.url).href,
      { type: "module" },
    );
  } catch (error) {
    logger?.warn("background checkpoints unavailable", {
      database: path,
      error,
    });
    return { stop: () => Promise.resolve() };
  }
  let stopped: () => void = () => {};
  const whenStopped = new Promise<void>((resolve) => stopped = resolve);
  worker.onmessage = (event: MessageEvent<CheckpointerReport>) => {
    const report = event.data;
    if (report.type === "stopped") {
      stopped();
      return;
    }
    logger?.warn("background checkpoint failed", {
      database: path,
      error: report.message,
    });
  };
  worker.onerror = (event) => {
    // Handled here: an error left to propagate would end the server.
    event.preventDefault();
    logger?.warn("background checkpoints unavailable", {
      database: path,
      error: event.message,
    });
    stopped();
  };
  const start: CheckpointerCommand = {
    type: "start",
    path,
    busyIntervalMs,
    idleIntervalMs,
  };
  worker.postMessage(start);
  let stopping: Promise<void> | undefined;
  return {
    stop() {
      stopping ??= (async () => {
        const stop: CheckpointerCommand = { type: "stop" };
        await endThread(worker, stop, whenStopped);
      })();
      return stopping;
    },
  };
}
