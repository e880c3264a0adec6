// What a server that stopped mid-upload left in the log cache: upload files
// (`<hash>.log.gz.<id>.part`, log_file.ts) and, when one of them had been
// published, a build log whose gzip stream stops short with no word of why.
//
// Such a log is repaired when the files are swept (at the receiver's start,
// and with each log expiry): what decodes is kept, and the marker that an
// upload cut in a live server gets says the rest is missing. The upload's
// own name, still a link to the log's file and no longer locked, is what
// tells which logs to repair; so a start reads the directory listing and
// the few logs that were being written, never every log, and a log still
// written by a live upload (locked) is left alone. Decoding tolerantly at
// read time instead would cost a full inflation on every read, and could not
// tell a dead server's log from a live one that is still growing.

import zlib from "node:zlib";
import type { Logger } from "../log.ts";
import { UploadFile } from "./log_file.ts";
import { endedEarlyMarker } from "./log_sink.ts";

/** Settings of {@linkcode recoverLeftUploads}. */
export interface RecoverLeftUploadsOptions {
  /**
   * Unpublished upload files not written for this long are removed: one
   * younger may belong to an upload that has not taken its lock yet.
   */
  idleMs: number;
  /** The time now, in ms since the epoch. */
  now: number;
  logger: Logger;
}

/** What {@linkcode recoverLeftUploads} did. */
export interface LeftUploads {
  /** Upload files removed that were no build's log. */
  removed: number;
  /** Build logs ended with a marker because their upload had died. */
  repaired: number;
}

/** Why a repaired log stops, in the words of its cut marker. */
export const SERVER_DIED_REASON = "the server died while writing it";

const PART_NAME_REGEXP = /^[0-9a-df-np-sv-z]{32}\.log\.gz\.[0-9a-f]{16}\.part$/;
const PART_SUFFIX_LENGTH = ".0123456789abcdef.part".length;
/** Compressed bytes inflated at a time: bounds each inflation burst. */
const INFLATE_INPUT_BYTES = 4096;

/**
 * Sweeps `cacheDir` for upload files no live upload holds: the build log one
 * was writing is repaired (see above) and its name removed; the others are
 * removed once idle. Nothing else is touched; a log that cannot be repaired
 * now (a full disk) keeps its upload name, for the next sweep.
 */
export async function recoverLeftUploads(
  cacheDir: string,
  options: RecoverLeftUploadsOptions,
): Promise<LeftUploads> {
  const { idleMs, now, logger } = options;
  const left: LeftUploads = { removed: 0, repaired: 0 };
  for await (const entry of Deno.readDir(cacheDir)) {
    if (!entry.isFile || !PART_NAME_REGEXP.test(entry.name)) continue;
    const partPath = `${cacheDir}/${entry.name}`;
    const logPath = partPath.slice(0, -PART_SUFFIX_LENGTH);
    let part: Deno.FsFile;
    try {
      part = await Deno.open(partPath, { read: true });
    } catch {
      continue; // gone meanwhile
    }
    try {
      // A live upload holds its lock until its file is closed.
      if (!await part.tryLock(true)) continue;
      const info = await part.stat();
      if (await isFileAt(info, logPath)) {
        if (await repairLog(logPath, info)) {
          left.repaired++;
          logger.warn("log repaired", {
            path: logPath,
            reason: SERVER_DIED_REASON,
          });
        }
        // Removed while still locked, so that no other sweep repairs the
        // log again meanwhile.
        await Deno.remove(partPath);
        continue;
      }
      if ((info.mtime?.getTime() ?? now) > now - idleMs) continue;
      await Deno.remove(partPath);
      left.removed++;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        logger.warn("log upload file not recovered", {
          path: partPath,
          error,
        });
      }
    } finally {
      part.close();
    }
  }
  return left;
}

/** Whether `info` is the file at `path` (one file, two names). */
async function isFileAt(info: Deno.FileInfo, path: string): Promise<boolean> {
  let at: Deno.FileInfo;
  try {
    at = await Deno.stat(path);
  } catch {
    return false;
  }
  return info.ino !== null && at.ino === info.ino && at.dev === info.dev;
}

/**
 * Rewrites the gzip log at `path` (the file `left`) if its stream stops
 * short: what decodes, then the cut marker. Returns false, changing
 * nothing, for a whole log, and for one another upload replaced meanwhile
 * (the build running again): its log is newer than the repair.
 * @throws {Deno.errors.NotFound} and other errors of reading or writing.
 */
async function repairLog(
  path: string,
  left: Deno.FileInfo,
): Promise<boolean> {
  using source = await Deno.open(path, { read: true });
  const target = await UploadFile.create(path);
  const gzip = new CompressionStream("gzip");
  const written = gzip.readable.pipeTo(target.file.writable);
  const writer = gzip.writable.getWriter();
  const keep = (bytes: Uint8Array) => writer.write(bytes.slice());
  try {
    const first = await inflatePass(source, keep, Infinity, 0);
    if (!first.whole) {
      // The slice where decoding failed lost its output with it: that slice
      // again, a byte at a time, keeps all that decodes (a crash that cut a
      // flushed stream fails only at its end; garbage left by a power loss
      // may fail anywhere).
      await inflatePass(source, keep, first.failedAt, first.produced);
      const marker = endedEarlyMarker(SERVER_DIED_REASON);
      await writer.write(new TextEncoder().encode(marker));
    }
    await writer.close();
    await written;
    return !first.whole && target.replaceIfStill(left);
  } catch (error) {
    await writer.abort(error).catch(() => {});
    await written.catch(() => {});
    throw error;
  } finally {
    await target.release();
  }
}

/** How far one decoding of a log went. */
interface InflatePass {
  /** True when the gzip stream ended where it should. */
  whole: boolean;
  /** Log bytes decoded, those skipped included. */
  produced: number;
  /** Offset of the compressed slice that could not be decoded. */
  failedAt: number;
}

/**
 * Inflates `file` from its start, passing to `keep` what comes after the
 * first `skip` log bytes; compressed bytes from `byteFrom` on go in one at
 * a time. Stops at the first undecodable slice.
 */
async function inflatePass(
  file: Deno.FsFile,
  keep: (bytes: Uint8Array) => Promise<void>,
  byteFrom: number,
  skip: number,
): Promise<InflatePass> {
  await file.seek(0, Deno.SeekMode.Start);
  const gunzip = zlib.createGunzip();
  const out: Uint8Array[] = [];
  let failure: Error | undefined;
  gunzip.on("data", (chunk: Uint8Array) => out.push(chunk));
  gunzip.on("error", (error: Error) => failure ??= error);
  let produced = 0;
  const pass = async () => {
    for (const chunk of out.splice(0)) {
      const from = Math.max(0, Math.min(chunk.length, skip - produced));
      produced += chunk.length;
      if (from < chunk.length) await keep(chunk.subarray(from));
    }
  };
  const buffer = new Uint8Array(INFLATE_INPUT_BYTES);
  let offset = 0;
  try {
    while (true) {
      const size = offset >= byteFrom ? 1 : INFLATE_INPUT_BYTES;
      const read = await file.read(buffer.subarray(0, size));
      if (read === null) break;
      const slice = buffer.slice(0, read);
      await new Promise((resolve) => gunzip.write(slice, resolve));
      await pass();
      if (failure) return { whole: false, produced, failedAt: offset };
      offset += read;
    }
    await new Promise<void>((resolve) => {
      gunzip.once("end", resolve);
      gunzip.once("error", () => resolve());
      gunzip.end();
    });
    await pass();
    return { whole: failure === undefined, produced, failedAt: offset };
  } finally {
    gunzip.destroy();
  }
}
