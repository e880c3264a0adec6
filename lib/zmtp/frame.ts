// ZMTP 3.x frames: encoding and an incremental, size-bounded decoder.

/** One decoded frame; `body` is always a fresh copy owned by the caller. */
export interface Frame {
  body: Uint8Array;
  more: boolean;
  command: boolean;
}

/** Limits for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest body accepted for a message frame; default 64 MiB. */
  maxFrameBytes?: number;
  /**
   * Largest total of the frames of one message, checked against each frame
   * header as it arrives (with the frames before it); default no limit.
   */
  maxMessageBytes?: number;
  /** Largest body accepted for a command frame; default 64 KiB. */
  maxCommandBytes?: number;
}

/** Wire input that breaks the ZMTP framing rules. */
export class ZmtpSyntaxError extends SyntaxError {
  /** Stable machine-readable reason, e.g. "bad-flags". */
  code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ZmtpSyntaxError";
    this.code = code;
  }
}

/**
 * A frame, or a message once the frame just announced is added, larger than
 * the configured maximum.
 */
export class ZmtpFrameSizeError extends RangeError {
  /**
   * The announced size: of the frame, or of the message with that frame.
   * A bigint, for a header may declare up to 2^64 - 1 bytes, and a size
   * clamped to a safe number would misreport what the peer sent.
   */
  size: bigint;
  maxBytes: number;
  /** What went over the limit. */
  unit: "frame" | "message";
  constructor(
    size: number | bigint,
    maxBytes: number,
    unit: "frame" | "message" = "frame",
  ) {
    super(
      `Cannot accept ZMTP ${unit}: size ${size} exceeds the limit of ${maxBytes} bytes`,
    );
    this.name = "ZmtpFrameSizeError";
    this.size = BigInt(size);
    this.maxBytes = maxBytes;
    this.unit = unit;
  }
}

export const FLAG_MORE = 0x01;
export const FLAG_LONG = 0x02;
export const FLAG_COMMAND = 0x04;

/** Default cap on one frame's body (and on one message's total size). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

const DEFAULT_MAX_COMMAND_BYTES = 64 * 1024;
// Bodies up to this size get their buffer at once; larger ones are gathered
// as bytes arrive, so a peer cannot make us reserve memory by a claim alone.
const PREALLOCATE_LIMIT = 64 * 1024;

/** Encodes one message (one or more frames) as wire bytes, MORE on all but the last. */
export function encodeMessage(frames: readonly Uint8Array[]): Uint8Array {
  if (frames.length === 0) {
    throw new TypeError("Cannot encode ZMTP message: it has no frames");
  }
  let total = 0;
  for (const body of frames) total += headerSize(body.length) + body.length;
  const out = new Uint8Array(total);
  let offset = 0;
  frames.forEach(function writeFrame(body, index) {
    const flags = index < frames.length - 1 ? FLAG_MORE : 0;
    offset = writeHeader(out, offset, flags, body.length);
    out.set(body, offset);
    offset += body.length;
  });
  return out;
}

/** Encodes one command frame whose body is already built. */
export function encodeCommandFrame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(headerSize(body.length) + body.length);
  const offset = writeHeader(out, 0, FLAG_COMMAND, body.length);
  out.set(body, offset);
  return out;
}

/** Turns a byte stream into frames; feed it chunks of any size, even single bytes. */
export class FrameDecoder {
  #maxFrameBytes: number;
  #maxCommandBytes: number;
  #maxMessageBytes: number;
  /** Body bytes of the current message's frames before the one being read. */
  #messageBytes = 0;
  #header = new Uint8Array(9);
  #headerFill = 0;
  #flags = 0;
  #size = -1;
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #pieces: Uint8Array[] = [];
  #offset = 0;
  #error: unknown = undefined;

  constructor(options: FrameDecoderOptions = {}) {
    const {
      maxFrameBytes = DEFAULT_MAX_MESSAGE_BYTES,
      maxCommandBytes = DEFAULT_MAX_COMMAND_BYTES,
      maxMessageBytes = Infinity,
    } = options;
    this.#maxFrameBytes = maxFrameBytes;
    this.#maxMessageBytes = maxMessageBytes;
    this.#maxCommandBytes = Math.min(maxCommandBytes, maxFrameBytes);
  }

  /**
   * Consumes `chunk` and returns the frames it completes. The chunk is not
   * kept, so the caller may reuse its buffer.
   * @throws {ZmtpSyntaxError} on reserved flag bits or a command with MORE
   * @throws {ZmtpFrameSizeError} when a frame, or the message it belongs
   * to, is larger than allowed (found from the frame header, before its body)
   */
  push(chunk: Uint8Array): Frame[] {
    this.check();
    const frames: Frame[] = [];
    let at = 0;
    try {
      while (at < chunk.length) {
        at = this.#size < 0
          ? this.#readHeader(chunk, at)
          : this.#readBody(chunk, at);
        if (this.#size >= 0 && this.#bodyFill === this.#size) {
          frames.push(this.#finish());
        }
      }
    } catch (error) {
      // Hand out the good frames before the bad one; check() reports it next.
      if (frames.length === 0) throw error;
      this.#error = error;
    }
    return frames;
  }

  /**
   * Throws the error found after the frames the last push returned, if any.
   * @throws {ZmtpSyntaxError | ZmtpFrameSizeError} the stashed error
   */
  check(): void {
    if (this.#error !== undefined) throw this.#error;
  }

  /** Bytes consumed so far, for error reports. */
  get offset(): number {
    return this.#offset;
  }

  #readHeader(chunk: Uint8Array, at: number): number {
    const header = this.#header;
    if (this.#headerFill === 0) {
      checkFlags(chunk[at], this.#offset);
      header[0] = chunk[at];
      this.#headerFill = 1;
      this.#offset += 1;
      at += 1;
    }
    const need = (header[0] & FLAG_LONG) !== 0 ? 9 : 2;
    const take = Math.min(need - this.#headerFill, chunk.length - at);
    header.set(chunk.subarray(at, at + take), this.#headerFill);
    this.#headerFill += take;
    this.#offset += take;
    at += take;
    if (this.#headerFill < need) return at;

    const flags = header[0];
    const declared = need === 2
      ? header[1]
      : new DataView(header.buffer, 1, 8).getBigUint64(0);
    const command = (flags & FLAG_COMMAND) !== 0;
    const limit = command ? this.#maxCommandBytes : this.#maxFrameBytes;
    if (declared > limit) throw new ZmtpFrameSizeError(declared, limit);
    // Within the limit, a safe integer.
    const size = Number(declared);
    // The whole message is judged here too, so that the body of a frame
    // that would take it over the limit is never gathered.
    if (!command && this.#messageBytes + size > this.#maxMessageBytes) {
      throw new ZmtpFrameSizeError(
        this.#messageBytes + size,
        this.#maxMessageBytes,
        "message",
      );
    }
    this.#flags = flags;
    this.#size = size;
    this.#headerFill = 0;
    if (size > 0 && size <= PREALLOCATE_LIMIT) {
      this.#body = new Uint8Array(size);
    }
    return at;
  }

  #readBody(chunk: Uint8Array, at: number): number {
    const take = Math.min(this.#size - this.#bodyFill, chunk.length - at);
    const piece = chunk.subarray(at, at + take);
    if (this.#body !== null) this.#body.set(piece, this.#bodyFill);
    else this.#pieces.push(piece.slice());
    this.#bodyFill += take;
    this.#offset += take;
    return at + take;
  }

  #finish(): Frame {
    let body: Uint8Array;
    if (this.#body !== null) body = this.#body;
    else if (this.#size === 0) body = new Uint8Array(0);
    else body = concat(this.#pieces, this.#size);
    const frame = {
      body,
      more: (this.#flags & FLAG_MORE) !== 0,
      command: (this.#flags & FLAG_COMMAND) !== 0,
    };
    if (!frame.command) {
      this.#messageBytes = frame.more ? this.#messageBytes + this.#size : 0;
    }
    this.#size = -1;
    this.#body = null;
    this.#bodyFill = 0;
    this.#pieces = [];
    return frame;
  }
}

function checkFlags(flags: number, offset: number): void {
  if ((flags & ~(FLAG_MORE | FLAG_LONG | FLAG_COMMAND)) !== 0) {
    throw new ZmtpSyntaxError(
      "bad-flags",
      `Cannot decode ZMTP frame: flags byte ${
        JSON.stringify(hex(flags))
      } at offset ${offset} has reserved bits set`,
    );
  }
  if ((flags & FLAG_COMMAND) !== 0 && (flags & FLAG_MORE) !== 0) {
    throw new ZmtpSyntaxError(
      "command-with-more",
      `Cannot decode ZMTP frame: command frame at offset ${offset} has the MORE flag`,
    );
  }
}

function headerSize(length: number): number {
  return length > 255 ? 9 : 2;
}

function writeHeader(
  out: Uint8Array,
  offset: number,
  flags: number,
  length: number,
): number {
  if (length > 255) {
    out[offset] = flags | FLAG_LONG;
    new DataView(out.buffer, out.byteOffset + offset + 1, 8).setBigUint64(
      0,
      BigInt(length),
    );
    return offset + 9;
  }
  out[offset] = flags;
  out[offset + 1] = length;
  return offset + 2;
}

function concat(pieces: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let offset = 0;
  for (const piece of pieces) {
    out.set(piece, offset);
    offset += piece.length;
  }
  return out;
}

function hex(byte: number): string {
  return "0x" + byte.toString(16).padStart(2, "0");
}
