// The server end of the Cuirass log channel (cuirass.md §1.9). Unlike
// Cuirass, which copies the worker's gzip bytes blindly, the receiver inflates
// them as they come (bounded), counts the real log size, and writes its own
// gzip file: a size cap ends the stored log with a visible marker, a gzip
// bomb is cut off, and the stored file is always a valid gzip stream. Unlike
// Cuirass too, an upload with no log bytes leaves a build's earlier log in
// place (log_file.ts).

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { recoverLeftUploads } from "./left_uploads.ts";
import { storedLogSize, UploadFile } from "./log_file.ts";
import { LogSink, notify } from "./log_sink.ts";
import {
  checkLogHeader,
  closeQuietly,
  formatAddress,
  logFileName,
  logStored,
  LogTimeoutError,
  readDatum,
  readSome,
  serverGreeting,
  writeAll,
} from "./log_header.ts";

export {
  corruptionMarker,
  endedEarlyMarker,
  truncationMarker,
} from "./log_sink.ts";

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
const DEFAULT_MAX_LOG_BYTES = 256 * 1024 * 1024;

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
  // Before listening: a log a dead server left cut short is marked before
  // any new upload of its build can replace it.
  const left = await recoverLeftUploads(cacheDir, {
    idleMs: idleTimeoutMs,
    now: clock.now(),
    logger,
  });
  if (left.removed > 0) {
    logger.info("log uploads left over removed", { count: left.removed });
  }
  const listener = Deno.listen({ hostname, port, transport: "tcp" });
  const connections = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  // Per remote address, its connections that have not sent a valid header.
  const pending = new Map<string, number>();
  // Latest connection per log file: an older upload of the same derivation
  // (a restarted build) stops once a newer one comes.
  const writers = new Map<string, Writer>();
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
    stopping: false,
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
        settings.stopping = true;
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
  writers: Map<string, Writer>;
  /** True once the receiver is closing: its uploads are cut by it. */
  stopping: boolean;
}

/** The upload currently writing a log file. */
interface Writer {
  superseded: boolean;
  conn: Deno.Conn;
}

/**
 * Makes the upload on `conn` the writer of `path`, stopping the one before:
 * its connection is closed at once, not left to the idle timeout, so that
 * uploads of one derivation repeated by a peer cannot take every place of
 * the receiver.
 */
function takeOver(
  writers: Map<string, Writer>,
  path: string,
  conn: Deno.Conn,
): Writer {
  const previous = writers.get(path);
  if (previous) {
    previous.superseded = true;
    closeQuietly(previous.conn);
  }
  const state = { superseded: false, conn };
  writers.set(path, state);
  return state;
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
  let acknowledge: boolean;
  let rest: Uint8Array;
  let path: string;
  try {
    await writeAll(conn, serverGreeting());
    const deadline = clock.monotonic() + settings.headerTimeoutMs;
    const header = await readDatum(conn, deadline, clock);
    ({ drv, acknowledge } = checkLogHeader(header.datum));
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
  const state = takeOver(writers, path, conn);
  let target: UploadFile | undefined;
  let sink: LogSink | undefined;
  let received = rest.length;
  // Why the stream would have stopped short: a peer that closes before the
  // gzip stream's end has died or lost its connection.
  let cutReason = "connection lost";
  try {
    target = await UploadFile.create(path);
    sink = new LogSink(target.file, drv, log, settings);
    log.info("log receiving", { drv });
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    let chunk: Uint8Array | null = rest;
    while (chunk !== null && !state.superseded) {
      if (!sink.full) await sink.push(chunk);
      // A log that cannot be written (a full disk) is not read to its end
      // and thrown away: the connection closes mid-stream, which tells the
      // worker to send the whole log again from its own copy.
      if (sink.writeError) throw sink.writeError;
      // The first log bytes make this run's log the build's log (and the
      // live one); until then an earlier run's log stays readable.
      if (sink.stored > 0 && !state.superseded) await target.publish();
      if (received > settings.maxCompressedBytes) {
        log.warn("log connection closed", {
          drv,
          received,
          inflated: sink.inflated,
          reason: "more compressed bytes than maxCompressedBytes",
        });
        cutReason =
          `the upload passed ${settings.maxCompressedBytes} compressed bytes`;
        break;
      }
      chunk = await readSome(conn, buffer, settings.idleTimeoutMs, clock);
      received += chunk?.length ?? 0;
    }
  } catch (error) {
    cutReason = whyCut(error, settings);
    // A superseded upload's connection was closed under its read; a write
    // error is told once the upload is settled.
    if (!state.superseded && !sink?.writeError) {
      log.warn("log transfer interrupted", {
        drv,
        path: target ? undefined : path,
        bytes: sink?.stored ?? 0,
        error,
      });
    }
  } finally {
    await sink?.finish(cutReason).catch((error) => {
      if (error !== sink?.writeError) {
        log.warn("log file not finished", { drv, path, error });
      }
    });
    if (sink === undefined) target?.file.close();
  }
  let stored: boolean;
  try {
    stored = await settle(target, {
      drv,
      acknowledge,
      path,
      log,
      settings,
      state,
      stored: sink?.stored ?? 0,
      received,
      writeError: sink?.writeError,
    });
  } finally {
    if (writers.get(path) === state) writers.delete(path);
  }
  if (acknowledge && stored) {
    // The worker waits for this before it closes; one gone meanwhile
    // has its copy of the log to send again.
    await writeAll(conn, logStored()).catch((error) =>
      log.info("log acknowledgement not sent", { drv, error })
    );
  }
}

/** Why a read of an upload failed, in the words of the log's cut marker. */
function whyCut(error: unknown, settings: ReceiverSettings): string {
  if (settings.stopping) return "the log server stopped";
  if (error instanceof LogTimeoutError) {
    const ms = error.timeoutMs;
    return `no log data for ${ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`}`;
  }
  return "connection lost";
}

/**
 * Ends an upload: its file becomes the build's log, or is thrown away when
 * it was superseded or brought no log bytes while an earlier log exists.
 * Returns whether the build's log is what the worker sent (for an upload
 * of no bytes, whatever log was there), as the worker may be told.
 */
async function settle(
  target: UploadFile | undefined,
  upload: {
    drv: string;
    /** Whether the worker is told the log is stored (see logStored). */
    acknowledge: boolean;
    path: string;
    log: Logger;
    settings: ReceiverSettings;
    state: { superseded: boolean };
    stored: number;
    received: number;
    writeError: Error | undefined;
  },
): Promise<boolean> {
  const { drv, path, log, settings, state, stored, received, writeError } =
    upload;
  const acknowledged = upload.acknowledge;
  if (target === undefined) {
    // No file could be made (logged as an interrupted transfer).
    notify(settings.onComplete, drv, 0, log);
    return false;
  }
  if (state.superseded) {
    await target.release();
    log.info("log superseded", { drv, bytes: stored });
    return false;
  }
  if (writeError) {
    // A file cut short by a write error is not made the build's log: the
    // earlier log, if any, stays, and the worker's copy comes again. One
    // already in place (the live log) stays until that copy replaces it.
    await target.release();
    log.warn("log not stored", {
      drv,
      path,
      bytes: stored,
      published: target.published,
      error: writeError,
    });
    notify(settings.onComplete, drv, target.published ? stored : 0, log);
    return false;
  }
  if (!target.published && stored === 0) {
    const earlier = await storedLogSize(path);
    if (earlier > 0) {
      await target.release();
      log.warn("log upload dropped", {
        drv,
        compressed: received,
        reason: "no log bytes; the earlier log is kept",
        kept: earlier,
      });
      notify(settings.onComplete, drv, 0, log);
      return true;
    }
  }
  try {
    await target.publish();
  } catch (error) {
    log.warn("log file not finished", { drv, path, error });
    return false;
  } finally {
    await target.release();
  }
  log.info("log received", {
    drv,
    bytes: stored,
    compressed: received,
    acknowledged,
  });
  notify(settings.onComplete, drv, stored, log);
  return true;
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
