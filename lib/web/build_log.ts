// Build logs on disk (`<logCacheDir>/<hash>.log.gz`): raw streaming and a decoded tail.

import { HttpError } from "./http_error.ts";
import { parseStoreBasename } from "../guix/store_path.ts";
import { gunzipAllMembers } from "../gunzip_members.ts";
import type { Build } from "../store/types.ts";

/** The end of a log, decoded for display. */
export interface LogTail {
  /** The decoded text; invalid UTF-8 became U+FFFD. */
  text: string;
  /** Decompressed bytes seen in total (up to the scan limit). */
  totalBytes: number;
  /** True when earlier bytes were left out. */
  truncated: boolean;
  /** True when the scan stopped at `maxScanBytes` before the end. */
  scanLimitReached: boolean;
  /** True when the gzip stream ended early or was corrupt (e.g. still being written). */
  incomplete: boolean;
}

/** Options of `readLogTail`. */
export interface ReadLogTailOptions {
  /** Bytes kept from the end; default 256 KiB. */
  tailBytes?: number;
  /** Decompressed bytes read at most, against gzip bombs; default 256 MiB. */
  maxScanBytes?: number;
}

/** Compressed bytes fed to the decompressor at a time. */
const INFLATE_INPUT_CHUNK = 4096;

// deno-lint-ignore no-control-regex
const ANSI_SEQUENCE_REGEXP = /\x1b\[[0-9;?]*[ -\/]*[@-~]/g;
// Tab, line feed and carriage return stay as they are.
// deno-lint-ignore no-control-regex
const CONTROL_CHAR_REGEXP = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

/**
 * The log file of a derivation: named after the 32-character hash of its
 * basename, so that nothing from a request or the database reaches the path.
 * Returns null when `derivation` is not a store path.
 */
export function logFilePath(
  logCacheDir: string,
  derivation: string,
): string | null {
  const basename = derivation.slice(derivation.lastIndexOf("/") + 1);
  let hash: string;
  try {
    hash = parseStoreBasename(basename).hash;
  } catch {
    return null;
  }
  return `${logCacheDir.replace(/\/+$/, "")}/${hash}.log.gz`;
}

/**
 * Opens a regular file for streaming; null when absent or not a file.
 * The caller owns the returned file and must close it or consume its stream.
 */
export async function openRegularFile(
  path: string,
): Promise<{ file: Deno.FsFile; size: number; info: Deno.FileInfo } | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    if (
      error instanceof Deno.errors.NotFound ||
      error instanceof Deno.errors.IsADirectory ||
      error instanceof Deno.errors.NotADirectory
    ) return null;
    throw error;
  }
  try {
    const info = await file.stat();
    if (!info.isFile) {
      file.close();
      return null;
    }
    return { file, size: info.size, info };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * Streams the first `size` bytes of a file and closes it at the end or on
 * cancel, so a log that grows meanwhile still matches its Content-Length.
 */
export function fileStream(
  file: Deno.FsFile,
  size: number,
  chunkSize = 64 * 1024,
): ReadableStream<Uint8Array<ArrayBuffer>> {
  let remaining = size;
  let closed = false;
  function close() {
    if (!closed) {
      closed = true;
      file.close();
    }
  }
  return new ReadableStream<Uint8Array<ArrayBuffer>>({
    type: "bytes",
    async pull(controller) {
      if (remaining <= 0) {
        close();
        controller.close();
        return;
      }
      const buffer = new Uint8Array(Math.min(remaining, chunkSize));
      let read: number | null;
      try {
        read = await file.read(buffer);
      } catch (error) {
        close();
        throw error;
      }
      if (read === null) {
        // The file shrank: end early rather than pad.
        close();
        controller.close();
        return;
      }
      remaining -= read;
      controller.enqueue(buffer.subarray(0, read));
    },
    cancel() {
      close();
    },
  });
}

/**
 * A build's whole log as a response: the stored gzip file untouched when
 * the client admits gzip (browsers inflate it, and bytes that are not
 * UTF-8 reach the client exactly as the builder wrote them), else the text
 * inflated on the fly.
 * @throws {HttpError} 404 when the build has no log.
 */
export async function buildLogResponse(
  logCacheDir: string,
  build: Build,
  acceptEncoding: string | null,
): Promise<Response> {
  const path = logFilePath(logCacheDir, build.derivation);
  const opened = path === null ? null : await openRegularFile(path);
  if (opened === null) {
    throw new HttpError(404, `Log of build ${build.id} doesn't exist.`);
  }
  const headers: Record<string, string> = {
    "content-type": "text/plain; charset=UTF-8",
    "content-disposition": "inline",
    // The body depends on Accept-Encoding: caches must keep both.
    "vary": "Accept-Encoding",
  };
  if (!acceptsGzip(acceptEncoding)) {
    // Plain text for a client that asked for it (wget does).
    return new Response(inflatedStream(opened.file, opened.size), { headers });
  }
  headers["content-encoding"] = "gzip";
  headers["content-length"] = String(opened.size);
  return new Response(fileStream(opened.file, opened.size), { headers });
}

/**
 * Whether a request's Accept-Encoding admits gzip. No header admits any
 * coding (RFC 9110), which is also what Cuirass's clients get: the gzip
 * file as it is. `identity` alone, or `gzip;q=0`, asks for the plain text.
 */
export function acceptsGzip(acceptEncoding: string | null): boolean {
  if (acceptEncoding === null) return true;
  for (const item of acceptEncoding.split(",")) {
    const [coding, ...parameters] = item.split(";").map((part) =>
      part.trim().toLowerCase()
    );
    if (coding !== "gzip" && coding !== "x-gzip" && coding !== "*") continue;
    const q = parameters.find((parameter) => parameter.startsWith("q="));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

/**
 * The decompressed text of a gzip log, streamed. A log still being written
 * ends mid-stream: the text then ends where the decompressed bytes do,
 * rather than the response failing.
 */
export function inflatedStream(
  file: Deno.FsFile,
  size: number,
): ReadableStream<Uint8Array> {
  // Small input chunks bound each inflation burst, as in readLogTail.
  const reader = gunzipAllMembers(fileStream(file, size, INFLATE_INPUT_CHUNK))
    .getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let next: ReadableStreamReadResult<Uint8Array>;
      try {
        next = await reader.read();
      } catch {
        controller.close(); // truncated: a live log
        return;
      }
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/**
 * Decompresses a gzip log and keeps only its end, streaming so that a large
 * log is never held whole in memory. Returns null when the file is absent.
 */
export async function readLogTail(
  path: string,
  options: ReadLogTailOptions = {},
): Promise<LogTail | null> {
  const { tailBytes = 256 * 1024, maxScanBytes = 256 * 1024 * 1024 } = options;
  const opened = await openRegularFile(path);
  if (opened === null) return null;

  const chunks: Uint8Array[] = [];
  let kept = 0;
  let totalBytes = 0;
  let scanLimitReached = false;
  let incomplete = false;
  // Each input chunk is inflated at once; small input chunks bound that
  // burst (deflate expands at most about 1032 times).
  const reader = gunzipAllMembers(
    fileStream(opened.file, opened.size, INFLATE_INPUT_CHUNK),
  ).getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      kept += value.length;
      totalBytes += value.length;
      while (chunks.length > 1 && kept - chunks[0].length >= tailBytes) {
        kept -= chunks.shift()!.length;
      }
      if (totalBytes >= maxScanBytes) {
        scanLimitReached = true;
        break;
      }
    }
  } catch {
    // A log still being written ends mid-stream, a damaged one at the
    // damage; everything decompressed before was read.
    incomplete = true;
  } finally {
    await reader.cancel().catch(() => {});
  }

  let bytes = concat(chunks, kept);
  const truncated = totalBytes > tailBytes;
  if (truncated) {
    bytes = bytes.subarray(Math.max(0, bytes.length - tailBytes));
    // Start at a line boundary rather than in the middle of a line.
    const newline = bytes.indexOf(0x0a);
    if (newline >= 0 && newline < bytes.length - 1) {
      bytes = bytes.subarray(newline + 1);
    }
  }
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  return { text, totalBytes, truncated, scanLimitReached, incomplete };
}

/**
 * Makes log text readable in a page: drops ANSI colour sequences and shows
 * other control characters as their Unicode control pictures.
 */
export function cleanLogText(text: string): string {
  return text
    .replace(ANSI_SEQUENCE_REGEXP, "")
    .replace(/\r\n/g, "\n")
    .replace(CONTROL_CHAR_REGEXP, controlPicture);
}

function controlPicture(char: string): string {
  const code = char.charCodeAt(0);
  return String.fromCharCode(code === 0x7f ? 0x2421 : 0x2400 + code);
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
