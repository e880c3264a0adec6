// Narinfo documents as `guix publish` writes them and substituters read them.

import { decodeNixBase32 } from "./base32.ts";
import { parseStoreBasename, parseStorePath } from "./store_path.ts";

/** One way to download the NAR: a URL (relative to the cache) and its compression. */
export interface NarinfoUrl {
  url: string;
  /** `none` when the narinfo has no Compression line for this URL. */
  compression: string;
  fileSize: number | null;
  fileHash: string | null;
}

/** A parsed narinfo. */
export interface Narinfo {
  /** The full store path. */
  storePath: string;
  /** `sha256:<nix-base32>`. */
  narHash: string;
  narSize: number;
  /** Store basenames, in document order. */
  references: string[];
  /** Basename of the .drv, or null when absent or `unknown-deriver`. */
  deriver: string | null;
  system: string | null;
  /** The raw value after `Signature: `. */
  signature: string | null;
  urls: NarinfoUrl[];
  /** Unknown keys (e.g. `CA`), first value of each. */
  extra: Record<string, string>;
}

/** Options of `parseNarinfo`. */
export interface ParseNarinfoOptions {
  /** The store directory `StorePath` must be in, e.g. `/gnu/store`. */
  storeDir: string;
  /** Longest text accepted, in UTF-16 code units; default 1 MiB. */
  maxBytes?: number;
}

/** Thrown for a narinfo that cannot be used; `field` names the culprit. */
export class NarinfoSyntaxError extends SyntaxError {
  constructor(message: string, readonly field: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NarinfoSyntaxError";
  }
}

const DEFAULT_MAX_BYTES = 1024 * 1024;
const SINGLE_FIELDS = [
  "StorePath",
  "NarHash",
  "NarSize",
  "References",
  "Deriver",
  "System",
  "Signature",
];
const URL_FIELDS = ["URL", "Compression", "FileSize", "FileHash"];
const NAR_HASH_REGEXP = /^sha256:([0-9a-z]{52})$/;
const INTEGER_REGEXP = /^(0|[1-9][0-9]{0,15})$/;
const DEFAULT_SUPPORTED = ["none", "gzip"];

/**
 * Parses a narinfo: any field order, LF or CRLF, unknown keys kept in `extra`,
 * `URL`/`Compression`/`FileSize`/`FileHash` paired by position.
 * @throws {NarinfoSyntaxError} (and nothing else) naming the bad field.
 */
export function parseNarinfo(
  text: string,
  options: ParseNarinfoOptions,
): Narinfo {
  const { storeDir, maxBytes = DEFAULT_MAX_BYTES } = options;
  if (typeof text !== "string") {
    throw new NarinfoSyntaxError("Cannot parse narinfo: not a string", "");
  }
  if (text.length > maxBytes) {
    throw new NarinfoSyntaxError(
      `Cannot parse narinfo: ${text.length} characters exceed the limit of ${maxBytes}`,
      "",
    );
  }
  const { single, multi, extra } = splitFields(text);

  const storePath = required(single, "StorePath");
  try {
    parseStorePath(storePath, storeDir);
  } catch (error) {
    throw fieldError("StorePath", storePath, (error as Error).message, error);
  }
  const narHash = required(single, "NarHash");
  checkNarHash(narHash);
  const narSize = integer("NarSize", required(single, "NarSize"));
  const references = (single.get("References") ?? "").split(/\s+/)
    .filter((reference) => reference !== "");
  for (const reference of references) checkBasename("References", reference);
  const deriverText = single.get("Deriver");
  const deriver = deriverText === undefined || deriverText === "" ||
      deriverText === "unknown-deriver"
    ? null
    : deriverText;
  if (deriver !== null) checkBasename("Deriver", deriver);
  const urls = pairUrls(multi);

  return {
    storePath,
    narHash,
    narSize,
    references,
    deriver,
    system: single.get("System") ?? null,
    signature: single.get("Signature") ?? null,
    urls,
    extra,
  };
}

/** The signed lines, exactly as Guix writes them (note `References: ` with a trailing space when empty). */
export function narinfoSignedPart(
  info: Pick<
    Narinfo,
    "storePath" | "narHash" | "narSize" | "references" | "deriver"
  >,
): string {
  return `StorePath: ${info.storePath}\nNarHash: ${info.narHash}\nNarSize: ${info.narSize}\nReferences: ${
    info.references.join(" ")
  }\n` + (info.deriver === null ? "" : `Deriver: ${info.deriver}\n`);
}

/**
 * Writes a narinfo in Guix's layout: signed part, `Signature`, then one
 * URL/Compression/FileSize group per URL; `FileHash`, `System` and extra keys
 * (which current Guix never writes) follow so that parsing gives it back.
 */
export function formatNarinfo(info: Narinfo): string {
  let text = narinfoSignedPart(info);
  if (info.signature !== null) text += `Signature: ${info.signature}\n`;
  for (const url of info.urls) {
    text += `URL: ${url.url}\nCompression: ${url.compression}\n`;
    if (url.fileSize !== null) text += `FileSize: ${url.fileSize}\n`;
    if (url.fileHash !== null) text += `FileHash: ${url.fileHash}\n`;
  }
  if (info.system !== null) text += `System: ${info.system}\n`;
  for (const [key, value] of Object.entries(info.extra)) {
    text += `${key}: ${value}\n`;
  }
  return text;
}

/** The text before the first `Signature:` (what Guix signs), or null if unsigned. */
export function signedPrefixOf(text: string): string | null {
  const index = text.indexOf("Signature:");
  return index < 0 ? null : text.slice(0, index);
}

/**
 * Picks the URL to download among those with a supported compression: the
 * smallest when all their sizes are known, otherwise the one whose
 * compression comes first in `supported` (the preference order).
 */
export function chooseNarUrl(
  info: Narinfo,
  supported: string[] = DEFAULT_SUPPORTED,
): NarinfoUrl | null {
  const rank = (url: NarinfoUrl) => supported.indexOf(url.compression);
  const candidates = info.urls.filter((url) => rank(url) >= 0);
  if (candidates.length === 0) return null;
  const bySize = candidates.every((url) => url.fileSize !== null);
  return candidates.reduce((best, url) => {
    if (bySize && url.fileSize! !== best.fileSize!) {
      return url.fileSize! < best.fileSize! ? url : best;
    }
    return rank(url) < rank(best) ? url : best;
  });
}

function splitFields(text: string): {
  single: Map<string, string>;
  multi: [string, string][];
  extra: Record<string, string>;
} {
  const single = new Map<string, string>();
  const multi: [string, string][] = [];
  const extra: Record<string, string> = {};
  for (const rawLine of text.split("\n")) {
    const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === "") continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? "" : line.slice(0, colon).trim();
    if (key === "" || /\s/.test(key)) {
      throw new NarinfoSyntaxError(
        `Cannot parse narinfo line ${quote(line)}: not "Key: value"`,
        key,
      );
    }
    const value = line.slice(colon + 1).trim();
    if (SINGLE_FIELDS.includes(key)) {
      if (single.has(key)) {
        throw fieldError(key, value, "field appears more than once");
      }
      single.set(key, value);
    } else if (URL_FIELDS.includes(key)) {
      multi.push([key, value]);
    } else if (!Object.hasOwn(extra, key)) {
      Object.defineProperty(extra, key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
  }
  return { single, multi, extra };
}

function required(fields: Map<string, string>, key: string): string {
  const value = fields.get(key);
  if (value === undefined || value === "") {
    throw new NarinfoSyntaxError(
      `Cannot parse narinfo field ${JSON.stringify(key)}: missing`,
      key,
    );
  }
  return value;
}

function checkNarHash(value: string): void {
  const match = NAR_HASH_REGEXP.exec(value);
  if (match === null) {
    throw fieldError(
      "NarHash",
      value,
      'expected "sha256:" and 52 nix-base32 characters',
    );
  }
  try {
    decodeNixBase32(match[1]);
  } catch (error) {
    throw fieldError("NarHash", value, (error as Error).message, error);
  }
}

function integer(key: string, value: string): number {
  if (!INTEGER_REGEXP.test(value) || Number(value) > Number.MAX_SAFE_INTEGER) {
    throw fieldError(key, value, "not a non-negative integer");
  }
  return Number(value);
}

function checkBasename(key: string, value: string): void {
  try {
    parseStoreBasename(value);
  } catch (error) {
    throw fieldError(key, value, (error as Error).message, error);
  }
}

// Each Compression/FileSize/FileHash line belongs to the URL line above it;
// lines that come before any URL (or repeat a field) are paired by position,
// the way Guix reads these multi-valued fields.
function pairUrls(lines: [string, string][]): NarinfoUrl[] {
  const groups: Map<string, string>[] = [];
  const pending = new Map<string, string[]>();
  for (const [key, value] of lines) {
    const last = groups.at(-1);
    if (key === "URL") {
      if (value === "") break;
      groups.push(new Map([["URL", value]]));
    } else if (last !== undefined && !last.has(key)) {
      last.set(key, value);
    } else {
      pending.set(key, [...pending.get(key) ?? [], value]);
    }
  }
  if (
    groups.length === 0 ||
    groups.length !== lines.filter(([key]) => key === "URL").length
  ) {
    throw new NarinfoSyntaxError(
      'Cannot parse narinfo field "URL": missing',
      "URL",
    );
  }
  for (const [key, values] of pending) {
    for (const group of groups) {
      if (!group.has(key) && values.length > 0) group.set(key, values.shift()!);
    }
  }
  return groups.map((group) => {
    const size = group.get("FileSize");
    return {
      url: group.get("URL")!,
      compression: group.get("Compression") || "none",
      fileSize: size === undefined ? null : integer("FileSize", size),
      fileHash: group.get("FileHash") || null,
    };
  });
}

function fieldError(
  key: string,
  value: string,
  problem: string,
  cause?: unknown,
): NarinfoSyntaxError {
  return new NarinfoSyntaxError(
    `Cannot parse narinfo field ${JSON.stringify(key)}: value ${
      quote(value)
    }: ${problem}`,
    key,
    cause === undefined ? undefined : { cause },
  );
}

function quote(value: string): string {
  return JSON.stringify(value.length > 120 ? value.slice(0, 120) + "…" : value);
}
