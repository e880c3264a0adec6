// ZMTP 3.1 greeting and the NULL-mechanism commands (READY, ERROR, PING, PONG).

import { ZmtpSyntaxError } from "./frame.ts";

/** The fields of a peer's 64-byte greeting that matter to us. */
export interface Greeting {
  major: number;
  minor: number;
  mechanism: string;
  asServer: boolean;
}

/** A command frame split into its name and the bytes after the name. */
export interface Command {
  name: string;
  data: Uint8Array;
}

/** A PING's time-to-live (tenths of a second) and context bytes. */
export interface Ping {
  ttl: number;
  context: Uint8Array;
}

export const GREETING_SIZE = 64;
const MECHANISM_OFFSET = 12;
const MECHANISM_SIZE = 20;
const MAX_PING_CONTEXT = 16;

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** Encodes our greeting: version 3.1, the given mechanism, as-server flag. */
export function encodeGreeting(
  options: { mechanism?: string; asServer?: boolean } = {},
): Uint8Array {
  const { mechanism = "NULL", asServer = false } = options;
  const out = new Uint8Array(GREETING_SIZE);
  out[0] = 0xff;
  // Padding: libzmq puts a 1 in the last byte for old ZMTP 1.0 peers.
  out[8] = 0x01;
  out[9] = 0x7f;
  out[10] = 3;
  out[11] = 1;
  out.set(encoder.encode(mechanism).subarray(0, MECHANISM_SIZE), 12);
  out[32] = asServer ? 1 : 0;
  return out;
}

/** Collects a peer's greeting from chunks of any size, failing early on a bad signature. */
export class GreetingReader {
  #buffer = new Uint8Array(GREETING_SIZE);
  #fill = 0;

  /**
   * Consumes bytes from `chunk`; once 64 bytes are in, returns the greeting
   * and the bytes of `chunk` that follow it (a copy).
   * @throws {ZmtpSyntaxError} when the signature or version is not ZMTP 3
   */
  push(
    chunk: Uint8Array,
  ): { greeting: Greeting; rest: Uint8Array } | undefined {
    const before = this.#fill;
    const take = Math.min(GREETING_SIZE - this.#fill, chunk.length);
    this.#buffer.set(chunk.subarray(0, take), this.#fill);
    this.#fill += take;
    checkPrefix(this.#buffer, before, this.#fill);
    if (this.#fill < GREETING_SIZE) return undefined;
    return {
      greeting: parseGreeting(this.#buffer),
      rest: chunk.slice(take),
    };
  }
}

/**
 * Decodes a complete 64-byte greeting.
 * @throws {ZmtpSyntaxError} when it is not a ZMTP 3.x greeting
 */
export function parseGreeting(bytes: Uint8Array): Greeting {
  if (bytes.length < GREETING_SIZE) {
    throw new ZmtpSyntaxError(
      "short-greeting",
      `Cannot parse ZMTP greeting: found ${bytes.length} bytes, expected ${GREETING_SIZE}`,
    );
  }
  checkPrefix(bytes, 0, GREETING_SIZE);
  const mechanismBytes = bytes.subarray(
    MECHANISM_OFFSET,
    MECHANISM_OFFSET + MECHANISM_SIZE,
  );
  const end = mechanismBytes.indexOf(0);
  return {
    major: bytes[10],
    minor: bytes[11],
    mechanism: latin1.decode(
      end < 0 ? mechanismBytes : mechanismBytes.subarray(0, end),
    ),
    asServer: bytes[32] !== 0,
  };
}

/** Builds a command body: the name as a short string, then `data`. */
export function encodeCommand(
  name: string,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const nameBytes = shortString(name, "command name");
  const out = new Uint8Array(1 + nameBytes.length + data.length);
  out[0] = nameBytes.length;
  out.set(nameBytes, 1);
  out.set(data, 1 + nameBytes.length);
  return out;
}

/**
 * Splits a command body into name and data.
 * @throws {ZmtpSyntaxError} when the name runs past the body
 */
export function parseCommand(body: Uint8Array): Command {
  const length = body.length > 0 ? body[0] : -1;
  if (length < 1 || 1 + length > body.length) {
    throw new ZmtpSyntaxError(
      "bad-command",
      `Cannot parse ZMTP command: name length ${length} does not fit a ${body.length}-byte body`,
    );
  }
  return {
    name: latin1.decode(body.subarray(1, 1 + length)),
    data: body.slice(1 + length),
  };
}

/** Builds a READY command body from metadata properties (e.g. Socket-Type). */
export function encodeReady(
  properties: Record<string, Uint8Array | string>,
): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, value] of Object.entries(properties)) {
    const nameBytes = shortString(name, "property name");
    const valueBytes = typeof value === "string"
      ? encoder.encode(value)
      : value;
    const head = new Uint8Array(1 + nameBytes.length + 4);
    head[0] = nameBytes.length;
    head.set(nameBytes, 1);
    new DataView(head.buffer).setUint32(
      1 + nameBytes.length,
      valueBytes.length,
    );
    parts.push(head, valueBytes);
  }
  return encodeCommand("READY", concat(parts));
}

/**
 * Decodes READY metadata into a map keyed by lower-case property name
 * (names are case-insensitive in ZMTP); values are copies.
 * @throws {ZmtpSyntaxError} when a property runs past the end
 */
export function parseMetadata(data: Uint8Array): Map<string, Uint8Array> {
  const properties = new Map<string, Uint8Array>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 0;
  while (at < data.length) {
    const nameLength = data[at];
    const valueAt = at + 1 + nameLength + 4;
    if (nameLength === 0 || valueAt > data.length) {
      throw metadataError(at, data.length);
    }
    const name = latin1.decode(data.subarray(at + 1, at + 1 + nameLength));
    const valueLength = view.getUint32(at + 1 + nameLength);
    if (valueAt + valueLength > data.length) {
      throw metadataError(at, data.length);
    }
    properties.set(
      name.toLowerCase(),
      data.slice(valueAt, valueAt + valueLength),
    );
    at = valueAt + valueLength;
  }
  return properties;
}

/** Builds an ERROR command body carrying `reason` (cut to 255 bytes). */
export function encodeError(reason: string): Uint8Array {
  const bytes = encoder.encode(reason).subarray(0, 255);
  const data = new Uint8Array(1 + bytes.length);
  data[0] = bytes.length;
  data.set(bytes, 1);
  return encodeCommand("ERROR", data);
}

/** Reads the reason of an ERROR command's data; tolerates a malformed one. */
export function parseErrorReason(data: Uint8Array): string {
  if (data.length === 0) return "";
  const length = Math.min(data[0], data.length - 1);
  return new TextDecoder().decode(data.subarray(1, 1 + length));
}

/** Builds a PING command body. */
export function encodePing(
  ttl: number,
  context: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const data = new Uint8Array(2 + Math.min(context.length, MAX_PING_CONTEXT));
  new DataView(data.buffer).setUint16(0, ttl);
  data.set(context.subarray(0, MAX_PING_CONTEXT), 2);
  return encodeCommand("PING", data);
}

/**
 * Decodes a PING command's data.
 * @throws {ZmtpSyntaxError} when it is shorter than the 2-byte TTL
 */
export function parsePing(data: Uint8Array): Ping {
  if (data.length < 2) {
    throw new ZmtpSyntaxError(
      "bad-ping",
      `Cannot parse ZMTP PING: found ${data.length} bytes, expected at least 2`,
    );
  }
  return {
    ttl: new DataView(data.buffer, data.byteOffset, 2).getUint16(0),
    context: data.slice(2, 2 + MAX_PING_CONTEXT),
  };
}

/** Builds the PONG answering a PING with `context`. */
export function encodePong(context: Uint8Array): Uint8Array {
  return encodeCommand("PONG", context.subarray(0, MAX_PING_CONTEXT));
}

function checkPrefix(bytes: Uint8Array, from: number, to: number): void {
  // Signature: 0xFF, 8 padding bytes we ignore, 0x7F; then major version.
  if (from <= 0 && to > 0 && bytes[0] !== 0xff) {
    throw greetingError("bad-signature", "first byte", bytes[0]);
  }
  if (from <= 9 && to > 9 && bytes[9] !== 0x7f) {
    throw greetingError("bad-signature", "signature end byte", bytes[9]);
  }
  if (from <= 10 && to > 10 && bytes[10] < 3) {
    throw greetingError("bad-version", "major version", bytes[10]);
  }
}

function greetingError(code: string, what: string, value: number) {
  return new ZmtpSyntaxError(
    code,
    `Cannot parse ZMTP greeting: ${what} is ${value}, which is not ZMTP 3`,
  );
}

function shortString(text: string, what: string): Uint8Array {
  const bytes = encoder.encode(text);
  if (bytes.length === 0 || bytes.length > 255) {
    throw new RangeError(
      `Cannot encode ZMTP ${what}: ${
        JSON.stringify(text.slice(0, 40))
      } must be 1 to 255 bytes`,
    );
  }
  return bytes;
}

function metadataError(at: number, length: number): ZmtpSyntaxError {
  return new ZmtpSyntaxError(
    "bad-metadata",
    `Cannot parse ZMTP READY metadata: property at offset ${at} runs past the ${length}-byte body`,
  );
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
