// RFC 5322 messages: one UTF-8 text/plain part with the usual headers.

/** A message to format; every field is plain text, not yet encoded. */
export interface EmailContent {
  from: string;
  /** One or more recipients, as written in the To header. */
  to: string[];
  subject: string;
  text: string;
  /** Milliseconds since the epoch, for the Date header. */
  date: number;
  /** Without angle brackets, e.g. `1a2b.3c4d@farm.example`. */
  messageId: string;
}

/** A header value or address that would break the message. */
export class EmailFormatError extends Error {
  constructor(message: string, readonly field: string) {
    super(message);
    this.name = "EmailFormatError";
  }
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
];

/**
 * Formats the whole message with CRLF line ends, ready for SMTP DATA (before
 * dot-stuffing) or for sendmail's standard input.
 * @throws {EmailFormatError} when an address holds line breaks or is empty.
 */
export function formatEmail(content: EmailContent): string {
  const from = checkHeaderAddress(content.from, "from");
  if (content.to.length === 0) {
    throw new EmailFormatError("Cannot format an email: no recipient", "to");
  }
  const to = content.to.map((address) => checkHeaderAddress(address, "to"));
  const body = content.text.replace(/\r?\n/g, "\r\n");
  const plain = /^[\x20-\x7e\r\n\t]*$/.test(body) &&
    body.split("\r\n").every((line) => line.length <= 998);
  const headers = [
    `From: ${from}`,
    `To: ${to.join(", ")}`,
    `Date: ${rfc5322Date(content.date)}`,
    `Message-ID: <${checkMessageId(content.messageId)}>`,
    `Subject: ${encodeHeaderText(content.subject)}`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=UTF-8",
    `Content-Transfer-Encoding: ${plain ? "7bit" : "base64"}`,
  ];
  const encoded = plain ? body : base64Lines(body.replace(/\r\n/g, "\n"));
  return `${headers.join("\r\n")}\r\n\r\n${encoded}${
    encoded.endsWith("\r\n") ? "" : "\r\n"
  }`;
}

/** The bare address of `Name <addr>` or `addr`, for the SMTP envelope. */
export function envelopeAddress(address: string): string {
  const match = /<([^<>]*)>\s*$/.exec(address);
  const bare = (match ? match[1] : address).trim();
  if (!/^[^\s<>()\[\],;:"\\]+@[^\s<>()\[\],;:"\\]+$/.test(bare)) {
    throw new EmailFormatError(
      `Cannot use the address ${
        JSON.stringify(address.slice(0, 200))
      }: expected local@domain`,
      "address",
    );
  }
  return bare;
}

/** Splits a comma-separated recipient list such as `a@x, B <b@y>`. */
export function splitAddresses(list: string): string[] {
  return list.split(",").map((part) => part.trim()).filter(Boolean);
}

/** `Thu, 04 Dec 2025 16:54:00 +0000`, the RFC 5322 date-time, in UTC. */
export function rfc5322Date(ms: number): string {
  const d = new Date(ms);
  const two = (n: number) => String(n).padStart(2, "0");
  return `${DAYS[d.getUTCDay()]}, ${two(d.getUTCDate())} ${
    MONTHS[d.getUTCMonth()]
  } ${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${
    two(d.getUTCSeconds())
  } +0000`;
}

/** A fresh Message-ID (without brackets) under `domain`. */
export function newMessageId(ms: number, domain: string): string {
  const random = crypto.getRandomValues(new Uint8Array(8));
  const hex = [...random].map((b) => b.toString(16).padStart(2, "0")).join("");
  const host = domain.replace(/[^A-Za-z0-9.-]/g, "") || "localhost";
  return `${ms.toString(16)}.${hex}@${host}`;
}

/** Plain ASCII stays; anything else becomes RFC 2047 base64 words. */
function encodeHeaderText(text: string): string {
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\x00-\x1f\x7f]+/g, " ");
  if (/^[\x20-\x7e]*$/.test(clean) && clean.length <= 900) return clean;
  // Encoded words hold at most 75 characters: cut the text into pieces
  // of whole code points, at most 45 bytes each.
  const words: string[] = [];
  let piece = "";
  for (const char of clean) {
    if (new TextEncoder().encode(piece + char).length > 45) {
      words.push(piece);
      piece = "";
    }
    piece += char;
  }
  if (piece !== "") words.push(piece);
  return words.map((w) => `=?UTF-8?B?${toBase64(encode(w))}?=`).join(
    "\r\n ",
  );
}

function checkHeaderAddress(address: string, field: string): string {
  const trimmed = address.trim();
  // deno-lint-ignore no-control-regex
  if (trimmed === "" || /[\r\n\x00]/.test(trimmed)) {
    throw new EmailFormatError(
      `Cannot use ${field} address ${
        JSON.stringify(address.slice(0, 200))
      }: empty or holds a line break`,
      field,
    );
  }
  envelopeAddress(trimmed);
  return /^[\x20-\x7e]*$/.test(trimmed) ? trimmed : encodeDisplayName(trimmed);
}

/** `Zoë <z@x>` → encoded display name, address kept readable. */
function encodeDisplayName(address: string): string {
  const match = /^(.*?)\s*<([^<>]*)>\s*$/.exec(address);
  if (!match) return address;
  return `${encodeHeaderText(match[1])} <${match[2]}>`;
}

function checkMessageId(id: string): string {
  if (!/^[\x21-\x7e]+@[\x21-\x7e]+$/.test(id) || /[<>]/.test(id)) {
    throw new EmailFormatError(
      `Cannot use Message-ID ${
        JSON.stringify(id.slice(0, 200))
      }: not left@right`,
      "messageId",
    );
  }
  return id;
}

function base64Lines(text: string): string {
  const all = toBase64(encode(text));
  const lines: string[] = [];
  for (let i = 0; i < all.length; i += 76) lines.push(all.slice(i, i + 76));
  return lines.join("\r\n") + "\r\n";
}

function encode(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}
