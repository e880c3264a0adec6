// libgcrypt S-expressions: the canonical and "advanced" syntaxes used by
// Guix key files, the ACL and narinfo signatures (not Guile's reader syntax).

/** An atom is a byte string; a list holds atoms and lists. */
export type GcryptSexp = Uint8Array | GcryptSexp[];

/** Limits for {@linkcode parseGcryptSexp}. */
export interface ParseGcryptSexpOptions {
  /** Largest accepted input in bytes; default 1 MiB. */
  maxBytes?: number;
  /** Deepest accepted list nesting; default 64. */
  maxDepth?: number;
}

/** Thrown for input that is not one well-formed S-expression. */
export class GcryptSexpError extends SyntaxError {
  constructor(message: string, readonly offset: number) {
    super(message);
    this.name = "GcryptSexpError";
  }
}

const DEFAULTS = {
  maxBytes: 1 << 20,
  maxDepth: 64,
} satisfies Required<ParseGcryptSexpOptions>;

const TOKEN_SPECIALS = "-./_:*+=";
const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);
// Escapes libgcrypt writes and reads inside quoted strings.
const ESCAPES: Record<string, number> = {
  b: 0x08,
  t: 0x09,
  v: 0x0b,
  n: 0x0a,
  f: 0x0c,
  r: 0x0d,
  '"': 0x22,
  "'": 0x27,
  "\\": 0x5c,
};
const ESCAPED_BYTES = new Map(
  Object.entries(ESCAPES).map(([letter, byte]) => [byte, letter]),
);
const BASE64_REGEXP =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const encoder = new TextEncoder();

/**
 * Parses one list in canonical (`3:abc`) or advanced syntax (tokens,
 * `"quoted"`, `#HEX#`, `|base64|`, length-prefixed forms), ignoring whitespace.
 * Strings are read as UTF-8.
 * @throws {GcryptSexpError} on malformed input or exceeded limits.
 */
export function parseGcryptSexp(
  input: string | Uint8Array,
  options: ParseGcryptSexpOptions = {},
): GcryptSexp {
  const { maxBytes, maxDepth } = { ...DEFAULTS, ...options };
  const bytes = typeof input === "string" ? encoder.encode(input) : input;
  if (bytes.length > maxBytes) {
    throw new GcryptSexpError(
      `Cannot parse S-expression: ${bytes.length} bytes exceed the limit of ${maxBytes}`,
      maxBytes,
    );
  }

  const reader = new Reader(bytes, maxDepth);
  reader.skipWhitespace();
  if (reader.peek() !== 0x28) reader.fail('expected "("');
  const result = reader.readList(1);
  reader.skipWhitespace();
  if (reader.pos < bytes.length) reader.fail("trailing data after the list");
  return result;
}

/**
 * Prints in libgcrypt's advanced layout (`gcry_sexp_sprint` mode 3): nested
 * lists on their own indented lines, closing parentheses of such lists on
 * their own line, binary atoms as `#UPPERHEX#`, a final newline. Atoms with
 * non-ASCII bytes are always printed in hex so the result is plain ASCII.
 */
export function formatAdvanced(sexp: GcryptSexp): string {
  const out: string[] = [];
  writeAdvanced(sexp, 0, out);
  out.push("\n");
  return out.join("");
}

/** Serialises to the canonical form, e.g. `(3:abc2:de)`. */
export function formatCanonical(sexp: GcryptSexp): Uint8Array {
  const chunks: Uint8Array[] = [];
  writeCanonical(sexp, chunks);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

class Reader {
  pos = 0;
  constructor(readonly bytes: Uint8Array, readonly maxDepth: number) {}

  peek(): number | undefined {
    return this.bytes[this.pos];
  }

  fail(what: string, at = this.pos): never {
    throw new GcryptSexpError(
      `Cannot parse S-expression: ${what} at offset ${at}`,
      at,
    );
  }

  skipWhitespace(): void {
    while (
      this.pos < this.bytes.length && WHITESPACE.has(this.bytes[this.pos])
    ) {
      this.pos++;
    }
  }

  readList(depth: number): GcryptSexp[] {
    if (depth > this.maxDepth) {
      this.fail(`nesting deeper than ${this.maxDepth}`);
    }
    const start = this.pos;
    this.pos++; // "("
    const items: GcryptSexp[] = [];
    while (true) {
      this.skipWhitespace();
      const c = this.peek();
      if (c === undefined) this.fail("unclosed list", start);
      if (c === 0x29) {
        this.pos++;
        return items;
      }
      items.push(c === 0x28 ? this.readList(depth + 1) : this.readAtom());
    }
  }

  readAtom(): Uint8Array {
    const c = this.bytes[this.pos];
    if (isDigit(c)) return this.readPrefixed();
    if (c === 0x22) return this.readQuoted();
    if (c === 0x23) return this.readHex();
    if (c === 0x7c) return this.readBase64();
    if (isTokenStart(c)) return this.readToken();
    return this.fail(
      `unexpected character ${JSON.stringify(String.fromCharCode(c))}`,
    );
  }

  readPrefixed(): Uint8Array {
    const start = this.pos;
    while (isDigit(this.peek())) this.pos++;
    const digits = new TextDecoder().decode(
      this.bytes.subarray(start, this.pos),
    );
    if (digits.length > 1 && digits.startsWith("0")) {
      this.fail("length with a leading zero", start);
    }
    const length = Number(digits);
    const kind = this.peek();
    if (kind === 0x3a) { // ":" verbatim bytes
      this.pos++;
      if (length > this.bytes.length - this.pos) {
        this.fail(`length ${length} runs past the end`, start);
      }
      const atom = this.bytes.slice(this.pos, this.pos + length);
      this.pos += length;
      return atom;
    }
    if (kind === 0x22 || kind === 0x23 || kind === 0x7c) {
      const atom = this.readAtom();
      if (atom.length !== length) {
        this.fail(
          `length ${length} does not match ${atom.length} bytes`,
          start,
        );
      }
      return atom;
    }
    return this.fail("bad length prefix", start);
  }

  readToken(): Uint8Array {
    const start = this.pos;
    while (this.pos < this.bytes.length && isTokenByte(this.bytes[this.pos])) {
      this.pos++;
    }
    return this.bytes.slice(start, this.pos);
  }

  readQuoted(): Uint8Array {
    const start = this.pos++;
    const out: number[] = [];
    while (true) {
      const c = this.peek();
      if (c === undefined) this.fail("unclosed string", start);
      this.pos++;
      if (c === 0x22) return Uint8Array.from(out);
      if (c !== 0x5c) {
        out.push(c);
        continue;
      }
      this.readEscape(out);
    }
  }

  readEscape(out: number[]): void {
    const at = this.pos - 1;
    const c = this.peek();
    if (c === undefined) this.fail("unclosed string", at);
    const letter = String.fromCharCode(c);
    this.pos++;
    if (letter in ESCAPES) {
      out.push(ESCAPES[letter]);
    } else if (c === 0x0a || c === 0x0d) {
      // Backslash-newline continues the string on the next line.
      const next = this.peek();
      if ((next === 0x0a || next === 0x0d) && next !== c) this.pos++;
    } else if (letter === "x") {
      const hex = this.take(2);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) this.fail("bad \\x escape", at);
      out.push(parseInt(hex, 16));
    } else if (c >= 0x30 && c <= 0x37) {
      this.pos--;
      const oct = this.take(3);
      if (!/^[0-7]{3}$/.test(oct) || parseInt(oct, 8) > 0xff) {
        this.fail("bad octal escape", at);
      }
      out.push(parseInt(oct, 8));
    } else {
      this.fail(`unknown escape ${JSON.stringify("\\" + letter)}`, at);
    }
  }

  readHex(): Uint8Array {
    const start = this.pos++;
    const digits: number[] = [];
    while (true) {
      const c = this.peek();
      if (c === undefined) this.fail("unclosed hex string", start);
      this.pos++;
      if (c === 0x23) break;
      if (WHITESPACE.has(c)) continue;
      const v = hexValue(c);
      if (v < 0) this.fail("bad hex digit", this.pos - 1);
      digits.push(v);
    }
    if (digits.length % 2 !== 0) this.fail("odd number of hex digits", start);
    const out = new Uint8Array(digits.length / 2);
    for (let i = 0; i < out.length; i++) {
      out[i] = digits[2 * i] * 16 + digits[2 * i + 1];
    }
    return out;
  }

  readBase64(): Uint8Array {
    const start = this.pos++;
    const end = this.bytes.indexOf(0x7c, this.pos);
    if (end < 0) this.fail("unclosed base64 string", start);
    const text = String.fromCharCode(...this.bytes.subarray(this.pos, end));
    if (!BASE64_REGEXP.test(text)) this.fail("bad base64", start);
    this.pos = end + 1;
    return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  }

  take(n: number): string {
    const s = String.fromCharCode(
      ...this.bytes.subarray(this.pos, this.pos + n),
    );
    this.pos += n;
    return s;
  }
}

function writeAdvanced(sexp: GcryptSexp, indent: number, out: string[]): void {
  // Mirrors libgcrypt's printer: each opening parenthesis below the top
  // starts a new line; an atom is followed by a space unless a ")" comes
  // next; a ")" is followed by a newline unless "(" or the end comes next.
  if (!Array.isArray(sexp)) {
    out.push(formatAtom(sexp));
    return;
  }
  if (indent > 0) out.push("\n" + " ".repeat(indent));
  out.push("(");
  sexp.forEach((item, i) => {
    writeAdvanced(item, indent + 1, out);
    const next = sexp[i + 1];
    if (!Array.isArray(item)) {
      if (next !== undefined) out.push(" ");
    } else if (next === undefined || !Array.isArray(next)) {
      out.push("\n" + " ".repeat(indent + 1));
    }
  });
  out.push(")");
}

function formatAtom(atom: Uint8Array): string {
  if (atom.length === 0) return '""';
  const printable = atom.every((b) =>
    (b >= 0x20 && b < 0x7f) || ESCAPED_BYTES.has(b)
  );
  if (!printable) {
    return "#" + Array.from(atom, (b) => b.toString(16).padStart(2, "0"))
      .join("").toUpperCase() +
      "#";
  }
  if (!isDigit(atom[0]) && atom.every(isTokenByte)) {
    return String.fromCharCode(...atom);
  }
  let s = '"';
  for (const b of atom) {
    const letter = ESCAPED_BYTES.get(b);
    s += letter === undefined ? String.fromCharCode(b) : "\\" + letter;
  }
  return s + '"';
}

function writeCanonical(sexp: GcryptSexp, chunks: Uint8Array[]): void {
  if (!Array.isArray(sexp)) {
    chunks.push(encoder.encode(`${sexp.length}:`), sexp);
    return;
  }
  chunks.push(Uint8Array.of(0x28));
  for (const item of sexp) writeCanonical(item, chunks);
  chunks.push(Uint8Array.of(0x29));
}

function isDigit(c: number | undefined): c is number {
  return c !== undefined && c >= 0x30 && c <= 0x39;
}

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

function isTokenStart(c: number): boolean {
  return isAlpha(c) || TOKEN_SPECIALS.includes(String.fromCharCode(c));
}

function isTokenByte(c: number): boolean {
  return isTokenStart(c) || isDigit(c);
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}
