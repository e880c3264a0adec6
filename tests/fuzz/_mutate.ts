// Fuzzing helpers: a seeded PRNG, random inputs and mutations of valid ones.

/** Draws integers in [0, n); the same seed gives the same sequence. */
export type Rng = (n: number) => number;

/** A small seeded PRNG (mulberry32). */
export function createRng(seed: number): Rng {
  let state = seed >>> 0;
  return function next(n: number): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor(((t ^ (t >>> 14)) >>> 0) / 4294967296 * n);
  };
}

const encoder = new TextEncoder();

// Byte values that tend to sit on boundaries of text and binary formats.
const INTERESTING_BYTES = [
  0x00,
  0x01,
  0x7f,
  0x80,
  0xff,
  0xfe,
  0x0a,
  0x0d,
  0x09,
  0x20,
  0x22,
  0x5c,
  0x28,
  0x29,
  0x23,
  0x3a,
  0x3b,
  0x7c,
  0xc0,
  0xed,
  0xf4,
  0xf8,
];
// Numbers that overflow, wrap or claim absurd sizes once written as lengths.
const HUGE_DECIMALS = [
  "4294967295",
  "4294967296",
  "9007199254740991",
  "9007199254740993",
  "18446744073709551615",
  "99999999999999999999999999999999",
  "-1",
  "-9223372036854775808",
  "1e308",
  "0x7fffffff",
];
const HUGE_WORDS: bigint[] = [
  0xffff_ffff_ffff_ffffn,
  0x7fff_ffff_ffff_ffffn,
  0x0020_0000_0000_0000n,
  0x0000_0001_0000_0000n,
  0x0000_0000_ffff_ffffn,
  0x0000_0000_4000_0000n,
  0x0000_0000_0100_0000n,
];

/** Random bytes of length below `maxLength`. */
export function randomBytes(next: Rng, maxLength: number): Uint8Array {
  const out = new Uint8Array(next(maxLength));
  for (let i = 0; i < out.length; i++) out[i] = next(256);
  return out;
}

/** A random string of tokens (and now and then a random byte). */
export function randomTokens(
  next: Rng,
  tokens: readonly string[],
  maxTokens: number,
): Uint8Array {
  const parts: Uint8Array[] = [];
  const count = next(maxTokens);
  for (let i = 0; i < count; i++) {
    parts.push(
      next(10) === 0 || tokens.length === 0
        ? new Uint8Array([next(256)])
        : encoder.encode(tokens[next(tokens.length)]),
    );
  }
  return concat(parts);
}

/** Applies one to four random mutations to a copy of `input`. */
export function mutate(
  next: Rng,
  input: Uint8Array,
  corpus: readonly Uint8Array[],
): Uint8Array {
  let bytes: Uint8Array = input.slice();
  const rounds = 1 + next(4);
  for (let i = 0; i < rounds; i++) {
    bytes = MUTATORS[next(MUTATORS.length)](next, bytes, corpus);
  }
  return bytes;
}

type Mutator = (
  next: Rng,
  bytes: Uint8Array,
  corpus: readonly Uint8Array[],
) => Uint8Array;

const MUTATORS: Mutator[] = [
  function flipBits(next, bytes) {
    if (bytes.length === 0) return bytes;
    const flips = 1 + next(8);
    for (let i = 0; i < flips; i++) {
      bytes[next(bytes.length)] ^= 1 << next(8);
    }
    return bytes;
  },
  function setInterestingByte(next, bytes) {
    if (bytes.length === 0) {
      return new Uint8Array([pick(next, INTERESTING_BYTES)]);
    }
    bytes[next(bytes.length)] = pick(next, INTERESTING_BYTES);
    return bytes;
  },
  function truncate(next, bytes) {
    return bytes.slice(0, next(bytes.length + 1));
  },
  function dropPrefix(next, bytes) {
    return bytes.slice(next(bytes.length + 1));
  },
  function deleteSpan(next, bytes) {
    const [start, end] = span(next, bytes.length);
    return concat([bytes.subarray(0, start), bytes.subarray(end)]);
  },
  function duplicateSpan(next, bytes) {
    const [start, end] = span(next, bytes.length);
    const copies = 1 + next(3);
    const parts = [bytes.subarray(0, end)];
    for (let i = 0; i < copies; i++) parts.push(bytes.subarray(start, end));
    parts.push(bytes.subarray(end));
    return concat(parts);
  },
  function duplicateLine(next, bytes) {
    const lines = splitLines(bytes);
    if (lines.length === 0) return bytes;
    const at = next(lines.length);
    lines.splice(next(lines.length + 1), 0, lines[at]);
    return concat(lines);
  },
  function swapLines(next, bytes) {
    const lines = splitLines(bytes);
    if (lines.length < 2) return bytes;
    const a = next(lines.length);
    const b = next(lines.length);
    [lines[a], lines[b]] = [lines[b], lines[a]];
    return concat(lines);
  },
  function spliceOther(next, bytes, corpus) {
    const other = corpus[next(corpus.length)] ?? new Uint8Array(0);
    const [start, end] = span(next, other.length);
    const at = next(bytes.length + 1);
    const cut = next(2) === 0 ? at : at + next(bytes.length - at + 1);
    return concat([
      bytes.subarray(0, at),
      other.subarray(start, end),
      bytes.subarray(cut),
    ]);
  },
  function insertRandom(next, bytes) {
    const at = next(bytes.length + 1);
    return concat([
      bytes.subarray(0, at),
      randomBytes(next, 17),
      bytes.subarray(at),
    ]);
  },
  function hugeDecimal(next, bytes) {
    // Replace a run of digits (or a random spot) with an absurd number.
    const digits: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] >= 0x30 && bytes[i] <= 0x39) digits.push(i);
    }
    let start = digits.length > 0 ? pick(next, digits) : next(bytes.length + 1);
    let end = start;
    while (start > 0 && isDigit(bytes[start - 1])) start--;
    while (end < bytes.length && isDigit(bytes[end])) end++;
    return concat([
      bytes.subarray(0, start),
      encoder.encode(pick(next, HUGE_DECIMALS)),
      bytes.subarray(end),
    ]);
  },
  function hugeWord(next, bytes) {
    // Overwrite 8 (or 4) bytes with a huge length, either byte order; NAR
    // lengths sit on 8-byte boundaries, so prefer those.
    if (bytes.length < 8) return bytes;
    const aligned = next(2) === 0;
    let at = next(bytes.length - 7);
    if (aligned) at -= at % 8;
    const view = new DataView(bytes.buffer, bytes.byteOffset + at, 8);
    const value = pick(next, HUGE_WORDS);
    if (next(4) === 0) {
      view.setUint32(next(2) * 4, Number(value & 0xffff_ffffn), next(2) === 0);
    } else view.setBigUint64(0, value, next(2) === 0);
    return bytes;
  },
];

function pick<T>(next: Rng, items: readonly T[]): T {
  return items[next(items.length)];
}

function span(next: Rng, length: number): [number, number] {
  const start = next(length + 1);
  const end = start + next(Math.min(length - start, 64) + 1);
  return [start, end];
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

function splitLines(bytes: Uint8Array): Uint8Array[] {
  const lines: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0x0a) {
      lines.push(bytes.subarray(start, i + 1));
      start = i + 1;
    }
  }
  if (start < bytes.length) lines.push(bytes.subarray(start));
  return lines;
}

/** Joins byte arrays into one. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Hex text of bytes. */
export function toHex(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += byte.toString(16).padStart(2, "0");
  return text;
}
