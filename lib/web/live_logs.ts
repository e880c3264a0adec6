// Live build logs: a hub fed by the log receiver, and a tolerant tail of the growing .log.gz.

import { GzipMemberDecoder } from "../gunzip_members.ts";
import { openRegularFile } from "./build_log.ts";

/** What happened to a derivation's log. */
export type LiveLogEvent =
  /** Compressed bytes were appended to the log file. */
  | { type: "chunk"; bytes: number }
  /** The upload ended; the file holds the whole log. */
  | { type: "complete" };

/** A source of "this log changed" signals, keyed by derivation file name. */
export interface LiveLogs {
  /** Calls `listener` on each change of `drv`'s log; returns the unsubscribe function. */
  subscribe(drv: string, listener: (event: LiveLogEvent) => void): () => void;
}

/** A {@link LiveLogs} the server feeds from the log receiver's callbacks. */
export interface LiveLogHub extends LiveLogs {
  /** For `LogReceiverOptions.onChunk`: a compressed chunk was stored. */
  chunk(drv: string, chunk: Uint8Array): void;
  /** For `LogReceiverOptions.onComplete`: the upload ended. */
  complete(drv: string, bytes: number): void;
  /** Derivations with at least one listener. */
  readonly watched: number;
}

/** Listeners one derivation may have, against runaway page reloads. */
const MAX_LISTENERS_PER_DRV = 64;

/** Creates an in-process hub; wire `chunk`/`complete` to the log receiver. */
export function createLiveLogHub(): LiveLogHub {
  const listeners = new Map<string, Set<(event: LiveLogEvent) => void>>();
  function emit(drv: string, event: LiveLogEvent) {
    for (const listener of listeners.get(drv) ?? []) {
      try {
        listener(event);
      } catch {
        // A failing listener must not stop the log receiver.
      }
    }
  }
  return {
    subscribe(drv, listener) {
      let set = listeners.get(drv);
      if (set === undefined) {
        set = new Set();
        listeners.set(drv, set);
      }
      if (set.size >= MAX_LISTENERS_PER_DRV) return () => {};
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0 && listeners.get(drv) === set) {
          listeners.delete(drv);
        }
      };
    },
    chunk(drv, chunk) {
      emit(drv, { type: "chunk", bytes: chunk.length });
    },
    complete(drv) {
      emit(drv, { type: "complete" });
    },
    get watched() {
      return listeners.size;
    },
  };
}

/** What one read of a followed log produced. */
export interface LogFollowStep {
  /** Newly decompressed text (invalid UTF-8 as U+FFFD). */
  text: string;
  /** True when the file was replaced or truncated (a restarted build): start over. */
  reset: boolean;
  /** True when the earliest text was dropped to stay within `tailBytes`. */
  truncated: boolean;
  /** True when the gzip data is damaged; nothing more will be read. */
  damaged: boolean;
}

/**
 * Which file a path named when it was read: a file renamed over it (an
 * upload's, replacing the log of an earlier attempt) is another file.
 */
export interface FileIdentity {
  dev: number;
  ino: number;
}

/** Options of {@link GzipLogFollower}. */
export interface GzipLogFollowerOptions {
  /** Decoded bytes a read yields at most, the end kept; default 256 KiB. */
  tailBytes?: number;
  /** Decoded bytes a read scans at most; default 256 MiB. */
  maxScanBytes?: number;
  /**
   * A file to take as absent while it is at the path: the log of an
   * earlier attempt of the build, until the new attempt's replaces it.
   */
  skipFile?: FileIdentity | null;
}

/** Compressed bytes read from the file per step at most. */
const READ_CHUNK_BYTES = 64 * 1024;
/**
 * Compressed bytes fed to the inflater at a time: deflate expands up to
 * about 1032 times, so a 64 KiB piece of a very repetitive log would come
 * out as one burst of some 64 MiB for every stream reading it at once.
 */
const INFLATE_INPUT_BYTES = 4096;

/**
 * Follows a gzip log file that is still being written: each `read()` inflates
 * the bytes appended since the previous one, yielding everything decodable so
 * far from a member without its end yet, and all that was decoded before
 * damage (garbage after the last member, say) with the damage. Every read
 * keeps only the last `tailBytes` of that text: the first one of a long log,
 * and any read of a follower that fell behind (a slow client, a starved
 * process) skip ahead instead of holding megabytes (case C11).
 */
export class GzipLogFollower {
  readonly #path: string;
  readonly #tailBytes: number;
  readonly #maxScanBytes: number;
  readonly #skipFile: FileIdentity | null;
  #file: FileIdentity | null = null;
  #offset = 0;
  #gunzip = new GzipMemberDecoder();
  #decoder = new TextDecoder("utf-8", { fatal: false });

  constructor(path: string, options: GzipLogFollowerOptions = {}) {
    this.#path = path;
    this.#tailBytes = options.tailBytes ?? 256 * 1024;
    this.#maxScanBytes = options.maxScanBytes ?? 256 * 1024 * 1024;
    this.#skipFile = options.skipFile ?? null;
  }

  /** The file the last read found at the path (skipped or not), if any. */
  get file(): FileIdentity | null {
    return this.#file;
  }

  /** Reads what was appended; an absent (or skipped) file yields empty text. */
  async read(): Promise<LogFollowStep> {
    const step: LogFollowStep = {
      text: "",
      reset: false,
      truncated: false,
      damaged: false,
    };
    const opened = await openRegularFile(this.#path);
    if (opened === null) return step;
    const { file, size, info } = opened;
    this.#file = { dev: info.dev, ino: info.ino ?? 0 };
    if (sameFile(this.#file, this.#skipFile)) {
      file.close();
      return step;
    }
    try {
      if (size < this.#offset) {
        this.#restart();
        step.reset = true;
      }
      if (this.#damaged) {
        step.damaged = true;
        return step;
      }
      let kept: Uint8Array[] = [];
      let keptBytes = 0;
      let scanned = 0;
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const buffer = new Uint8Array(READ_CHUNK_BYTES);
      while (this.#offset < size && scanned < this.#maxScanBytes) {
        const read = await file.read(
          buffer.subarray(0, Math.min(buffer.length, size - this.#offset)),
        );
        if (read === null) break;
        for (let at = 0; at < read; at += INFLATE_INPUT_BYTES) {
          const end = Math.min(read, at + INFLATE_INPUT_BYTES);
          this.#offset += end - at;
          const out = await this.#gunzip.write(buffer.slice(at, end));
          for (const piece of out) {
            scanned += piece.length;
            kept.push(piece);
            keptBytes += piece.length;
            while (
              kept.length > 1 && keptBytes - kept[0].length >= this.#tailBytes
            ) {
              keptBytes -= kept.shift()!.length;
              step.truncated = true;
            }
          }
          if (this.#damaged || scanned >= this.#maxScanBytes) break;
        }
        if (this.#damaged) break;
      }
      let bytes = concat(kept, keptBytes);
      kept = [];
      if (bytes.length > this.#tailBytes) {
        bytes = bytes.subarray(bytes.length - this.#tailBytes);
        step.truncated = true;
      }
      if (step.truncated) {
        const newline = bytes.indexOf(0x0a);
        if (newline >= 0 && newline < bytes.length - 1) {
          bytes = bytes.subarray(newline + 1);
        }
      }
      step.text = this.#decoder.decode(bytes, { stream: true });
      step.damaged = this.#damaged;
      return step;
    } finally {
      file.close();
    }
  }

  /** Releases the decompressor. */
  close(): void {
    this.#gunzip.close();
  }

  get #damaged(): boolean {
    return this.#gunzip.damage !== null;
  }

  #restart() {
    this.close();
    this.#offset = 0;
    this.#gunzip = new GzipMemberDecoder();
    this.#decoder = new TextDecoder("utf-8", { fatal: false });
  }
}

/**
 * The file at `path` now, or null when there is none.
 * @throws errors of `Deno.stat` other than NotFound.
 */
export async function fileIdentity(path: string): Promise<FileIdentity | null> {
  try {
    const info = await Deno.stat(path);
    return { dev: info.dev, ino: info.ino ?? 0 };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

function sameFile(a: FileIdentity, b: FileIdentity | null): boolean {
  return b !== null && a.dev === b.dev && a.ino === b.ino;
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
