// One upload's log on its way to disk: the worker's gzip stream inflated
// slice by slice (bounded), cut at a size cap, and written out through a
// gzip stream of our own, with a marker line when it was cut short.

import zlib from "node:zlib";
import { GzipMemberDecoder } from "../gunzip_members.ts";
import type { Logger } from "../log.ts";
import { writeAll } from "./log_header.ts";

/** What a {@linkcode LogSink} needs of the receiver's settings. */
export interface LogSinkSettings {
  /** Most log bytes (uncompressed) kept; the marker follows. */
  maxLogBytes: number;
  /** Called with each stored (compressed) chunk, for live views. */
  onChunk?: (drv: string, chunk: Uint8Array) => void;
}

// A deflate stream expands at most about 1032:1, so one slice of input
// inflates to at most a few MiB: that bounds the memory of a gzip bomb.
const INFLATE_SLICE_BYTES = 4 * 1024;
const MAX_PENDING_FILE_BYTES = 1024 * 1024;
const encoder = new TextEncoder();

/** The line appended to a log cut at `maxLogBytes`. */
export function truncationMarker(maxLogBytes: number): string {
  return `\n[lorica: log truncated: it exceeded the limit of ${maxLogBytes} bytes]\n`;
}

/** The line appended when the worker's bytes stop being valid gzip. */
export function corruptionMarker(offset: number): string {
  return `\n[lorica: log cut: the upload was not valid gzip after ${offset} log bytes]\n`;
}

/**
 * The line appended when the upload stopped in the middle of the stream,
 * saying why (`reason`, e.g. "connection lost"): whoever reads the log
 * knows the rest of it is missing.
 */
export function endedEarlyMarker(reason: string): string {
  return `\n[lorica: log cut: ${reason}; the rest of the build log is missing]\n`;
}

/**
 * Inflates the worker's gzip stream slice by slice, keeps at most
 * `maxLogBytes` of log, and writes it to `file` through a new gzip stream,
 * sync-flushed after each network read so that the partial file can be read.
 * Garbage after the last gzip member cuts the log after all the text before
 * it.
 */
export class LogSink {
  /** Log bytes kept so far. */
  stored = 0;
  /**
   * Log bytes inflated so far, kept or not: the work the upload cost, which
   * stops soon after the cap (a gzip bomb is not inflated whole).
   */
  inflated = 0;
  /** True once nothing more will be kept (cap reached or bad data). */
  full = false;
  readonly #file: Deno.FsFile;
  readonly #drv: string;
  readonly #log: Logger;
  readonly #settings: LogSinkSettings;
  readonly #gunzip = new GzipMemberDecoder();
  readonly #deflate = zlib.createGzip();
  #capped = false;
  #endedEarly = false;
  #corrupt: Error | undefined;
  #writing: Promise<void> = Promise.resolve();
  #pendingFileBytes = 0;
  #fileError: Error | undefined;

  constructor(
    file: Deno.FsFile,
    drv: string,
    log: Logger,
    settings: LogSinkSettings,
  ) {
    this.#file = file;
    this.#drv = drv;
    this.#log = log;
    this.#settings = settings;
    this.#deflate.on("data", (chunk: Uint8Array) => this.#store(chunk));
    this.#deflate.on("error", (error: Error) => {
      this.#fileError ??= error;
      this.full = true;
    });
  }

  /**
   * Why the log file could not be written (a full disk, say), once known;
   * nothing more is kept after it.
   */
  get writeError(): Error | undefined {
    return this.#fileError;
  }

  /** Feeds compressed bytes; resolves when they are processed. */
  async push(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.length && !this.full;) {
      const slice = chunk.subarray(at, at + INFLATE_SLICE_BYTES);
      at += slice.length;
      for (const piece of await this.#gunzip.write(slice)) {
        this.inflated += piece.length;
        this.#keep(piece);
      }
      if (this.#gunzip.damage !== null && !this.#capped) {
        this.#corrupt ??= this.#gunzip.damage;
        this.full = true;
      }
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

  /**
   * Ends the stored gzip stream and closes the file; a stream cut short is
   * ended with a marker naming `cutReason`, why the upload stopped.
   */
  async finish(cutReason: string): Promise<void> {
    if (!this.full) {
      // A worker killed mid-build leaves a truncated stream: what was
      // decodable is kept, and a marker says the rest is missing.
      this.#gunzip.end();
      this.#endedEarly = this.#gunzip.damage !== null;
    }
    this.#gunzip.close();
    if (this.#corrupt && !this.#capped) {
      this.#log.warn("log data invalid", {
        drv: this.#drv,
        bytes: this.stored,
        error: this.#corrupt,
      });
      this.#deflate.write(encoder.encode(corruptionMarker(this.stored)));
    }
    if (this.#endedEarly && !this.#corrupt) {
      this.#log.info("log ended early", {
        drv: this.#drv,
        bytes: this.stored,
        reason: cutReason,
      });
      this.#deflate.write(encoder.encode(endedEarlyMarker(cutReason)));
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

/** Ends a node zlib stream and waits until its output is all out. */
function endStream(stream: zlib.Gzip): Promise<void> {
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

/** Calls `callback`, logging (not throwing) what it throws. */
export function notify<T>(
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
