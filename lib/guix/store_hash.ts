// Store path computation: the daemon's makeStorePath and its common uses.

import { createHash } from "node:crypto";
import { toHex } from "../hex.ts";
import { encodeNixBase32 } from "./base32.ts";

const encoder = new TextEncoder();

/** SHA-256 of bytes, or of a string's UTF-8 encoding. */
export function sha256(bytes: Uint8Array | string): Uint8Array {
  const hash = createHash("sha256");
  hash.update(typeof bytes === "string" ? encoder.encode(bytes) : bytes);
  return new Uint8Array(hash.digest());
}

// Re-exported beside sha256, whose digests it mostly prints (and where the
// tests take it from).
export { toHex };

/**
 * Folds a hash into `size` bytes by XOR, as the daemon's compressHash does.
 */
export function compressHash(hash: Uint8Array, size: number): Uint8Array {
  const folded = new Uint8Array(size);
  for (let i = 0; i < hash.length; i++) folded[i % size] ^= hash[i];
  return folded;
}

/**
 * The store path `<storeDir>/<nix32 of 20 bytes>-<name>` for a path type
 * (`text:…`, `source`, `output:out`, …) and the hex of its inner hash.
 */
export function makeStorePath(
  type: string,
  innerHashHex: string,
  name: string,
  storeDir: string,
): string {
  const fingerprint = `${type}:sha256:${innerHashHex}:${storeDir}:${name}`;
  const hashPart = encodeNixBase32(compressHash(sha256(fingerprint), 20));
  return `${storeDir}/${hashPart}-${name}`;
}

/** The path `add-text-to-store` gives a text item (all .drv files are such). */
export function makeTextStorePath(
  name: string,
  content: Uint8Array | string,
  references: string[],
  storeDir: string,
): string {
  const type = ["text", ...[...references].sort(byCodeUnits)].join(":");
  return makeStorePath(type, toHex(sha256(content)), name, storeDir);
}

/** The path of a recursive (NAR) sha256 import, given the NAR's sha256. */
export function makeSourceStorePath(
  name: string,
  narSha256: Uint8Array,
  storeDir: string,
): string {
  return makeStorePath("source", toHex(narSha256), name, storeDir);
}

/**
 * The output path of a fixed-output derivation output named `out`; a
 * recursive sha256 output is a source path, anything else a `fixed:` one.
 */
export function makeFixedOutputStorePath(
  name: string,
  hashAlgo: string,
  hashHex: string,
  storeDir: string,
): string {
  if (hashAlgo === "r:sha256") {
    return makeStorePath("source", hashHex, name, storeDir);
  }
  const inner = toHex(sha256(`fixed:out:${hashAlgo}:${hashHex}:`));
  return makeStorePath("output:out", inner, name, storeDir);
}

function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
