// Text holding a NUL character (U+0000): PostgreSQL's text and jsonb cannot
// store it while SQLite can, so each place where outside text enters
// (specifications, evaluator output, the store itself) refuses it the same
// way on both backends, naming the field. So is text holding a lone UTF-16
// surrogate (JSON's "\ud800" reads as one): it is no Unicode text, and both
// drivers would store U+FFFD in its place, another text than the one given
// (a job so named was then not found again within its own registration).

/**
 * A string holding a NUL character or a lone surrogate, and the path of
 * its field.
 */
export interface NulText {
  /** Such as `channels[0].url`; "" for the value itself. */
  path: string;
  text: string;
}

/** Characters of a shown value around its first NUL. */
const SHOWN_CHARS = 120;

/**
 * The first string in `value` (a string, or arrays and plain objects of
 * them, keys included) that holds a NUL character or a lone surrogate, or
 * null.
 */
export function findNul(value: unknown, path = ""): NulText | null {
  // The store checks every argument of every call, a 50,000-job
  // registration included: the walk builds no path until it finds a NUL.
  const trail: (string | number)[] = [];
  const text = nulIn(value, trail);
  if (text === null) return null;
  let field = path;
  for (const step of trail.reverse()) {
    if (typeof step === "number") field += `[${step}]`;
    else field = field === "" ? step : `${field}.${step}`;
  }
  return { path: field, text };
}

/**
 * The first string holding a NUL in `value`, or null; on a find, `trail`
 * holds the keys leading to it, innermost first.
 */
function nulIn(value: unknown, trail: (string | number)[]): string | null {
  if (typeof value === "string") return unstorable(value) ? value : null;
  if (typeof value !== "object" || value === null) return null;
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      const text = nulIn(value[index], trail);
      if (text !== null) {
        trail.push(index);
        return text;
      }
    }
    return null;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (unstorable(key)) {
      trail.push(key);
      return key;
    }
    const text = nulIn((value as Record<string, unknown>)[key], trail);
    if (text !== null) {
      trail.push(key);
      return text;
    }
  }
  return null;
}

/** Whether `text` holds a NUL character or a lone surrogate. */
function unstorable(text: string): boolean {
  return text.includes("\0") || !text.isWellFormed();
}

/** Where the first NUL or lone surrogate of `text` is; -1 if none. */
function firstUnstorable(text: string): number {
  const nul = text.indexOf("\0");
  const lone = LONE_SURROGATE_REGEXP.exec(text)?.index ?? -1;
  if (nul < 0) return lone;
  return lone < 0 ? nul : Math.min(nul, lone);
}

/** A surrogate without its other half. */
const LONE_SURROGATE_REGEXP =
  /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * `text` quoted for a message, its NUL, lone surrogates and other control
 * characters escaped (`"a\u0000b"`), cut to the part around the first NUL
 * or lone surrogate when long.
 */
export function showNulText(text: string): string {
  if (text.length <= SHOWN_CHARS) return JSON.stringify(text);
  const start = Math.max(0, firstUnstorable(text) - SHOWN_CHARS / 2);
  const end = start + SHOWN_CHARS;
  return JSON.stringify(
    `${start > 0 ? "…" : ""}${text.slice(start, end)}${
      end < text.length ? "…" : ""
    }`,
  );
}

/**
 * `field "<path>" holds a NUL character (U+0000): "<text>"` (or a lone
 * UTF-16 surrogate), without the field when the path is "".
 */
export function describeNul({ path, text }: NulText): string {
  const field = path === "" ? "" : `field ${JSON.stringify(path)} `;
  const what = text.includes("\0")
    ? "a NUL character (U+0000)"
    : "a lone UTF-16 surrogate, no Unicode character";
  return `${field}holds ${what}: ${showNulText(text)}`;
}
