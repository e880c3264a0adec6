// NAR (Nix ARchive) pieces shared by the dumper and the restorer.

import type { Hash } from "node:crypto";
import { encodeNixBase32 } from "./base32.ts";

/** NAR hash and size, as a narinfo or the daemon records them. */
export interface NarDigest {
  /** `sha256:<nix-base32>`. */
  narHash: string;
  narSize: number;
}

/** Thrown for bytes that are not a well-formed, safe NAR. */
export class NarFormatError extends SyntaxError {
  constructor(
    message: string,
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "NarFormatError";
  }
}

/** The string every NAR starts with. */
export const NAR_MAGIC = "nix-archive-1";

/** Longest name, symlink target or keyword string the restorer accepts. */
export const NAR_MAX_STRING_LENGTH = 4096;

/** Longest entry name a file system takes (NAME_MAX). */
export const NAR_MAX_NAME_BYTES = 255;

/** Longest path or symlink target a system call takes (PATH_MAX less the NUL). */
export const NAR_MAX_PATH_BYTES = 4095;

/** Deepest directory nesting the restorer accepts. */
export const NAR_MAX_DEPTH = 512;

/** Zero bytes that pad a string of `length` bytes to a multiple of 8. */
export function narPadding(length: number): number {
  return (8 - length % 8) % 8;
}

/** `sha256:<nix-base32>` of a finished SHA-256 hash. */
export function formatNarHash(hash: Hash): string {
  return "sha256:" + encodeNixBase32(new Uint8Array(hash.digest()));
}

/** Orders names as NARs do: bytewise, shorter prefix first. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}
