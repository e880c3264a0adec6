// The server end of the Cuirass log channel (cuirass.md §1.9). Unlike
// Cuirass, which copies the worker's gzip bytes blindly, the receiver inflates
// them as they come (bounded), counts the real log size, and writes its own
// gzip file: a size cap ends the stored log with a visible marker, a gzip
// bomb is cut off, and the stored file is always a valid gzip stream. Unlike
// Cuirass too, an upload with no log bytes leaves a build's earlier log in
// place (log_file.ts).

import zlib from "node:zlib";
import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { removeLeftUploads, storedLogSize, UploadFile } from "./log_file.ts";
import {
  checkLogHeader,
  closeQuietly,
  formatAddress,
  logFileName,
  readDatum,
  readSome,
  serverGreeting,
  writeAll,
} from "./log_header.ts";

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
  /**
   * Most log bytes (uncompressed) stored per build; the stored log then ends
   * with {@linkcode truncationMarker}. Default 256 MiB.
   */
  maxLogBytes?: number;
  /**
   * Most compressed bytes read from one connection; past it the connection
   * is closed (the worker drops the rest of its log). Default 4 x maxLogBytes.
   */
  maxCompressedBytes?: number;
  /**
   * Time a client has to send its header; default 10 s. A worker sends it
   * as soon as it has read the greeting.
   */
  headerTimeoutMs?: number;
  /**
   * Longest silence tolerated on a connection; default 2 h. Workers send
   * nothing while a build is silent, so keep it above the longest
   * max-silent-time of the builds.
   */
  idleTimeoutMs?: number;
  /** Connections served at once; more are refused. Default 256. */
  maxConnections?: number;
  /**
   * Connections one address may hold before each has sent a valid header;
   * more from that address are refused, so that one peer cannot take every
   * place. A worker opens one upload per build it runs; default 32.
   */
  maxPendingPerAddress?: number;
  /** Called with each stored (compressed) chunk, for live views. */
  onChunk?: (drv: string, chunk: Uint8Array) => void;
  /** Called once a log connection has ended, with the log bytes stored. */
  onComplete?: (drv: string, bytes: number) => void;
  /**
   * Decides whether `peerAddress` may send the log of `drv` (the server:
   * only for a build running on a worker at that address). Default: any
   * well-formed derivation, as Cuirass.
   */
  accept?: (drv: string, peerAddress: string) => Promise<boolean>;
  clock?: Clock;
}

/** A running log receiver. */
export interface LogReceiver {
  /** The port actually listened on. */
  readonly port: number;
  /** Stops listening, drops open connections and waits for their handlers. */
  close(): Promise<void>;
}

const READ_BUFFER_BYTES = 64 * 1024;
// A deflate stream expands at most about 1032:1, so one slice of input
// inflates to at most a few MiB: that bounds the memory of a gzip bomb.
const INFLATE_SLICE_BYTES = 4 * 1024;
const MAX_PENDING_FILE_BYTES = 1024 * 1024;
const DEFAULT_MAX_LOG_BYTES = 256 * 1024 * 1024;
const encoder = new TextEncoder();

/** The line appended to a log cut at `maxLogBytes`. */
export function truncationMarker(maxLogBytes: number): string {
  return `\n[lorica: log truncated: it exceeded the limit of ${maxLogBytes} bytes]\n`;
}

/** The line appended when the worker's bytes stop being valid gzip. */
export function corruptionMarker(offset: number): string {
  return `\n[lorica: log cut: the upload was not valid gzip after ${offset} log bytes]\n`;
}

/** The line appended when the upload stopped in the middle of the stream. */
export function endedEarlyMarker(): string {
  return "\n[lorica: log ended early: the upload stopped mid-stream]\n";
}

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
    headerTimeoutMs = 10_000,
    idleTimeoutMs = 2 * 60 * 60 * 1000,
    maxConnections = 256,
    maxPendingPerAddress = 32,
    onChunk,
    onComplete,
    accept,
    clock = systemClock,
  } = options;
  const maxCompressedBytes = options.maxCompressedBytes ?? 4 * maxLogBytes;
  await Deno.mkdir(cacheDir, { recursive: true });
  const left = await removeLeftUploads(cacheDir, idleTimeoutMs, clock.now());
  if (left > 0) logger.info("log uploads left over removed", { count: left });
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  const connections = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  // Per remote address, its connections that have not sent a valid header.
  const pending = new Map<string, number>();
  // Latest connection per log file: an older upload of the same derivation
  // (a restarted build) stops once a newer one comes.
  const writers = new Map<string, { superseded: boolean }>();
  const settings: ReceiverSettings = {
    cacheDir,
    storeDir,
    maxLogBytes,
    maxCompressedBytes,
    headerTimeoutMs,
    idleTimeoutMs,
    onChunk,
    onComplete,
    accept,
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
        await clock.sleep(100).catch(() => {});
        continue;
      }
      const peer = formatAddress(conn.remoteAddr);
      const address = (conn.remoteAddr as Deno.NetAddr).hostname;
      const waiting = pending.get(address) ?? 0;
      if (waiting >= maxPendingPerAddress) {
        logger.warn("log connection refused", {
          peer,
          reason: "too many from this address without a header",
          limit: maxPendingPerAddress,
        });
        closeQuietly(conn);
        continue;
      }
      if (connections.size >= maxConnections) {
        logger.warn("log connection refused", {
          peer,
          reason: "too many",
          limit: maxConnections,
        });
        closeQuietly(conn);
        continue;
      }
      connections.add(conn);
      const headerDone = countPending(pending, address);
      const handler = serveLogConnection(
        conn,
        logger.with({ peer }),
        settings,
        headerDone,
      ).catch(function report(error) {
        logger.error("log connection crashed", { peer, error });
      }).finally(function forget() {
        headerDone();
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

interface ReceiverSettings {
  cacheDir: string;
  storeDir: string;
  maxLogBytes: number;
  maxCompressedBytes: number;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  onChunk?: (drv: string, chunk: Uint8Array) => void;
  onComplete?: (drv: string, bytes: number) => void;
  accept?: (drv: string, peerAddress: string) => Promise<boolean>;
  clock: Clock;
  writers: Map<string, { superseded: boolean }>;
}

/**
 * Serves one upload; `headerDone` is called once the client has sent a
 * valid header (it no longer counts against its address's pending ones).
 */
async function serveLogConnection(
  conn: Deno.Conn,
  log: Logger,
  settings: ReceiverSettings,
  headerDone: () => void,
): Promise<void> {
  const { clock, writers } = settings;
  let drv: string;
  let rest: Uint8Array;
  let path: string;
  try {
    await writeAll(conn, serverGreeting());
    const deadline = clock.now() + settings.headerTimeoutMs;
    const header = await readDatum(conn, deadline, clock);
    drv = checkLogHeader(header.datum);
    rest = header.rest;
    path = logFileName(settings.cacheDir, settings.storeDir, drv);
  } catch (error) {
    log.warn("log header rejected", { error });
    return;
  }
  headerDone();
  // Only the worker running the build may write its log: anyone else could
  // replace a real log or fill the disk with logs of made-up builds.
  if (
    settings.accept &&
    !await settings.accept(drv, (conn.remoteAddr as Deno.NetAddr).hostname)
  ) {
    log.warn("log refused", { drv, reason: "no such build runs there" });
    return;
  }
  const previous = writers.get(path);
  if (previous) previous.superseded = true;
  const state = { superseded: false };
  writers.set(path, state);
  let target: UploadFile | undefined;
  let sink: LogSink | undefined;
  let received = rest.length;
  try {
    target = await UploadFile.create(path);
    sink = new LogSink(target.file, drv, log, settings);
    log.info("log receiving", { drv });
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let chunk: Uint8Array | null = rest;
    while (chunk !== null && !state.superseded) {
      if (!sink.full) await sink.push(chunk);
      // The first log bytes make this run's log the build's log (and the
      // live one); until then an earlier run's log stays readable.
      if (sink.stored > 0 && !state.superseded) await target.publish();
      if (received > settings.maxCompressedBytes) {
        log.warn("log connection closed", {
          drv,
          received,
          reason: "more compressed bytes than maxCompressedBytes",
        });
        break;
      }
      chunk = await readSome(conn, buffer, settings.idleTimeoutMs, clock);
      received += chunk?.length ?? 0;
    }
  } catch (error) {
    log.warn("log transfer interrupted", {
      drv,
      bytes: sink?.stored ?? 0,
      error,
    });
  } finally {
    await sink?.finish().catch((error) =>
      log.warn("log file not finished", { drv, error })
    );
    if (sink === undefined) target?.file.close();
  }
  try {
    await settle(target, {
      drv,
      path,
      log,
      settings,
      state,
      stored: sink?.stored ?? 0,
      received,
    });
  } finally {
    if (writers.get(path) === state) writers.delete(path);
  }
}

/**
 * Ends an upload: its file becomes the build's log, or is thrown away when
 * it was superseded or brought no log bytes while an earlier log exists.
 */
async function settle(
  target: UploadFile | undefined,
  upload: {
    drv: string;
    path: string;
    log: Logger;
    settings: ReceiverSettings;
    state: { superseded: boolean };
    stored: number;
    received: number;
  },
): Promise<void> {
  const { drv, path, log, settings, state, stored, received } = upload;
  if (target === undefined) {
    // No file could be made (logged as an interrupted transfer).
    notify(settings.onComplete, drv, 0, log);
    return;
  }
  if (state.superseded) {
    await target.discard();
    log.info("log superseded", { drv, bytes: stored });
    return;
  }
  if (!target.published && stored === 0) {
    const earlier = await storedLogSize(path);
    if (earlier > 0) {
      await target.discard();
      log.warn("log upload dropped", {
        drv,
        compressed: received,
        reason: "no log bytes; the earlier log is kept",
        kept: earlier,
      });
      notify(settings.onComplete, drv, 0, log);
      return;
    }
  }
  try {
    await target.publish();
  } catch (error) {
    await target.discard();
    log.warn("log file not finished", { drv, error });
    return;
  }
  log.info("log received", { drv, bytes: stored, compressed: received });
  notify(settings.onComplete, drv, stored, log);
}

/**
 * Inflates the worker's gzip stream slice by slice, keeps at most
 * `maxLogBytes` of log, and writes it to `file` through a new gzip stream,
 * sync-flushed after each network read so that the partial file can be read.
 */
class LogSink {
  /** Log bytes kept so far. */
  stored = 0;
  /** True once nothing more will be kept (cap reached or bad data). */
  full = false;
  readonly #file: Deno.FsFile;
  readonly #drv: string;
  readonly #log: Logger;
  readonly #settings: ReceiverSettings;
  readonly #inflate = zlib.createGunzip();
  readonly #deflate = zlib.createGzip();
  #capped = false;
  #ending = false;
  #endedEarly = false;
  #corrupt: Error | undefined;
  #writing: Promise<void> = Promise.resolve();
  #pendingFileBytes = 0;
  #fileError: Error | undefined;

  constructor(
    file: Deno.FsFile,
    drv: string,
    log: Logger,
    settings: ReceiverSettings,
  ) {
    this.#file = file;
    this.#drv = drv;
    this.#log = log;
    this.#settings = settings;
    this.#inflate.on("data", (chunk: Uint8Array) => this.#keep(chunk));
    this.#inflate.on("error", (error: Error) => {
      if (this.#capped) return;
      // At the end, an error means the stream stopped short (a killed
      // worker); before, that the bytes are not gzip.
      if (this.#ending) this.#endedEarly = true;
      else this.#corrupt ??= error;
      this.full = true;
    });
    this.#deflate.on("data", (chunk: Uint8Array) => this.#store(chunk));
    this.#deflate.on("error", (error: Error) => {
      this.#fileError ??= error;
      this.full = true;
    });
  }

  /** Feeds compressed bytes; resolves when they are processed. */
  async push(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length && !this.full;) {
      const slice = chunk.subarray(at, at + INFLATE_SLICE_BYTES);
      at += slice.length;
      await writeStream(this.#inflate, slice.slice());
      if (this.#deflate.writableLength > MAX_PENDING_FILE_BYTES) {
        await once(this.#deflate, "drain");
      }
      if (this.#pendingFileBytes > MAX_PENDING_FILE_BYTES) {
        await this.#writing;
      }
    }
    // What arrived is readable in the file before the next read waits: the
    // live log. A sync flush costs a few bytes per network read.
    if (!this.#deflate.writableEnded) {
      await new Promise<void>((resolve) =>
        this.#deflate.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve())
      );
    }
    if (this.#fileError) throw this.#fileError;
  }

  /** Ends the stored gzip stream (with a marker if cut) and closes the file. */
  async finish(): Promise<void> {
    if (!this.full) {
      // A worker killed mid-build leaves a truncated stream: what was
      // decodable is kept, and a marker says the rest is missing.
      this.#ending = true;
      await endStream(this.#inflate);
    }
    this.#inflate.destroy();
    if (this.#corrupt && !this.#capped) {
      this.#log.warn("log data invalid", {
        drv: this.#drv,
        bytes: this.stored,
        error: this.#corrupt,
      });
      this.#deflate.write(encoder.encode(corruptionMarker(this.stored)));
    }
    if (this.#endedEarly && !this.#corrupt) {
      this.#log.info("log ended early", { drv: this.#drv, bytes: this.stored });
      this.#deflate.write(encoder.encode(endedEarlyMarker()));
    }
    if (this.#capped) {
      this.#deflate.write(
        encoder.encode(truncationMarker(this.#settings.maxLogBytes)),
      );
    }
    await endStream(this.#deflate);
    await this.#writing;
    this.#file.close();
    if (this.#fileError) throw this.#fileError;
  }

  #keep(chunk: Uint8Array) {
    if (this.full) return;
    const room = this.#settings.maxLogBytes - this.stored;
    const kept = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (kept.length > 0) {
      this.stored += kept.length;
      this.#deflate.write(kept);
    }
    if (kept.length < chunk.length) {
      this.#capped = true;
      this.full = true;
      this.#log.warn("log size limit reached", {
        drv: this.#drv,
        maxLogBytes: this.#settings.maxLogBytes,
      });
    }
  }

  #store(chunk: Uint8Array) {
    this.#pendingFileBytes += chunk.length;
    this.#writing = this.#writing.then(async () => {
      if (this.#fileError) return;
      try {
        await writeAll(this.#file, chunk);
        notify(this.#settings.onChunk, this.#drv, chunk, this.#log);
      } catch (error) {
        this.#fileError = error as Error;
        this.full = true;
      } finally {
        this.#pendingFileBytes -= chunk.length;
      }
    });
  }
}

/**
 * Counts one more pending connection of `address`; the returned function
 * (idempotent) counts it out.
 */
function countPending(
  pending: Map<string, number>,
  address: string,
): () => void {
  pending.set(address, (pending.get(address) ?? 0) + 1);
  let counted = true;
  return function headerDone() {
    if (!counted) return;
    counted = false;
    const left = pending.get(address)! - 1;
    if (left > 0) pending.set(address, left);
    else pending.delete(address);
  };
}

/** Writes to a node stream, resolving once it is processed (or failed). */
function writeStream(
  stream: zlib.Gunzip,
  chunk: Uint8Array,
): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.writableEnded) return resolve();
    stream.write(chunk, () => resolve());
  });
}

/** Ends a node zlib stream and waits until its output is all out. */
function endStream(stream: zlib.Gunzip | zlib.Gzip): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.readableEnded) return resolve();
    stream.once("end", () => resolve());
    stream.once("error", () => resolve());
    stream.once("close", () => resolve());
    if (!stream.writableEnded) stream.end();
  });
}

function once(stream: zlib.Gzip, event: string): Promise<void> {
  return new Promise((resolve) => stream.once(event, () => resolve()));
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
