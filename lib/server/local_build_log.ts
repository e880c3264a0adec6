// The log of a build in local mode, as the server writes it from the
// daemon's output: gzipped, capped in size, and readable while it grows.

import zlib from "node:zlib";
import { UploadFile } from "../protocol/log_file.ts";
import { writeAll } from "../protocol/log_header.ts";

/** Bytes of a build's output kept in its log; the rest is dropped. */
const MAX_LOG_BYTES = 256 << 20;

/**
 * A gzipped build log being written, capped in size. A write error (a full
 * disk) never rejects: the log stops there, and `close()` returns it. The
 * log is an upload file (log_file.ts) put in place at once, for the live
 * view: a server that dies meanwhile leaves it marked as being written, and
 * the next start ends it with a cut marker (left_uploads.ts). Each write is
 * sync-flushed, as the log receiver does (log_sink.ts), so that the file
 * decodes up to the last line printed: without it, the compressor held
 * tens of KiB of log back, the live view and the raw log showed nothing,
 * and a crash lost it all.
 */
export class LogWriter {
  #written = 0;
  #closed = false;
  #error: Error | undefined;
  #writing: Promise<void> = Promise.resolve();
  readonly #gzip = zlib.createGzip();

  private constructor(readonly path: string, readonly target: UploadFile) {
    this.#gzip.on("data", (chunk: Uint8Array) => {
      this.#writing = this.#writing.then(async () => {
        if (this.#error) return;
        try {
          await writeAll(this.target.file, chunk);
        } catch (error) {
          this.#error = error as Error;
        }
      });
    });
    this.#gzip.on("error", (error: Error) => {
      this.#error ??= error;
    });
  }

  static async open(path: string): Promise<LogWriter> {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), {
      recursive: true,
    });
    const target = await UploadFile.create(path);
    try {
      await target.publish();
    } catch (error) {
      target.file.close();
      await target.release();
      throw error;
    }
    return new LogWriter(path, target);
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.#closed || this.#error || this.#written >= MAX_LOG_BYTES) return;
    const part = bytes.subarray(0, MAX_LOG_BYTES - this.#written);
    this.#written += part.length;
    await new Promise<void>((resolve) => {
      this.#gzip.write(part.slice());
      this.#gzip.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve());
    });
    await this.#writing;
  }

  /** Ends the log; returns the write error that cut it, if any. */
  async close(): Promise<Error | undefined> {
    if (this.#closed) return undefined;
    this.#closed = true;
    await new Promise<void>((resolve) => {
      this.#gzip.once("end", () => resolve());
      this.#gzip.once("error", () => resolve());
      this.#gzip.end();
    });
    await this.#writing;
    this.target.file.close();
    await this.target.release();
    return this.#error;
  }
}
