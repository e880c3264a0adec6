// What both ends of the Cuirass log channel (cuirass.md §1.9) share: the two
// greeting s-expressions, bounded reads with time limits, and log file names.

import { isSym, sym } from "../sexp/datum.ts";
import { readSexp } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";
import { parseDerivationPath } from "../guix/store_path.ts";
import type { Clock } from "../clock.ts";
import type { Datum } from "../sexp/datum.ts";

/** Thrown (and logged) when a peer breaks the log channel protocol. */
export class LogProtocolError extends SyntaxError {
  constructor(message: string, readonly peer?: string) {
    super(message);
    this.name = "LogProtocolError";
  }
}

/** Thrown (and logged) when a peer is too slow. */
export class LogTimeoutError extends Error {
  constructor(message: string, readonly timeoutMs: number) {
    super(message);
    this.name = "LogTimeoutError";
  }
}

/** The log channel version both ends speak. */
export const LOG_PROTOCOL_VERSION = 0;
const MAX_HEADER_BYTES = 4096;
const encoder = new TextEncoder();

/**
 * The file a derivation's log is stored in: `<cacheDir>/<hash>.log.gz`.
 * @throws {StorePathError} unless `drv` is a `.drv` item of `storeDir`.
 */
export function logFileName(
  cacheDir: string,
  storeDir: string,
  drv: string,
): string {
  const { hash } = parseDerivationPath(drv, storeDir);
  return `${cacheDir.replace(/\/+$/, "")}/${hash}.log.gz`;
}

/** `(log-server (version 0))`, the server's greeting. */
export function serverGreeting(): Uint8Array {
  return encoder.encode(
    writeSexp([sym("log-server"), [sym("version"), LOG_PROTOCOL_VERSION]]),
  );
}

/**
 * `(log (version 0) (derivation "D"))`, the worker's header; with
 * `acknowledge`, a Lorica extension (see {@link logStored}) adds
 * `(acknowledge #t)`, which only a server announcing "log-ack" is sent.
 */
export function logHeader(
  drv: string,
  options: { acknowledge?: boolean } = {},
): Uint8Array {
  return encoder.encode(writeSexp([
    sym("log"),
    [sym("version"), LOG_PROTOCOL_VERSION],
    [sym("derivation"), drv],
    ...options.acknowledge ? [[sym("acknowledge"), true]] : [],
  ]));
}

/** What a worker's header asks for. */
export interface LogHeader {
  drv: string;
  /** Whether the worker waits for {@link logStored} before it closes. */
  acknowledge: boolean;
}

/**
 * The header a worker sent.
 * @throws {LogProtocolError} for anything but `(log (version 0) (derivation
 * "D"))`, optionally followed by `(acknowledge #t)`.
 */
export function checkLogHeader(datum: Datum): LogHeader {
  if (
    Array.isArray(datum) && (datum.length === 3 || datum.length === 4) &&
    isSym(datum[0], "log") &&
    isField(datum[1], "version") && datum[1][1] === LOG_PROTOCOL_VERSION &&
    isField(datum[2], "derivation") && typeof datum[2][1] === "string" &&
    (datum.length === 3 ||
      isField(datum[3], "acknowledge") && datum[3][1] === true)
  ) {
    return { drv: datum[2][1], acknowledge: datum.length === 4 };
  }
  throw new LogProtocolError(
    `Cannot read log header: expected (log (version 0) (derivation "...")), found ${
      quote(writeSexp(datum))
    }`,
  );
}

/**
 * `(log-stored)`: the server's word, to a worker that asked for it, that
 * its log is in place, sent before the server closes. Without it a worker
 * cannot tell a log stored from one the server failed to write at the very
 * end (its disk full), as both end with the server's close.
 */
export function logStored(): Uint8Array {
  return encoder.encode(writeSexp([sym("log-stored")]));
}

/** Whether `bytes`, all the server sent, are {@link logStored}. */
export function isLogStored(bytes: Uint8Array): boolean {
  return new TextDecoder().decode(bytes).trim() === "(log-stored)";
}

/**
 * Accepts any `(log-server (version N))`, as Cuirass workers do.
 * @throws {LogProtocolError} for anything else.
 */
export function checkServerGreeting(datum: Datum): void {
  if (
    Array.isArray(datum) && datum.length === 2 &&
    isSym(datum[0], "log-server") && isField(datum[1], "version") &&
    (typeof datum[1][1] === "number" || typeof datum[1][1] === "bigint")
  ) {
    return;
  }
  throw new LogProtocolError(
    `Cannot read log server greeting: expected (log-server (version N)), found ${
      quote(writeSexp(datum))
    }`,
  );
}

function isField(datum: Datum, name: string): datum is Datum[] {
  return Array.isArray(datum) && datum.length === 2 && isSym(datum[0], name);
}

/**
 * Reads one list datum (at most 4 KiB) from the start of the connection.
 * Bytes after its closing parenthesis are the start of the payload and are
 * returned as well.
 * @throws {LogProtocolError} for a malformed or oversized datum, or an early end
 * @throws {LogTimeoutError} when `deadline` (the clock's monotonic time) passes
 */
export async function readDatum(
  conn: Deno.Conn,
  deadline: number,
  clock: Clock,
): Promise<{ datum: Datum; rest: Uint8Array }> {
  const buffer = new Uint8Array(MAX_HEADER_BYTES);
  const scan = { depth: 0, inString: false, escaped: false, started: false };
  let length = 0;
  while (length < buffer.length) {
    const remaining = deadline - clock.monotonic();
    if (remaining <= 0) {
      throw new LogTimeoutError("Cannot read log header: timed out", 0);
    }
    const chunk = await readSome(
      conn,
      buffer.subarray(length),
      remaining,
      clock,
    );
    if (chunk === null) {
      throw new LogProtocolError(
        `Cannot read log header: connection closed after ${length} bytes`,
      );
    }
    const end = scanDatum(buffer, length, length + chunk.length, scan);
    length += chunk.length;
    if (end >= 0) {
      let datum: Datum;
      try {
        datum = readSexp(buffer.subarray(0, end));
      } catch (error) {
        throw new LogProtocolError(
          `Cannot read log header: ${(error as Error).message}`,
        );
      }
      return { datum, rest: buffer.slice(end, length) };
    }
  }
  throw new LogProtocolError(
    `Cannot read log header: no complete datum in ${MAX_HEADER_BYTES} bytes`,
  );
}

/**
 * Continues scanning bytes [from, to) for the end of a list datum; returns
 * the index just past its closing parenthesis, or -1 when more is needed.
 */
function scanDatum(
  bytes: Uint8Array,
  from: number,
  to: number,
  scan: {
    depth: number;
    inString: boolean;
    escaped: boolean;
    started: boolean;
  },
): number {
  for (let i = from; i < to; i++) {
    const byte = bytes[i];
    if (!scan.started) {
      if (byte === 0x20 || (byte >= 0x09 && byte <= 0x0d)) continue;
      if (byte !== 0x28) {
        throw new LogProtocolError(
          `Cannot read log header: expected "(" at offset ${i}, found byte ${byte}`,
        );
      }
      scan.started = true;
    }
    if (scan.inString) {
      if (scan.escaped) scan.escaped = false;
      else if (byte === 0x5c) scan.escaped = true;
      else if (byte === 0x22) scan.inString = false;
    } else if (byte === 0x22) {
      scan.inString = true;
    } else if (byte === 0x28) {
      scan.depth++;
    } else if (byte === 0x29 && --scan.depth === 0) {
      return i + 1;
    }
  }
  return -1;
}

/**
 * One read with a time limit; null at end of stream.
 * @throws {LogTimeoutError} when nothing arrives in `timeoutMs`
 */
export async function readSome(
  conn: Deno.Conn,
  buffer: Uint8Array,
  timeoutMs: number,
  clock: Clock,
): Promise<Uint8Array | null> {
  const count = await withTimeout(
    conn.read(buffer),
    timeoutMs,
    clock,
    "Cannot read log connection",
  );
  return count === null ? null : buffer.subarray(0, count);
}

/**
 * Settles like `promise`, or rejects with LogTimeoutError after `ms`;
 * `onLate` receives a value that arrives after the timeout.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  clock: Clock,
  action: string,
  onLate?: (value: T) => void,
): Promise<T> {
  const stop = new AbortController();
  let timedOut = false;
  const timer = clock.sleep(ms, stop.signal).then(
    function expire() {
      timedOut = true;
      throw new LogTimeoutError(
        `${action}: no answer in ${Math.round(ms)} ms`,
        ms,
      );
    },
    () => undefined as never,
  );
  if (onLate) {
    promise.then((value) => timedOut && onLate(value), () => {});
  }
  try {
    return await Promise.race([promise, timer]);
  } finally {
    stop.abort();
  }
}

/** Writes every byte, however many calls it takes. */
export async function writeAll(
  target: { write(bytes: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await target.write(bytes.subarray(offset));
  }
}

/** Closes, ignoring an already closed resource. */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

/** `host:port` of a TCP address, for log lines. */
export function formatAddress(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

/** `value` itself if an Error, else an Error carrying its text. */
export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/** JSON-quotes `value`, cut at 200 characters. */
export function quote(value: string): string {
  return JSON.stringify(value.length > 200 ? value.slice(0, 200) + "…" : value);
}
