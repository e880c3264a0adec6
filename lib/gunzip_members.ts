// Gzip decompression of every member of a file, one after the other, that
// keeps all it decoded when the file is damaged or cut off.

import zlib from "node:zlib";
import { toHex } from "./hex.ts";

/** Gzip input that is damaged, or that ends in the middle of a member. */
export class GzipDamageError extends SyntaxError {
  constructor(
    message: string,
    /** Where in the compressed input the damage is. */
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "GzipDamageError";
  }
}

// RFC 1952, section 2.3.
const GZIP_FIXED_HEADER_BYTES = 10;
const GZIP_TRAILER_BYTES = 8;
const FLAG_HEADER_CRC = 0x02;
const FLAG_EXTRA = 0x04;
const FLAG_NAME = 0x08;
const FLAG_COMMENT = 0x10;
const FLAGS_RESERVED = 0xe0;
/** A longer header (a name or comment without end) is taken for damage. */
const MAX_HEADER_BYTES = 1024 * 1024;

/**
 * The decompressed bytes of `compressed`, every gzip member one after the
 * other, as gzip(1) reads `cat a.gz b.gz`. Each input chunk is inflated
 * whole before the next is read, so the chunk size bounds the burst. Zero
 * bytes where a member would start are padding, and end the data.
 *
 * DecompressionStream stops at the end of the first member and fails on the
 * rest. Members are framed here, each body going to a raw inflater of its
 * own, rather than by zlib's gunzip mode: at garbage after a member, that
 * one fails the whole write and drops what it had decoded from it, the end
 * of the log. And the stream errors only once everything decoded before the
 * damage has been read, since an error drops what a stream still holds.
 * @throws {GzipDamageError} from a read, after all the text before the
 * damage (input that is no gzip member, a corrupt member, a failed check)
 * or before the end of a member that is cut off (a log still being
 * written).
 */
export function gunzipAllMembers(
  compressed: ReadableStream<Uint8Array>,
): ReadableStream<Uint8Array> {
  const input = compressed.getReader();
  const decoder = new GzipMemberDecoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (decoder.damage === null && !decoder.finished) {
        const { done, value } = await input.read().catch((error) => {
          decoder.close(); // the input failed, not the decoding
          throw error;
        });
        if (done) {
          decoder.end();
          break;
        }
        const pieces = await decoder.write(value);
        if (pieces.length > 0) {
          for (const piece of pieces) controller.enqueue(piece);
          return; // damage found meanwhile waits for the next read
        }
      }
      decoder.close();
      await input.cancel().catch(() => {});
      if (decoder.damage === null) controller.close();
      else controller.error(decoder.damage);
    },
    async cancel(reason) {
      decoder.close();
      await input.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * Splits gzip input into members and inflates them, a chunk at a time: the
 * decoder under {@linkcode gunzipAllMembers}, for readers that are no
 * stream (a log followed as it grows, an upload). A `write` gives all its
 * chunk decoded before damage between members or in a trailer; inside a
 * member's deflate data, zlib gives nothing of the call that failed. The
 * output of a chunk is held whole, so the chunk size bounds the burst
 * (deflate expands up to about 1032 times); the chunk itself is not kept.
 * Input that stops in the middle of a member is no damage until `end`
 * says that no more will come.
 */
export class GzipMemberDecoder {
  /** Why decoding stopped early, once it has. */
  damage: GzipDamageError | null = null;
  /** Whether padding ended the data: what follows is ignored. */
  finished = false;

  /** Compressed bytes taken so far. */
  #offset = 0;
  /** Members read whole so far. */
  #members = 0;
  /** Bytes of a header or trailer that is not whole yet. */
  #held: Uint8Array = new Uint8Array(0);
  /** The inflater of the member whose body is being read. */
  #body: MemberInflater | null = null;
  /** Whether the current member's body ended and its trailer is next. */
  #inTrailer = false;
  #crc = 0;
  #size = 0;

  /** Decodes the next chunk of input; sets `damage` where it finds some. */
  async write(chunk: Uint8Array): Promise<Uint8Array[]> {
    const out: Uint8Array[] = [];
    let rest = chunk;
    while (rest.length > 0 && this.damage === null && !this.finished) {
      if (this.#body !== null) rest = await this.#inflate(rest, out);
      else if (this.#inTrailer) rest = this.#readTrailer(rest);
      else rest = this.#readHeader(rest);
    }
    return out;
  }

  /** Marks the end of the input: damage, unless it ends between members. */
  end(): void {
    if (this.damage !== null || this.finished) return;
    const between = this.#body === null && !this.#inTrailer &&
      this.#held.length === 0;
    if (between && this.#members > 0) return;
    this.damage = new GzipDamageError(
      this.#members === 0 && between
        ? "Cannot read gzip data: it is empty"
        : `Cannot read gzip member ${
          this.#members + 1
        }: the data ends at byte ${
          this.#offset + this.#held.length
        }, before the member does`,
      this.#offset + this.#held.length,
    );
  }

  /** Frees the inflater of an unfinished member. */
  close(): void {
    this.#body?.close();
    this.#body = null;
  }

  #readHeader(chunk: Uint8Array): Uint8Array {
    if (this.#held.length === 0 && this.#members > 0 && chunk[0] === 0) {
      this.finished = true;
      return new Uint8Array(0);
    }
    const bytes = joined(this.#held, chunk);
    let length: number | null;
    try {
      length = gzipHeaderLength(bytes);
    } catch (error) {
      this.#fail((error as Error).message, this.#offset);
      return new Uint8Array(0);
    }
    if (length === null) {
      if (bytes.length > MAX_HEADER_BYTES) {
        this.#fail(
          `header longer than ${MAX_HEADER_BYTES} bytes`,
          this.#offset,
        );
      }
      this.#held = bytes.slice();
      return new Uint8Array(0);
    }
    const taken = length - this.#held.length;
    this.#held = new Uint8Array(0);
    this.#offset += length;
    this.#body = new MemberInflater();
    this.#crc = 0;
    this.#size = 0;
    return chunk.subarray(taken);
  }

  async #inflate(chunk: Uint8Array, out: Uint8Array[]): Promise<Uint8Array> {
    const { pieces, used, failure } = await this.#body!.inflate(chunk);
    for (const piece of pieces) {
      this.#crc = zlib.crc32(piece, this.#crc);
      this.#size += piece.length;
      out.push(piece);
    }
    if (failure !== null) {
      this.#fail(failure.message, this.#offset, failure);
      return new Uint8Array(0);
    }
    this.#offset += used;
    if (used === chunk.length) return new Uint8Array(0);
    // The body's deflate data ended inside this chunk: the trailer follows.
    this.close();
    this.#inTrailer = true;
    return chunk.subarray(used);
  }

  #readTrailer(chunk: Uint8Array): Uint8Array {
    const bytes = joined(this.#held, chunk);
    if (bytes.length < GZIP_TRAILER_BYTES) {
      this.#held = bytes.slice();
      return new Uint8Array(0);
    }
    const taken = GZIP_TRAILER_BYTES - this.#held.length;
    this.#held = new Uint8Array(0);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const crc = view.getUint32(0, true);
    const size = view.getUint32(4, true);
    if (crc !== this.#crc || size !== this.#size % 2 ** 32) {
      this.#fail(
        `its trailer says CRC ${crc} and size ${size}, the data has CRC ${this.#crc} and size ${this.#size}`,
        this.#offset,
      );
      return new Uint8Array(0);
    }
    this.#offset += GZIP_TRAILER_BYTES;
    this.#members += 1;
    this.#inTrailer = false;
    return chunk.subarray(taken);
  }

  #fail(what: string, offset: number, cause?: Error): void {
    this.damage = new GzipDamageError(
      `Cannot read gzip member ${this.#members + 1} at byte ${offset}: ${what}`,
      offset,
      { cause },
    );
    this.close();
  }
}

/** A raw inflater for one member's body, driven a chunk at a time. */
class MemberInflater {
  #zlib = zlib.createInflateRaw();
  #pieces: Uint8Array[] = [];
  #failure: Error | null = null;
  #wake: (() => void) | null = null;

  constructor() {
    this.#zlib.on("data", (piece: Uint8Array) => this.#pieces.push(piece));
    this.#zlib.on("error", (error: Error) => {
      this.#failure = error;
      this.#wake?.();
    });
  }

  /**
   * Inflates `bytes`: what came out, and how many of the bytes the body
   * used (fewer than all when it ended among them).
   */
  async inflate(
    bytes: Uint8Array,
  ): Promise<{ pieces: Uint8Array[]; used: number; failure: Error | null }> {
    const before = this.#zlib.bytesWritten;
    await this.#run((done) => this.#zlib.write(bytes, done));
    const used = this.#zlib.bytesWritten - before;
    if (this.#failure === null && used === bytes.length) {
      // The flush pushes out what a partial deflate block allows, so the
      // text of a log still being written comes out as it grows.
      await this.#run((done) =>
        this.#zlib.flush(zlib.constants.Z_SYNC_FLUSH, done)
      );
    }
    const pieces = this.#pieces;
    this.#pieces = [];
    return { pieces, used, failure: this.#failure };
  }

  close(): void {
    this.#zlib.close();
  }

  /** Runs one zlib call until its callback, or until the inflater fails. */
  #run(start: (done: () => void) => void): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      if (this.#failure !== null) return resolve();
      // A failed inflater calls back first, then reports its error.
      start(() => {
        if (!this.#zlib.destroyed) resolve();
      });
    }).finally(() => this.#wake = null);
  }
}

/**
 * The length of the gzip member header at the start of `bytes`, or null
 * while it is not whole yet.
 * @throws {Error} saying why the bytes are no gzip header.
 */
function gzipHeaderLength(bytes: Uint8Array): number | null {
  const magic = [0x1f, 0x8b, 0x08]; // ID1, ID2, CM (deflate)
  if (magic.some((byte, i) => i < bytes.length && bytes[i] !== byte)) {
    throw new Error(
      `${toHex(bytes.subarray(0, 4))} (hex) is not the start of a gzip member`,
    );
  }
  if (bytes.length < GZIP_FIXED_HEADER_BYTES) return null;
  const flags = bytes[3];
  if ((flags & FLAGS_RESERVED) !== 0) {
    throw new Error(`its header sets reserved flags (${flags})`);
  }
  let length = GZIP_FIXED_HEADER_BYTES;
  if (flags & FLAG_EXTRA) {
    if (bytes.length < length + 2) return null;
    length += 2 + (bytes[length] | bytes[length + 1] << 8);
  }
  for (const flag of [FLAG_NAME, FLAG_COMMENT]) {
    if ((flags & flag) === 0) continue;
    const end = length < bytes.length ? bytes.indexOf(0, length) : -1;
    if (end < 0) return null;
    length = end + 1;
  }
  if (flags & FLAG_HEADER_CRC) {
    if (bytes.length < length + 2) return null;
    const expected = bytes[length] | bytes[length + 1] << 8;
    const actual = zlib.crc32(bytes.subarray(0, length)) & 0xffff;
    if (actual !== expected) {
      throw new Error(
        `its header CRC is ${expected}, the header's is ${actual}`,
      );
    }
    length += 2;
  }
  return bytes.length >= length ? length : null;
}

function joined(held: Uint8Array, chunk: Uint8Array): Uint8Array {
  if (held.length === 0) return chunk;
  const bytes = new Uint8Array(held.length + chunk.length);
  bytes.set(held);
  bytes.set(chunk, held.length);
  return bytes;
}
