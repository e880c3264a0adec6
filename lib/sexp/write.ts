// Prints data exactly as Guile 3's `write` does, so that peers reading with
// Guile's `read` (Cuirass) see the same bytes a Guile peer would send.

import { type Datum, isNumberSyntax, Sym } from "./datum.ts";

// Character classes from Guile's print.c. A bare symbol starts with a
// character of INITIAL and continues with SUBSEQUENT (which adds decimal
// digits and spacing/enclosing marks); anything else is written #{...}#.
const INITIAL_REGEXP =
  /^[\p{Lu}\p{Ll}\p{Lt}\p{Lm}\p{Lo}\p{Mn}\p{Nl}\p{No}\p{Pd}\p{Pc}\p{Po}\p{Sc}\p{Sm}\p{Sk}\p{So}\p{Co}]$/u;
const SUBSEQUENT_REGEXP =
  /^[\p{Lu}\p{Ll}\p{Lt}\p{Lm}\p{Lo}\p{Mn}\p{Nl}\p{No}\p{Pd}\p{Pc}\p{Po}\p{Sc}\p{Sm}\p{Sk}\p{So}\p{Co}\p{Nd}\p{Mc}\p{Me}]$/u;
const EXTENDED_RAW_REGEXP =
  /^[\p{Lu}\p{Ll}\p{Lt}\p{Lm}\p{Lo}\p{Mn}\p{Nl}\p{No}\p{Pd}\p{Pc}\p{Po}\p{Sc}\p{Sm}\p{Sk}\p{So}\p{Co}\p{Nd}\p{Mc}\p{Me}\p{Zs}]$/u;
// Characters a string shows as themselves: Guile's "graphic" set.
const GRAPHIC_REGEXP = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
// A string of printable ASCII but for `"` and `\`, as nearly every string
// of the protocol is, shows as itself (every such character is graphic):
// one test, not a Unicode class test per character.
const PLAIN_STRING_REGEXP = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** Whether each ASCII character is in `regexp`'s class, by code. */
function asciiTable(regexp: RegExp): boolean[] {
  return Array.from(
    { length: 128 },
    (_, code) => regexp.test(String.fromCharCode(code)),
  );
}
const INITIAL_ASCII = asciiTable(INITIAL_REGEXP);
const SUBSEQUENT_ASCII = asciiTable(SUBSEQUENT_REGEXP);

/** `regexp.test(ch)`, through `ascii` for an ASCII character. */
function inClass(ch: string, ascii: boolean[], regexp: RegExp): boolean {
  const code = ch.charCodeAt(0);
  return code < 128 ? ascii[code] : regexp.test(ch);
}
const NAMED_ESCAPES: Record<number, string> = {
  0x07: "\\a",
  0x08: "\\b",
  0x09: "\\t",
  0x0a: "\\n",
  0x0b: "\\v",
  0x0c: "\\f",
  0x0d: "\\r",
  0x22: '\\"',
  0x5c: "\\\\",
};

/**
 * Writes `datum` as Guile 3 `write` would (to a UTF-8 port), byte for byte.
 *
 * @throws {RangeError} for a number that is not an integer.
 */
export function writeSexp(datum: Datum): string {
  const parts: string[] = [];
  writeTo(datum, parts);
  return parts.join("");
}

function writeTo(datum: Datum, parts: string[]): void {
  if (Array.isArray(datum)) {
    parts.push("(");
    for (let i = 0; i < datum.length; i++) {
      if (i > 0) parts.push(" ");
      writeTo(datum[i], parts);
    }
    parts.push(")");
  } else if (typeof datum === "string") {
    parts.push(writeString(datum));
  } else if (typeof datum === "number") {
    if (!Number.isInteger(datum)) {
      throw new RangeError(
        `Cannot write number ${JSON.stringify(datum)}: not an integer`,
      );
    }
    // BigInt avoids exponent notation for large integers; it also turns -0
    // into 0, as Guile has no exact negative zero.
    parts.push(BigInt(datum).toString());
  } else if (typeof datum === "bigint") {
    parts.push(datum.toString());
  } else if (typeof datum === "boolean") {
    parts.push(datum ? "#t" : "#f");
  } else if (datum instanceof Sym) {
    parts.push(writeSymbol(datum.name));
  } else {
    throw new TypeError(
      `Cannot write datum: unsupported value of type ${typeof datum}`,
    );
  }
}

function writeString(text: string): string {
  if (PLAIN_STRING_REGEXP.test(text)) return `"${text}"`;
  let out = '"';
  for (const ch of wellFormed(text)) {
    const code = ch.codePointAt(0)!;
    const named = NAMED_ESCAPES[code];
    if (named !== undefined) out += named;
    else if (code === 0x20 || GRAPHIC_REGEXP.test(ch)) out += ch;
    else if (code <= 0xff) out += "\\x" + hex(code, 2);
    else if (code <= 0xffff) out += "\\u" + hex(code, 4);
    else out += "\\U" + hex(code, 6);
  }
  return out + '"';
}

function hex(code: number, width: number): string {
  return code.toString(16).padStart(width, "0");
}

/**
 * `text` with each lone surrogate (half of a UTF-16 pair, no character)
 * as U+FFFD: Guile has no such string, its reader refuses the escape of
 * one, and the UTF-8 sent would carry U+FFFD in its place anyway.
 */
function wellFormed(text: string): string {
  return text.isWellFormed() ? text : text.toWellFormed();
}

function writeSymbol(raw: string): string {
  const name = wellFormed(raw);
  if (!needsExtendedSyntax(name)) return name;
  let out = "#{";
  for (const ch of name) {
    // Guile leaves a backslash unescaped here, so its own reader drops it
    // again; we print the same bytes it does.
    if (EXTENDED_RAW_REGEXP.test(ch)) out += ch;
    else out += "\\x" + ch.codePointAt(0)!.toString(16) + ";";
  }
  return out + "}#";
}

// Mirrors symbol_has_extended_read_syntax in Guile's print.c.
function needsExtendedSyntax(name: string): boolean {
  const chars = [...name];
  if (chars.length === 0) return true;

  const first = chars[0];
  switch (first) {
    case "'":
    case "`":
    case ",":
    case '"':
    case ";":
    case "#":
      return true;
    case ":":
      // Guile returns early here: keyword-like symbols are only quoted when
      // the `keywords` read option is set, which it is not by default.
      return false;
    case ".":
      if (chars.length === 1) return true;
      if (isNumberSyntax(name)) return true;
      break;
    case "+":
    case "-":
      if (isNumberSyntax(name)) return true;
      break;
  }
  if (!inClass(first, INITIAL_ASCII, INITIAL_REGEXP)) return true;

  for (let i = 1; i < chars.length; i++) {
    const ch = chars[i];
    if (!inClass(ch, SUBSEQUENT_ASCII, SUBSEQUENT_REGEXP)) return true;
    if (ch === '"' || ch === ";" || ch === "#") return true;
  }
  return false;
}
