// The `html` tagged template: every interpolated value is escaped unless already markup.

/** Markup that is already safe to place in a page. */
export class SafeHtml {
  constructor(readonly value: string) {}

  toString(): string {
    return this.value;
  }
}

/** Values an `html` template accepts; arrays are concatenated. */
export type HtmlValue =
  | SafeHtml
  | string
  | number
  | boolean
  | null
  | undefined
  | HtmlValue[];

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Builds markup from a template, escaping each interpolated value. */
export function html(
  strings: TemplateStringsArray,
  ...values: HtmlValue[]
): SafeHtml {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) {
    out += render(values[i]) + strings[i + 1];
  }
  return new SafeHtml(out);
}

/** Escapes text for element content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ESCAPES[char]);
}

/** Characters XML 1.0 allows in no form, not even escaped. */
// deno-lint-ignore no-control-regex
const XML_FORBIDDEN = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/g;

/**
 * Escapes text for an XML document (SVG badges, RSS): as
 * {@link escapeHtml}, and the characters XML 1.0 forbids even escaped (C0
 * controls other than tab and newlines, U+FFFE, U+FFFF) become U+FFFD, so
 * that a hostile job or specification name cannot make the document
 * unreadable.
 */
export function escapeXml(text: string): string {
  return escapeHtml(text).replace(XML_FORBIDDEN, "\uFFFD");
}

/** Encodes one URL path segment (a spec or job name) for an href. */
export function pathSegment(text: string | number): string {
  return encodeURIComponent(String(text));
}

function render(value: HtmlValue): string {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join("");
  // false and nullish render as nothing, so `cond && html`...`` works.
  if (value === null || value === undefined || value === false) return "";
  return escapeHtml(String(value));
}
