// The scan thread of sqlite_scanner.ts: a read-only connection of its own,
// on which each scan reads one consistent state of the database.

/// <reference lib="deno.worker" />

import { DatabaseSync } from "node:sqlite";
import { StoreError } from "./types.ts";
import { scanProcedure } from "./sql_scans.ts";
import { type Prepare, runSteps, statementCache } from "./sqlite_steps.ts";
import type { ScanArgs, ScanName } from "./sql_scans.ts";
import type {
  ScanFailure,
  ScannerCommand,
  ScannerReport,
} from "./sqlite_scanner.ts";

let path = "";
let busyTimeoutMs = 5000;
/** Set by the main thread once it stops: scans still queued are declined. */
let stopping = new Int32Array(new SharedArrayBuffer(4));
let db: DatabaseSync | undefined;
let prepare: Prepare | undefined;

function report(message: ScannerReport): void {
  self.postMessage(message);
}

/** The connection, opened on first use and again after a failed open. */
function connection(): Prepare {
  if (prepare === undefined) {
    db = new DatabaseSync(path, { readOnly: true });
    try {
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    } catch (error) {
      db.close();
      db = undefined;
      throw error;
    }
    prepare = statementCache(db).prepare;
  }
  return prepare;
}

function failure(error: unknown): ScanFailure {
  if (error instanceof StoreError) {
    return {
      name: error.name,
      message: error.message,
      code: error.code,
      value: error.value,
    };
  }
  return {
    name: (error as Error)?.name ?? "Error",
    message: (error as Error)?.message ?? String(error),
  };
}

function scan(id: number, name: ScanName, args: unknown[]): void {
  // The main thread runs it on its own connection while closing: a backlog
  // of scans must not keep the thread's connection open past the stop.
  if (Atomics.load(stopping, 0) !== 0) {
    report({ type: "declined", id });
    return;
  }
  let run: Prepare;
  try {
    run = connection();
  } catch (error) {
    report({ type: "unavailable", id, message: String(error) });
    return;
  }
  let value: unknown;
  try {
    // One read transaction: a scan of several statements sees one state.
    run("BEGIN").run();
    try {
      value = runSteps(run, scanProcedure(name, args as ScanArgs<ScanName>));
    } finally {
      run("COMMIT").run();
    }
  } catch (error) {
    report({ type: "failed", id, error: failure(error) });
    return;
  }
  report({ type: "done", id, value });
}

self.onmessage = (event: MessageEvent<ScannerCommand>) => {
  const command = event.data;
  switch (command.type) {
    case "open":
      ({ path, busyTimeoutMs, stopping } = command);
      return;
    case "scan":
      return scan(command.id, command.name, command.args);
    case "stop":
      try {
        if (db?.isOpen) db.close();
      } catch {
        // Closing a read-only connection has nothing to lose.
      }
      report({ type: "stopped" });
      self.close();
  }
};
