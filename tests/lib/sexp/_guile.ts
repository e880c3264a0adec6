// Test helper: runs Guile 3 as an oracle when it is installed.

import { type Datum, Sym } from "../../../lib/sexp/datum.ts";

/** Whether a `guile` executable is on PATH. */
export const guileAvailable: boolean = (() => {
  try {
    return new Deno.Command("guile", { args: ["--version"], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();

/**
 * Runs `program` (Scheme, stdin and stdout set to UTF-8) with `input` on
 * standard input and returns standard output.
 */
export async function runGuile(
  program: string,
  input: string,
): Promise<string> {
  const prelude = `(set-port-encoding! (current-input-port) "UTF-8")
(set-port-encoding! (current-output-port) "UTF-8")`;
  const child = new Deno.Command("guile", {
    args: ["--no-auto-compile", "-c", prelude + program],
    env: { LANG: "C.UTF-8", GUILE_AUTO_COMPILE: "0" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  if (!success) {
    throw new Error(`guile failed: ${new TextDecoder().decode(stderr)}`);
  }
  return new TextDecoder().decode(stdout);
}

/** Reads every datum on stdin with Guile and writes each on its own line. */
export const GUILE_REWRITE = `
(let loop ()
  (let ((x (read)))
    (unless (eof-object? x)
      (display (object->string x))
      (newline)
      (loop))))`;

/** A small seeded PRNG (mulberry32), so corpora are reproducible. */
export function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return function next(n: number): number {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296 * n) | 0;
  };
}

// Assigned characters only: Guile's libunistring and V8 may know different
// Unicode versions, which matters only for unassigned code points.
const STRING_CHARS = [
  ..."abcXYZ 019\"\\'()#;|{}[]@:.+-",
  "\n",
  "\t",
  "\r",
  "\x00",
  "\x07",
  "\x1b",
  "\x7f",
  "\x85",
  "\xa0",
  "\xad",
  "é",
  "λ",
  "\u2028",
  "\ufeff",
  "\ue000",
  "😀",
  "\u{10ffff}",
];
// No backslash and no leading colon: Guile's own write/read loses those.
const SYMBOL_CHARS = [
  ..."abcXYZ019+-.#()[]{}\"';`,|@<>=*/!?$%&~^_",
  " ",
  "\t",
  "\n",
  "\xa0",
  "é",
  "λ",
  "\u0301",
  "\u0660",
  "«",
  "»",
  "\xad",
  "\ue000",
];

/** A random datum of bounded size drawn with `next`. */
export function randomDatum(next: (n: number) => number, depth = 0): Datum {
  const kind = next(depth >= 3 ? 5 : 7);
  const pick = (pool: string[], max: number) =>
    Array.from({ length: next(max + 1) }, () => pool[next(pool.length)])
      .join("");
  switch (kind) {
    case 0:
      return pick(STRING_CHARS, 8);
    case 1: {
      let name = pick(SYMBOL_CHARS, 5);
      if (name.startsWith(":")) name = "x" + name;
      return new Sym(name);
    }
    case 2:
      return next(2001) - 1000;
    case 3:
      return next(2) === 0
        ? BigInt(next(1000)) * 10n ** 20n + 7n
        : -(2n ** 64n) - BigInt(next(1000));
    case 4:
      return next(2) === 0;
    default:
      return Array.from(
        { length: next(5) },
        () => randomDatum(next, depth + 1),
      );
  }
}
