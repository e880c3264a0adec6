// Nix's base32 ("nix-base32"): its own alphabet and a reversed bit order.

import { NIX_BASE32_ALPHABET } from "./store_path.ts";

/** Thrown for text that is not valid nix-base32. */
export class Base32SyntaxError extends SyntaxError {
  constructor(
    message: string,
    readonly offset: number,
    readonly character: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "Base32SyntaxError";
  }
}

const DIGIT_VALUES: ReadonlyMap<string, number> = new Map(
  [...NIX_BASE32_ALPHABET].map((char, value) => [char, value]),
);

/** Encodes bytes as nix-base32 (20 bytes give 32 characters, 32 give 52). */
export function encodeNixBase32(bytes: Uint8Array): string {
  const length = Math.ceil(bytes.length * 8 / 5);
  let text = "";
  // Character p holds the 5-bit group number length-1-p, where group n is
  // bits 5n..5n+4 of the little-endian number the bytes spell.
  for (let group = length - 1; group >= 0; group--) {
    const bit = group * 5;
    const byte = bit >> 3;
    const shift = bit & 7;
    const low = bytes[byte] >> shift;
    const high = byte + 1 < bytes.length ? bytes[byte + 1] << (8 - shift) : 0;
    text += NIX_BASE32_ALPHABET[(low | high) & 0x1f];
  }
  return text;
}

/**
 * Decodes nix-base32 text back into bytes.
 * @throws {Base32SyntaxError} on a character outside the alphabet, a length
 * no byte string encodes to, or set bits past the last byte.
 */
export function decodeNixBase32(text: string): Uint8Array {
  const size = Math.floor(text.length * 5 / 8);
  if (Math.ceil(size * 8 / 5) !== text.length) {
    throw new Base32SyntaxError(
      `Cannot decode nix-base32 ${
        quote(text)
      }: length ${text.length} is not that of any encoding`,
      text.length,
      "",
    );
  }
  const bytes = new Uint8Array(size);
  for (let offset = 0; offset < text.length; offset++) {
    const char = text[offset];
    const value = DIGIT_VALUES.get(char);
    if (value === undefined) {
      throw new Base32SyntaxError(
        `Cannot decode nix-base32 ${quote(text)}: invalid character ${
          JSON.stringify(char)
        } at offset ${offset}`,
        offset,
        char,
      );
    }
    const bit = (text.length - 1 - offset) * 5;
    const byte = bit >> 3;
    const shift = bit & 7;
    bytes[byte] |= (value << shift) & 0xff;
    const carry = value >> (8 - shift);
    if (carry !== 0) {
      if (byte + 1 >= size) {
        throw new Base32SyntaxError(
          `Cannot decode nix-base32 ${quote(text)}: character ${
            JSON.stringify(char)
          } at offset ${offset} sets bits past the last byte`,
          offset,
          char,
        );
      }
      bytes[byte + 1] |= carry;
    }
  }
  return bytes;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
}
