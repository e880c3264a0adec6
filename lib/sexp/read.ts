// Reads the s-expressions Guile 3 writes (and, in Scheme mode, the comment
// and quote syntax found in hand-written Scheme files), with size limits.

import { type Datum, isNumberSyntax, sym } from "./datum.ts";

/** Where a list starts in the text (offset in UTF-16 code units). */
export interface Position {
  offset: number;
  /** 1-based. */
  line: number;
  /** 1-based, in UTF-16 code units. */
  column: number;
}

/** Input that is not a well-formed datum, or exceeds a limit. */
export class SexpSyntaxError extends SyntaxError {
  /** Offset in the decoded text, in UTF-16 code units. */
  offset: number;
  line: number;
  column: number;

  constructor(message: string, position: Position, options?: ErrorOptions) {
    super(message, options);
    this.name = "SexpSyntaxError";
    this.offset = position.offset;
    this.line = position.line;
    this.column = position.column;
  }
}

/** Options of `readSexp` and `readAllSexps`. */
export interface ReadOptions {
  /** Deepest list nesting accepted; default 64. */
  maxDepth?: number;
  /** Largest input accepted, in UTF-8 bytes; default 16 MiB. */
  maxLength?: number;
  /**
   * Accept Scheme source syntax: `;` comments, `#| |#`, `#!...!#`,
   * `#;datum`, and `'x` `` `x `` `,x` `,@x` as (quote x) and friends.
   * Default false: only what Guile's `write` produces.
   */
  scheme?: boolean;
  /** Record where each list starts, for `positionOf`; default false. */
  positions?: boolean;
}

const DEFAULT_MAX_DEPTH = 64;
const DEFAULT_MAX_LENGTH = 16 * 1024 * 1024;
const INTEGER_REGEXP = /^[+-]?[0-9]+$/;
const HEX_REGEXP = /^[0-9a-fA-F]+$/;
// What ends a run of plain characters in a string: its closing quote or a
// backslash. One search for whichever comes first keeps reading linear: a
// search for each would scan on to a far (or missing) one at every escape
// and every string, at a cost growing with the square of the input.
const STRING_STOP_REGEXP = /["\\]/g;
const QUOTES: Record<string, string> = {
  "'": "quote",
  "`": "quasiquote",
  ",": "unquote",
  ",@": "unquote-splicing",
};
const STRING_ESCAPES: Record<string, string> = {
  a: "\x07",
  b: "\b",
  t: "\t",
  n: "\n",
  v: "\v",
  f: "\f",
  r: "\r",
  "0": "\0",
  "\\": "\\",
  '"': '"',
};
const HEX_ESCAPE_WIDTH: Record<string, number> = { x: 2, u: 4, U: 6 };
// One decoder for every input: each decode is whole (not streamed), so none
// leaves state for the next, and a message no longer makes a decoder.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const positions = new WeakMap<Datum[], Position>();

/**
 * Reads the first datum of `input`; what follows it is ignored, as Guile's
 * `read` (and so Cuirass) ignores it.
 *
 * @throws {SexpSyntaxError} for empty, malformed or oversized input.
 */
export function readSexp(
  input: string | Uint8Array,
  options: ReadOptions = {},
): Datum {
  const reader = new Reader(decode(input, options), options);
  const datum = reader.next();
  if (datum === undefined) return reader.fail("no datum in input", 0);
  return datum;
}

/**
 * Reads every datum of `input`, in order.
 *
 * @throws {SexpSyntaxError} for malformed or oversized input.
 */
export function readAllSexps(
  input: string | Uint8Array,
  options: ReadOptions = {},
): Datum[] {
  const reader = new Reader(decode(input, options), options);
  const data: Datum[] = [];
  for (;;) {
    const datum = reader.next();
    if (datum === undefined) return data;
    data.push(datum);
  }
}

/** Where `list` started, if it was read with `positions: true`. */
export function positionOf(list: Datum[]): Position | undefined {
  return positions.get(list);
}

function decode(input: string | Uint8Array, options: ReadOptions): string {
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  const start = { offset: 0, line: 1, column: 1 };
  const tooLong = () =>
    new SexpSyntaxError(
      `Cannot read s-expression: input longer than maxLength ${maxLength} bytes`,
      start,
    );

  if (typeof input === "string") {
    // Each UTF-16 code unit takes at least one UTF-8 byte, at most three.
    if (input.length > maxLength) throw tooLong();
    if (
      input.length * 3 > maxLength &&
      new TextEncoder().encode(input).length > maxLength
    ) throw tooLong();
    return input;
  }
  if (input.length > maxLength) throw tooLong();
  try {
    return UTF8.decode(input);
  } catch (error) {
    throw new SexpSyntaxError(
      "Cannot read s-expression: input is not valid UTF-8",
      start,
      { cause: error },
    );
  }
}

type Frame =
  | { kind: "list"; items: Datum[]; close: string; start: number }
  | { kind: "quote"; name: string; start: number }
  | { kind: "skip"; start: number };

// Reads data one at a time with an explicit stack, so that deep input costs
// no native stack and the depth limit is a plain comparison.
class Reader {
  #text: string;
  #pos = 0;
  #maxDepth: number;
  #scheme: boolean;
  #positions: boolean;
  // Memo for locate(): the line and line start of the last offset asked.
  #lineAt = { offset: 0, line: 1, lineStart: 0 };

  constructor(text: string, options: ReadOptions) {
    this.#text = text;
    this.#maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.#scheme = options.scheme ?? false;
    this.#positions = options.positions ?? false;
  }

  /** The next datum, or undefined at the end of the text. */
  next(): Datum | undefined {
    const stack: Frame[] = [];
    for (;;) {
      this.#skipAtmosphere();
      const text = this.#text;
      const start = this.#pos;
      if (start >= text.length) {
        if (stack.length === 0) return undefined;
        const open = stack[stack.length - 1];
        const what = open.kind === "list"
          ? "list"
          : open.kind === "quote"
          ? `"${open.name}" prefix`
          : "datum comment";
        const at = this.locate(open.start);
        this.fail(
          `unexpected end of input: ${what} at ${at.line}:${at.column} is not closed`,
          start,
        );
      }

      const ch = text[start];
      let datum: Datum;
      if (ch === "(" || ch === "[") {
        this.#push(stack, {
          kind: "list",
          items: [],
          close: ch === "(" ? ")" : "]",
          start,
        });
        this.#pos++;
        continue;
      } else if (ch === ")" || ch === "]") {
        const top = stack[stack.length - 1];
        if (top === undefined || top.kind !== "list") {
          this.fail(`unexpected ${JSON.stringify(ch)}`, start);
        }
        if (top.close !== ch) {
          this.fail(
            `${JSON.stringify(ch)} closes a list opened with ${
              JSON.stringify(top.close === ")" ? "(" : "[")
            }`,
            start,
          );
        }
        this.#pos++;
        stack.pop();
        datum = top.items;
        if (this.#positions) positions.set(datum, this.locate(top.start));
      } else if (ch === '"') {
        datum = this.#readString();
      } else if (this.#scheme && (ch === "'" || ch === "`" || ch === ",")) {
        const prefix = ch === "," && text[start + 1] === "@" ? ",@" : ch;
        this.#pos += prefix.length;
        this.#push(stack, { kind: "quote", name: QUOTES[prefix], start });
        continue;
      } else if (ch === "#" && text[start + 1] === "{") {
        datum = sym(this.#readExtendedSymbol());
      } else if (this.#scheme && ch === "#" && text[start + 1] === ";") {
        this.#pos += 2;
        this.#push(stack, { kind: "skip", start });
        continue;
      } else {
        datum = this.#readAtom();
      }

      // Hand the finished datum to the frames waiting for it.
      for (;;) {
        const top = stack[stack.length - 1];
        if (top === undefined) return datum;
        if (top.kind === "list") {
          top.items.push(datum);
          break;
        }
        stack.pop();
        if (top.kind === "skip") break;
        datum = [sym(top.name), datum];
        if (this.#positions) positions.set(datum, this.locate(top.start));
      }
    }
  }

  /** Throws a SexpSyntaxError located at `offset`. */
  fail(what: string, offset: number): never {
    const at = this.locate(offset);
    throw new SexpSyntaxError(
      `Cannot read s-expression at ${at.line}:${at.column}: ${what}`,
      at,
    );
  }

  /** The line and column of `offset`. */
  locate(offset: number): Position {
    let memo = this.#lineAt;
    if (offset < memo.offset) memo = { offset: 0, line: 1, lineStart: 0 };
    let { line, lineStart } = memo;
    for (let i = memo.offset; i < offset; i++) {
      if (this.#text.charCodeAt(i) === 10) {
        line++;
        lineStart = i + 1;
      }
    }
    this.#lineAt = { offset, line, lineStart };
    return { offset, line, column: offset - lineStart + 1 };
  }

  #push(stack: Frame[], frame: Frame): void {
    if (stack.length >= this.#maxDepth) {
      this.fail(
        `nesting deeper than maxDepth ${this.#maxDepth}`,
        frame.start,
      );
    }
    stack.push(frame);
  }

  // Skips whitespace, and comments in Scheme mode.
  #skipAtmosphere(): void {
    const text = this.#text;
    while (this.#pos < text.length) {
      const ch = text[this.#pos];
      if (isWhitespace(ch)) {
        this.#pos++;
      } else if (ch === ";") {
        if (!this.#scheme) this.fail("comments are not allowed", this.#pos);
        const end = text.indexOf("\n", this.#pos);
        this.#pos = end < 0 ? text.length : end + 1;
      } else if (this.#scheme && ch === "#" && text[this.#pos + 1] === "|") {
        this.#skipBlockComment();
      } else if (this.#scheme && ch === "#" && text[this.#pos + 1] === "!") {
        const end = text.indexOf("!#", this.#pos + 2);
        if (end < 0) this.fail("unterminated #! comment", this.#pos);
        this.#pos = end + 2;
      } else {
        return;
      }
    }
  }

  // `#| ... |#` comments nest.
  #skipBlockComment(): void {
    const text = this.#text;
    const start = this.#pos;
    let depth = 0;
    let i = start;
    while (i < text.length) {
      if (text[i] === "#" && text[i + 1] === "|") {
        depth++;
        i += 2;
      } else if (text[i] === "|" && text[i + 1] === "#") {
        depth--;
        i += 2;
        if (depth === 0) {
          this.#pos = i;
          return;
        }
      } else {
        i++;
      }
    }
    this.fail("unterminated #| comment", start);
  }

  #readString(): string {
    const text = this.#text;
    const start = this.#pos;
    let out = "";
    let i = start + 1;
    for (;;) {
      STRING_STOP_REGEXP.lastIndex = i;
      const stop = STRING_STOP_REGEXP.exec(text)?.index ?? -1;
      if (stop < 0) this.fail("unterminated string", start);
      if (text[stop] === '"') {
        out += text.slice(i, stop);
        this.#pos = stop + 1;
        return out;
      }
      const backslash = stop;
      out += text.slice(i, backslash);
      const escape = text[backslash + 1];
      i = backslash + 2;
      if (escape === undefined) this.fail("unterminated string", start);
      if (escape === "\n") continue; // line continuation
      const simple = STRING_ESCAPES[escape];
      if (simple !== undefined) {
        out += simple;
        continue;
      }
      const width = HEX_ESCAPE_WIDTH[escape];
      const digits = text.slice(i, i + (width ?? 0));
      if (
        width === undefined || digits.length !== width ||
        !HEX_REGEXP.test(digits)
      ) {
        this.fail(
          `invalid escape ${
            JSON.stringify(text.slice(backslash, backslash + 2))
          } in string`,
          backslash,
        );
      }
      out += this.#codePoint(parseInt(digits, 16), backslash);
      i += width;
    }
  }

  // `#{...}#`: Guile's syntax for symbols that cannot be written bare.
  // Inside, `\xHEX;` is a code point and a backslash keeps the next
  // character as it is.
  #readExtendedSymbol(): string {
    const text = this.#text;
    const start = this.#pos;
    let out = "";
    let i = start + 2;
    for (;;) {
      if (i >= text.length) this.fail("unterminated #{ symbol", start);
      const ch = text[i];
      if (ch === "}" && text[i + 1] === "#") {
        this.#pos = i + 2;
        return out;
      }
      if (ch !== "\\") {
        out += ch;
        i++;
        continue;
      }
      if (text[i + 1] === "x") {
        const end = text.indexOf(";", i + 2);
        const digits = end < 0 ? "" : text.slice(i + 2, end);
        if (!HEX_REGEXP.test(digits) || digits.length > 8) {
          this.fail("invalid \\x escape in #{ symbol", i);
        }
        out += this.#codePoint(parseInt(digits, 16), i);
        i = end + 1;
      } else {
        if (i + 1 >= text.length) this.fail("unterminated #{ symbol", start);
        out += text[i + 1];
        i += 2;
      }
    }
  }

  #codePoint(code: number, offset: number): string {
    if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      this.fail(
        `escape names ${JSON.stringify(code.toString(16))}, not a character`,
        offset,
      );
    }
    return String.fromCodePoint(code);
  }

  // A bare token: integer, boolean or symbol.
  #readAtom(): Datum {
    const text = this.#text;
    const start = this.#pos;
    let end = start;
    while (end < text.length && !isDelimiter(text[end])) end++;
    const token = text.slice(start, end);
    this.#pos = end;

    if (token[0] === "#") {
      switch (token.toLowerCase()) {
        case "#t":
        case "#true":
          return true;
        case "#f":
        case "#false":
          return false;
      }
      this.fail(`unsupported syntax ${quoteToken(token)}`, start);
    }
    if (isNumberSyntax(token)) {
      if (!INTEGER_REGEXP.test(token)) {
        this.fail(`unsupported number ${quoteToken(token)}`, start);
      }
      const big = BigInt(token);
      if (
        big >= BigInt(Number.MIN_SAFE_INTEGER) &&
        big <= BigInt(Number.MAX_SAFE_INTEGER)
      ) return Number(big);
      return big;
    }
    if (token === ".") this.fail("dotted pairs are not supported", start);
    if (
      !this.#scheme && (token[0] === "'" || token[0] === "`" ||
        token[0] === ",")
    ) {
      this.fail(`quote syntax ${quoteToken(token)} is not allowed`, start);
    }
    return sym(token);
  }
}

function isWhitespace(ch: string): boolean {
  return ch === " " || ch === "\n" || ch === "\t" || ch === "\r" ||
    ch === "\f" || ch === "\v";
}

// Guile ends a bare token at whitespace, parentheses, brackets, a string
// quote or a comment; `#`, `'`, `{` and `|` may appear inside one.
function isDelimiter(ch: string): boolean {
  return isWhitespace(ch) || ch === "(" || ch === ")" || ch === "[" ||
    ch === "]" || ch === '"' || ch === ";";
}

function quoteToken(token: string): string {
  return JSON.stringify(
    token.length > 40 ? token.slice(0, 40) + "..." : token,
  );
}
