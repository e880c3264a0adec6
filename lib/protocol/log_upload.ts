// The worker end of the Cuirass log channel (cuirass.md §1.9): the build
// output goes through one gzip stream to the server's log port.

import zlib from "node:zlib";
import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  asError,
  checkServerGreeting,
  closeQuietly,
  isLogStored,
  logHeader,
  quote,
  readDatum,
  withTimeout,
  writeAll,
} from "./log_header.ts";

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
  /**
   * Ask the server to say when it stored the log (a Lorica server that
   * announced "log-ack"); its silence then counts as a failed upload.
   */
  acknowledge?: boolean;
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

const FLUSH_THRESHOLD_BYTES = 64 * 1024;

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
    acknowledge = false,
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
    const deadline = clock.monotonic() + connectTimeoutMs;
    const { datum } = await readDatum(conn, deadline, clock);
    checkServerGreeting(datum);
    await writeAll(conn, logHeader(drv, { acknowledge }));
  } catch (error) {
    if (conn) closeQuietly(conn);
    log.warn("log upload failed", { error });
    return droppingUpload(asError(error));
  }
  return gzipUpload(conn, log, {
    acknowledge,
    closeTimeoutMs: connectTimeoutMs,
    flushIntervalMs,
    sendTimeoutMs,
    clock,
  });
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
    acknowledge: boolean;
    closeTimeoutMs: number;
    flushIntervalMs: number;
    sendTimeoutMs: number;
    clock: Clock;
  },
): LogUpload {
  const { acknowledge, closeTimeoutMs, flushIntervalMs, sendTimeoutMs, clock } =
    timing;
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
  // The server sends nothing (but the acknowledgement asked for, at the
  // end) and keeps the connection open until the worker has ended its
  // stream: a close before that means it went away mid-stream (stopped or
  // restarted), and what follows would be lost.
  let streamEnded = false;
  const serverClosed = readUntilClosed(conn);
  void serverClosed.then(function closedEarly() {
    if (!streamEnded) {
      fail(new Error("the log server closed the connection mid-stream"));
    }
  });

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
        streamEnded = true;
        await conn.closeWrite();
        // The server closes once it has read everything: wait for that.
        const said = await withTimeout(
          serverClosed,
          closeTimeoutMs,
          clock,
          "Cannot read log connection",
        );
        if (acknowledge && !isLogStored(said)) {
          fail(
            new Error("the log server closed without saying it stored the log"),
          );
        }
      } catch (cause) {
        fail(cause);
      } finally {
        closeQuietly(conn);
      }
    },
  };
}

/** Most bytes kept of what the server sends: its acknowledgement at most. */
const SERVER_WORDS_MAX_BYTES = 64;

/**
 * What the server sends until it closes the connection (or it fails),
 * keeping at most {@link SERVER_WORDS_MAX_BYTES}.
 */
async function readUntilClosed(conn: Deno.Conn): Promise<Uint8Array> {
  const kept = new Uint8Array(SERVER_WORDS_MAX_BYTES);
  const buffer = new Uint8Array(256);
  let length = 0;
  try {
    for (
      let n = await conn.read(buffer);
      n !== null;
      n = await conn.read(buffer)
    ) {
      const taken = Math.min(n, kept.length - length);
      kept.set(buffer.subarray(0, taken), length);
      length += taken;
    }
  } catch {
    // A reset or a close of our own: the end of what the server said.
  }
  return kept.subarray(0, length);
}

function droppingUpload(error: Error): LogUpload {
  return {
    error,
    write: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}
