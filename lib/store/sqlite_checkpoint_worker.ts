// The checkpoint thread of sqlite_checkpointer.ts: a connection of its own
// that copies the write-ahead log into the database file, often while the
// log grows, rarely once it stops.

/// <reference lib="deno.worker" />

import { DatabaseSync } from "node:sqlite";
import type { StatementSync } from "node:sqlite";
import type {
  CheckpointerCommand,
  CheckpointerReport,
} from "./sqlite_checkpointer.ts";

let db: DatabaseSync | undefined;
let timer: ReturnType<typeof setTimeout> | undefined;

function report(message: CheckpointerReport): void {
  self.postMessage(message);
}

function start(
  path: string,
  busyIntervalMs: number,
  idleIntervalMs: number,
): void {
  let checkpoint: StatementSync | undefined;
  let interval = busyIntervalMs;
  let lastFrames = -1;
  let lastFailure = "";
  const pass = () => {
    try {
      // Opened by the pass, so that a failure to open is tried again.
      if (checkpoint === undefined) {
        if (db?.isOpen) db.close();
        db = new DatabaseSync(path);
        // A passive checkpoint waits for no one: while the writer's own
        // checkpoint runs, this one skips its turn.
        checkpoint = db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
      }
      // `log`: frames in the log; `checkpointed`: those copied so far.
      const row = checkpoint.get() as { log: number; checkpointed: number };
      const growing = row.log !== lastFrames || row.checkpointed < row.log;
      lastFrames = row.log;
      interval = growing
        ? busyIntervalMs
        : Math.min(interval * 2, idleIntervalMs);
      lastFailure = "";
    } catch (error) {
      // Reported once until it changes (a full disk fails every pass).
      const message = String(error);
      if (message !== lastFailure) report({ type: "failed", message });
      lastFailure = message;
      interval = idleIntervalMs;
    }
    timer = setTimeout(pass, interval);
  };
  pass();
}

self.onmessage = (event: MessageEvent<CheckpointerCommand>) => {
  const command = event.data;
  if (command.type === "start") {
    start(command.path, command.busyIntervalMs, command.idleIntervalMs);
    return;
  }
  clearTimeout(timer);
  try {
    if (db?.isOpen) db.close();
  } catch (error) {
    report({ type: "failed", message: String(error) });
  }
  report({ type: "stopped" });
  self.close();
};
