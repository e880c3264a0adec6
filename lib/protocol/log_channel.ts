// The Cuirass log channel (cuirass.md §1.9): workers stream gzip-compressed
// build logs over plain TCP; the server stores the bytes as they arrive.

import zlib from "node:zlib";
import { isSym, sym } from "../sexp/datum.ts";
import { readSexp } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";
import {
  isDerivationPath,
  parseStorePath,
  StorePathError,
} from "../guix/store_path.ts";
import { type Clock, systemClock } from "../clock.ts";
import type { Datum } from "../sexp/datum.ts";
import type { Logger } from "../log.ts";

/** Settings of the server end of the log channel. */
export interface LogReceiverOptions {
  /** Address to listen on; default "0.0.0.0", as Cuirass does. */
  hostname?: string;
  /** TCP port; 0 picks a free one (see `LogReceiver.port`). */
  port: number;
  /** Directory receiving `<hash>.log.gz` files; created when missing. */
  cacheDir: string;
  /** Store directory derivation names must belong to, e.g. /gnu/store. */
  storeDir: string;
  logger: Logger;
  /** Most compressed bytes stored per log; default 256 MiB. */
  maxLogBytes?: number;
  /** Time a client has to send its header; default 30 s. */
  headerTimeoutMs?: number;
  /**
   * Longest silence tolerated on a connection; default 2 h. Workers send
   * nothing while a build is silent, so keep it above the longest
   * max-silent-time of the builds.
   */
  idleTimeoutMs?: number;
  /** Connections served at once; more are refused. Default 256. */
  maxConnections?: number;
  /** Called with each stored (compressed) chunk, for live views. */
  onChunk?: (drv: string, chunk: Uint8Array) => void;
  /** Called once a log connection has ended, with the bytes stored. */
  onComplete?: (drv: string, bytes: number) => void;
  clock?: Clock;
}

/** A running log receiver. */
export interface LogReceiver {
  /** The port actually listened on. */
  readonly port: number;
  /** Stops listening, drops open connections and waits for their handlers. */
  close(): Promise<void>;
}

/** Settings of the worker end of the log channel. */
export interface LogUploadOptions {
  hostname: string;
  port: number;
  /** The derivation whose build log this is. */
  drv: string;
  logger: Logger;
  /** Time allowed for connecting, the handshake and the final close; default 10 s. */
  connectTimeoutMs?: number;
  /** Longest time written bytes may wait before being sent; default 1 s. */
  flushIntervalMs?: number;
  /**
   * Longest time one send may block (a stuck server) before the upload gives
   * up and drops the rest, so that the build is never held up; default 60 s.
   */
  sendTimeoutMs?: number;
  clock?: Clock;
}

/** A build log being sent; it never fails the build it belongs to. */
export interface LogUpload {
  /** Queues raw log bytes; resolves when the queue has room again. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the gzip stream; resolves when the server has read everything. */
  close(): Promise<void>;
  /** Why bytes are being dropped, or undefined while the upload works. */
  readonly error: Error | undefined;
}

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

const PROTOCOL_VERSION = 0;
const MAX_HEADER_BYTES = 4096;
const READ_BUFFER_BYTES = 64 * 1024;
const FLUSH_THRESHOLD_BYTES = 64 * 1024;
const DEFAULT_MAX_LOG_BYTES = 256 * 1024 * 1024;
const encoder = new TextEncoder();

/**
 * Starts listening for workers' log uploads.
 * @throws {Deno.errors.AddrInUse} and other errors of `Deno.listen`.
 */
export async function startLogReceiver(
  options: LogReceiverOptions,
): Promise<LogReceiver> {
  const {
    hostname = "0.0.0.0",
    port,
    cacheDir,
    storeDir,
    logger,
    maxLogBytes = DEFAULT_MAX_LOG_BYTES,
    headerTimeoutMs = 30_000,
    idleTimeoutMs = 2 * 60 * 60 * 1000,
    maxConnections = 256,
    onChunk,
    onComplete,
    clock = systemClock,
  } = options;
  await Deno.mkdir(cacheDir, { recursive: true });
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  const connections = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  // Latest connection per log file: an older upload of the same derivation
  // (a restarted build) must not keep writing into the truncated file.
  const writers = new Map<string, { superseded: boolean }>();
  const settings = {
    cacheDir,
    storeDir,
    maxLogBytes,
    headerTimeoutMs,
    idleTimeoutMs,
    onChunk,
    onComplete,
    clock,
    writers,
  };
  const accepting = acceptLoop();
  let closing: Promise<void> | undefined;

  async function acceptLoop() {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return;
        logger.warn("log accept failed", { error });
        continue;
      }
      const peer = formatAddress(conn.remoteAddr);
      if (connections.size >= maxConnections) {
        logger.warn("log connection refused", { peer, reason: "too many" });
        closeQuietly(conn);
        continue;
      }
      connections.add(conn);
      const handler = serveLogConnection(
        conn,
        logger.with({ peer }),
        settings,
      ).catch(function report(error) {
        logger.error("log connection crashed", { peer, error });
      }).finally(function forget() {
        connections.delete(conn);
        handlers.delete(handler);
        closeQuietly(conn);
      });
      handlers.add(handler);
    }
  }

  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      closing ??= (async function shutDown() {
        closeQuietly(listener);
        await accepting;
        for (const conn of connections) closeQuietly(conn);
        await Promise.allSettled([...handlers]);
      })();
      return closing;
    },
  };
}

/**
 * The file a derivation's log is stored in: `<cacheDir>/<hash>.log.gz`.
 * @throws {StorePathError} unless `drv` is a `.drv` item of `storeDir`.
 */
export function logFileName(
  cacheDir: string,
  storeDir: string,
  drv: string,
): string {
  const { hash } = parseStorePath(drv, storeDir);
  if (!isDerivationPath(drv, storeDir)) {
    throw new StorePathError(
      `Cannot use ${quote(drv)} as a log name: not a derivation`,
      drv,
    );
  }
  return `${cacheDir.replace(/\/+$/, "")}/${hash}.log.gz`;
}

/**
 * Connects to a log receiver and returns the stream to write a build log
 * into. Network failures never reject: they are logged, and the upload
 * then drops its data and reports the failure in `error`.
 */
export async function openLogUpload(
  options: LogUploadOptions,
): Promise<LogUpload> {
  const {
    hostname,
    port,
    drv,
    logger,
    connectTimeoutMs = 10_000,
    flushIntervalMs = 1000,
    sendTimeoutMs = 60_000,
    clock = systemClock,
  } = options;
  const log = logger.with({ drv });
  let conn: Deno.Conn | undefined;
  try {
    conn = await withTimeout(
      Deno.connect({ hostname, port, transport: "tcp" }),
      connectTimeoutMs,
      clock,
      `Cannot connect to log server ${quote(`${hostname}:${port}`)}`,
      function closeLateConnection(late) {
        closeQuietly(late);
      },
    );
    const deadline = clock.now() + connectTimeoutMs;
    const { datum } = await readDatum(conn, deadline, clock);
    checkServerGreeting(datum);
    const header = [
      sym("log"),
      [sym("version"), PROTOCOL_VERSION],
      [sym("derivation"), drv],
    ];
    await writeAll(conn, encoder.encode(writeSexp(header)));
  } catch (error) {
    if (conn) closeQuietly(conn);
    log.warn("log upload failed", { error });
    return droppingUpload(asError(error));
  }
  return gzipUpload(conn, log, {
    closeTimeoutMs: connectTimeoutMs,
    flushIntervalMs,
    sendTimeoutMs,
    clock,
  });
}

type ReceiverSettings = {
  cacheDir: string;
  storeDir: string;
  maxLogBytes: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  onChunk?: (drv: string, chunk: Uint8Array) => void;
  onComplete?: (drv: string, bytes: number) => void;
  clock: Clock;
  writers: Map<string, { superseded: boolean }>;
};

async function serveLogConnection(
  conn: Deno.Conn,
  log: Logger,
  settings: ReceiverSettings,
): Promise<void> {
  const { clock, writers } = settings;
  let drv: string;
  let rest: Uint8Array;
  try {
    await writeAll(
      conn,
      encoder.encode(
        writeSexp([sym("log-server"), [sym("version"), PROTOCOL_VERSION]]),
      ),
    );
    const deadline = clock.now() + settings.headerTimeoutMs;
    const header = await readDatum(conn, deadline, clock);
    drv = checkLogHeader(header.datum);
    rest = header.rest;
  } catch (error) {
    log.warn("log header rejected", { error });
    return;
  }
  let path: string;
  try {
    path = logFileName(settings.cacheDir, settings.storeDir, drv);
  } catch (error) {
    log.warn("log header rejected", { error });
    return;
  }
  const previous = writers.get(path);
  if (previous) previous.superseded = true;
  const state = { superseded: false };
  writers.set(path, state);
  let stored = 0;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(path, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o644,
    });
    log.info("log receiving", { drv });
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let chunk: Uint8Array | null = rest;
    let capped = false;
    while (chunk !== null) {
      if (state.superseded) break;
      const room = settings.maxLogBytes - stored;
      const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
      if (kept.length > 0) {
        await writeAll(file, kept);
        stored += kept.length;
        notify(settings.onChunk, drv, kept.slice(), log);
      }
      if (kept.length < chunk.length && !capped) {
        capped = true;
        log.warn("log size limit reached", {
          drv,
          maxLogBytes: settings.maxLogBytes,
        });
      }
      chunk = await readSome(conn, buffer, settings.idleTimeoutMs, clock);
    }
    // Keep reading so the worker's writes do not fail; the bytes are dropped.
    while (
      await readSome(conn, buffer, settings.idleTimeoutMs, clock) !== null
    );
  } catch (error) {
    log.warn("log transfer interrupted", { drv, bytes: stored, error });
  } finally {
    file?.close();
    if (writers.get(path) === state) writers.delete(path);
  }
  if (state.superseded) {
    log.info("log superseded", { drv, bytes: stored });
    return;
  }
  log.info("log received", { drv, bytes: stored });
  notify(settings.onComplete, drv, stored, log);
}

function checkLogHeader(datum: Datum): string {
  if (
    Array.isArray(datum) && datum.length === 3 && isSym(datum[0], "log") &&
    isField(datum[1], "version") && datum[1][1] === PROTOCOL_VERSION &&
    isField(datum[2], "derivation") && typeof datum[2][1] === "string"
  ) {
    return datum[2][1];
  }
  throw new LogProtocolError(
    `Cannot read log header: expected (log (version 0) (derivation "...")), found ${
      quote(writeSexp(datum))
    }`,
  );
}

function checkServerGreeting(datum: Datum): void {
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
 * Reads one list datum from the start of the connection. Bytes after its
 * closing parenthesis are the start of the payload and are returned as well.
 */
async function readDatum(
  conn: Deno.Conn,
  deadline: number,
  clock: Clock,
): Promise<{ datum: Datum; rest: Uint8Array }> {
  const buffer = new Uint8Array(MAX_HEADER_BYTES);
  const scan = { depth: 0, inString: false, escaped: false, started: false };
  let length = 0;
  while (length < buffer.length) {
    const remaining = deadline - clock.now();
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
      const datum = readSexp(buffer.subarray(0, end));
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

/** One read with a time limit; null at end of stream. */
async function readSome(
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

/** Settles like `promise`, or rejects with LogTimeoutError after `ms`. */
async function withTimeout<T>(
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
      throw new LogTimeoutError(`${action}: no answer in ${ms} ms`, ms);
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

async function writeAll(
  target: { write(bytes: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await target.write(bytes.subarray(offset));
  }
}

function notify<T>(
  callback: ((drv: string, value: T) => void) | undefined,
  drv: string,
  value: T,
  log: Logger,
): void {
  if (!callback) return;
  try {
    callback(drv, value);
  } catch (error) {
    log.error("log callback failed", { drv, error });
  }
}

/**
 * The upload proper: raw bytes go through one gzip stream. Each flush is a
 * zlib sync flush, so everything written so far can be decoded from the
 * bytes sent, while the finished file stays a single ordinary gzip member.
 */
function gzipUpload(
  conn: Deno.Conn,
  log: Logger,
  timing: {
    closeTimeoutMs: number;
    flushIntervalMs: number;
    sendTimeoutMs: number;
    clock: Clock;
  },
): LogUpload {
  const { closeTimeoutMs, flushIntervalMs, sendTimeoutMs, clock } = timing;
  const gzip = zlib.createGzip();
  const ticker = new AbortController();
  let error: Error | undefined;
  let sending: Promise<void> = Promise.resolve();
  let unflushed = 0;
  let closed = false;

  gzip.on("data", function send(chunk: Uint8Array) {
    sending = sending.then(async function sendChunk() {
      if (error) return;
      try {
        await withTimeout(
          writeAll(conn, chunk),
          sendTimeoutMs,
          clock,
          "Cannot send log bytes",
        );
      } catch (cause) {
        fail(cause);
      }
    });
  });
  gzip.on("error", fail);
  tick();

  function fail(cause: unknown) {
    if (error) return;
    error = asError(cause);
    log.warn("log upload failed", { error });
    ticker.abort();
    closeQuietly(conn);
  }

  async function tick() {
    while (!closed && !error) {
      try {
        await clock.sleep(flushIntervalMs, ticker.signal);
      } catch {
        return;
      }
      if (unflushed > 0 && !closed) await flush();
    }
  }

  async function flush() {
    unflushed = 0;
    await new Promise<void>((resolve) =>
      gzip.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve())
    );
    await sending;
  }

  return {
    get error() {
      return error;
    },
    async write(chunk) {
      if (closed) {
        throw new TypeError("Cannot write log: upload is closed");
      }
      if (error || chunk.length === 0) return;
      gzip.write(chunk.slice());
      unflushed += chunk.length;
      if (unflushed >= FLUSH_THRESHOLD_BYTES) await flush();
    },
    async close() {
      if (closed) return;
      closed = true;
      ticker.abort();
      if (!error) {
        await new Promise<void>((resolve) => gzip.end(() => resolve()));
        await new Promise<void>((resolve) => {
          if (gzip.readableEnded) resolve();
          else gzip.once("end", () => resolve());
        });
      }
      await sending;
      if (error) return;
      try {
        await conn.closeWrite();
        // The server closes once it has read everything: wait for that.
        await readSome(conn, new Uint8Array(256), closeTimeoutMs, clock);
      } catch (cause) {
        fail(cause);
      } finally {
        closeQuietly(conn);
      }
    },
  };
}

function droppingUpload(error: Error): LogUpload {
  return {
    error,
    write: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}

function formatAddress(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? `${addr.hostname}:${addr.port}`
    : addr.transport;
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // Already closed.
  }
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

function quote(value: string): string {
  return JSON.stringify(value.length > 200 ? value.slice(0, 200) + "…" : value);
}
