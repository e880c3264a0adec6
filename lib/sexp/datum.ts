// The Scheme data Lorica exchanges with Guile: lists, symbols, strings,
// integers and booleans, plus the number syntax both reader and writer need.

/** A Scheme symbol; compare with `isSym`, not `===`. */
export class Sym {
  constructor(readonly name: string) {}

  /** The symbol's name, so that symbols interpolate readably. */
  toString(): string {
    return this.name;
  }
}

/** A datum: integers are `number` when safe and `bigint` otherwise. */
export type Datum = string | number | bigint | boolean | Sym | Datum[];

/** Makes the symbol called `name`. */
export function sym(name: string): Sym {
  return new Sym(name);
}

/** Tells whether `d` is a symbol, and when `name` is given, that one. */
export function isSym(d: Datum, name?: string): d is Sym {
  return d instanceof Sym && (name === undefined || d.name === name);
}

// Guile's decimal number syntax (numbers.c, radix 10), as accepted by
// `string->number`: R5RS `#` digit placeholders, five exponent markers,
// rationals, signed inf/nan, rectangular and polar complex numbers.
const UINT = "[0-9]+#*";
const EXP = "(?:[esfdl][+-]?[0-9]+)";
const DECIMAL = `(?:\\.[0-9]+#*${EXP}?|[0-9]+#*(?:\\.[0-9]*#*)?${EXP}?)`;
const UREAL = `(?:${UINT}/${UINT}|${DECIMAL})`;
const INFNAN = "(?:inf\\.0|nan\\.0)";
const REAL = `(?:[+-]?${UREAL}|[+-]${INFNAN})`;
const IMAG = `[+-](?:${UREAL}|${INFNAN})?i`;
const NUMBER_REGEXP = new RegExp(
  `^(?:${REAL}|${REAL}@${REAL}|${REAL}?${IMAG})$`,
  "i",
);
const ZERO_DENOMINATOR_REGEXP = /\/0+#*(?:$|[+\-@i])/i;

/**
 * Tells whether Guile's `string->number` reads `text` as a number in radix
 * 10 (integers, decimals, rationals, inf/nan, complex numbers).
 */
export function isNumberSyntax(text: string): boolean {
  // A zero denominator makes Guile answer #f rather than a number.
  return NUMBER_REGEXP.test(text) && !ZERO_DENOMINATOR_REGEXP.test(text);
}
