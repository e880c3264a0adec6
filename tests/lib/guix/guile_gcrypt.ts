// Test helper: runs one batched Guile script against libgcrypt through
// guile-gcrypt's (gcrypt pk-crypto), the module Guix itself signs with.

/** Scheme definitions every batch script may use. */
export const SCHEME_PRELUDE = `
(use-modules (gcrypt pk-crypto) (gcrypt hash) (gcrypt base16) (gcrypt base64)
             (rnrs bytevectors) (ice-9 match))
(define (emit label text) (display "==") (display label) (newline)
  (display text) (newline))
(define (unhex s) (base16-string->bytevector (string-downcase s)))
(define (hash-data hex) (bytevector->hash-data (unhex hex) #:key-type 'ecc))
(define (sexp-text sexp) (canonical-sexp->string sexp))
(define (bool x) (if x "#t" "#f"))
(define (safe-verify sig data key)
  (catch 'gcry-error (lambda () (bool (verify sig data key)))
    (lambda args "error")))
`;

/**
 * Whether `guile` runs and can load (gcrypt pk-crypto); tests that need
 * libgcrypt use `ignore: !guileGcryptAvailable`.
 */
export const guileGcryptAvailable = await probe();

/**
 * Runs a script (after {@linkcode SCHEME_PRELUDE}) and returns the blocks it
 * printed with `(emit label text)`, keyed by label.
 */
export async function runGuile(script: string): Promise<Map<string, string>> {
  const path = await Deno.makeTempFile({ suffix: ".scm" });
  try {
    await Deno.writeTextFile(path, SCHEME_PRELUDE + script);
    const output = await new Deno.Command("guile", {
      args: ["--no-auto-compile", "-s", path],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { GUILE_AUTO_COMPILE: "0" },
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    if (!output.success) {
      throw new Error(
        `guile failed: ${new TextDecoder().decode(output.stderr).slice(-2000)}`,
      );
    }
    const blocks = new Map<string, string>();
    for (const block of stdout.split(/^==/m).slice(1)) {
      const newline = block.indexOf("\n");
      blocks.set(
        block.slice(0, newline),
        block.slice(newline + 1).replace(/\n$/, ""),
      );
    }
    return blocks;
  } finally {
    await Deno.remove(path);
  }
}

/** A Scheme string literal for ASCII text. */
export function schemeString(text: string): string {
  return JSON.stringify(text);
}

/** Upper-case hex of bytes, as libgcrypt prints them. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")
    .toUpperCase();
}

/** Bytes of a hex string. */
export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

async function probe(): Promise<boolean> {
  try {
    const output = await new Deno.Command("guile", {
      args: ["--no-auto-compile", "-c", "(use-modules (gcrypt pk-crypto))"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
      env: { GUILE_AUTO_COMPILE: "0" },
    }).output();
    return output.success;
  } catch {
    return false;
  }
}
