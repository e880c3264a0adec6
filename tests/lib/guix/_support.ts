/**
 * Shared helpers for the tests in tests/lib/guix: a seeded random source,
 * tool detection and offline runs of the Nix command-line tools.
 */
import assert from "node:assert/strict";
import { toHex } from "../../../lib/guix/store_hash.ts";

/** Environment that keeps the Nix tools from reaching any substituter. */
export const OFFLINE = { NIX_CONFIG: "substituters =\n" };

/** Tells whether `command args` can be run and exits with success. */
export function commandWorks(command: string, args: string[]): boolean {
  try {
    return new Deno.Command(command, { args, stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Returns a deterministic generator of numbers in [0, 1) from `seed`. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return function next() {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Runs `command` offline, asserts it succeeded and returns its trimmed stdout. */
export function runOffline(command: string, args: string[]): string {
  const output = new Deno.Command(command, {
    args,
    stderr: "piped",
    env: OFFLINE,
  })
    .outputSync();
  assert.ok(
    output.success,
    `${command} failed: ${new TextDecoder().decode(output.stderr)}`,
  );
  return new TextDecoder().decode(output.stdout).trim();
}

/** Returns the hex form of the UTF-8 bytes of `text`. */
export function hexOf(text: string): string {
  return toHex(new TextEncoder().encode(text));
}

/** Concatenates `parts`, encoding strings as UTF-8. */
export function joinBytes(...parts: (string | Uint8Array)[]): Uint8Array {
  const encoder = new TextEncoder();
  const bytes = parts.map((p) => typeof p === "string" ? encoder.encode(p) : p);
  const all = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0));
  let offset = 0;
  for (const b of bytes) {
    all.set(b, offset);
    offset += b.length;
  }
  return all;
}
