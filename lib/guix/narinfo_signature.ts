// The `Signature:` line of a narinfo: signing the text above it the way
// `guix publish` does, and checking it the way `guix substitute` does.

import { createHash } from "node:crypto";
import {
  formatAdvanced,
  type GcryptSexp,
  parseGcryptSexp,
} from "./gcrypt_sexp.ts";
import { signDigest, verifyDigest } from "./ecdsa_ed25519.ts";
import {
  type PublicKey,
  publicKeyFromSexp,
  publicKeySexp,
  samePublicKey,
  type SecretKey,
} from "./signing_key.ts";

/** The outcome of {@linkcode verifyNarinfoText}, named after Guix's cases. */
export type SignatureCheck =
  | { ok: true; key: PublicKey }
  | {
    ok: false;
    reason:
      | "unsigned"
      | "corrupt"
      | "hash-mismatch"
      | "invalid-signature"
      | "unauthorized";
  };

const SIGNATURE_FIELD = "Signature:";
const SIGNATURE_VERSION = "1";
// Guix only trusts a prefix that names the item, its content and references.
const REQUIRED_FIELDS = [
  /(?:^|\n)StorePath:/,
  /(?:^|\n)NarHash:/,
  /(?:^|\n)References:/,
];
const MAX_SIGNATURE_BYTES = 16 * 1024;
const BASE64_REGEXP =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Signs the narinfo text that precedes `Signature:` and returns the field
 * value, `1;<hostname>;<base64 of the (signature …) S-expression>`.
 * @throws {RangeError} when the host name contains ";" or a line break.
 */
export function signNarinfoPrefix(
  prefix: string,
  key: SecretKey,
  hostname: string,
): string {
  if (/[;\r\n]/.test(hostname)) {
    throw new RangeError(
      `Cannot sign narinfo: host name ${
        JSON.stringify(hostname)
      } contains ";" or a line break`,
    );
  }

  const digest = sha256(prefix);
  const { r, s } = signDigest(digest, key.d);
  const signature: GcryptSexp = [
    atom("signature"),
    dataSexp(digest),
    [atom("sig-val"), [atom("ecdsa"), [atom("r"), unsignedBytes(r)], [
      atom("s"),
      unsignedBytes(s),
    ]]],
    publicKeySexp(key),
  ];
  const body = btoa(formatAdvanced(signature));
  return `${SIGNATURE_VERSION};${hostname};${body}`;
}

/**
 * Checks a narinfo's signature against the prefix it covers and an ACL,
 * reporting the first failure in Guix's order; never throws.
 */
export function verifyNarinfoText(
  text: string,
  acl: PublicKey[],
): SignatureCheck {
  try {
    return check(text, acl);
  } catch {
    return { ok: false, reason: "corrupt" };
  }
}

function check(text: string, acl: PublicKey[]): SignatureCheck {
  const index = text.indexOf(SIGNATURE_FIELD);
  if (index < 0) return { ok: false, reason: "unsigned" };
  const prefix = text.slice(0, index);
  if (!REQUIRED_FIELDS.every((field) => field.test(prefix))) {
    return { ok: false, reason: "unsigned" };
  }

  const lineEnd = text.indexOf("\n", index);
  const value = text
    .slice(index + SIGNATURE_FIELD.length, lineEnd < 0 ? undefined : lineEnd)
    .trim();
  const parts = value.split(";");
  if (parts.length !== 3 || parts[0] !== SIGNATURE_VERSION) {
    return { ok: false, reason: "corrupt" };
  }
  const decoded = decodeSignature(parts[2]);
  if (decoded === undefined) return { ok: false, reason: "corrupt" };

  const { hash, flags, r, s, key } = decoded;
  if (!bytesEqual(hash, sha256(prefix))) {
    return { ok: false, reason: "hash-mismatch" };
  }
  if (!acl.some((trusted) => samePublicKey(trusted, key))) {
    return { ok: false, reason: "unauthorized" };
  }
  // Only plain ECDSA is implemented; Guix never emits EdDSA-flagged data.
  const ecdsaOnly = flags.every((flag) => flag === "rfc6979");
  if (!ecdsaOnly || !verifyDigest(hash, { r, s }, key.q)) {
    return { ok: false, reason: "invalid-signature" };
  }
  return { ok: true, key };
}

interface DecodedSignature {
  hash: Uint8Array;
  flags: string[];
  r: bigint;
  s: bigint;
  key: PublicKey;
}

// Reads (signature (data (flags …) (hash sha256 #…#)) (sig-val (ecdsa (r …)
// (s …))) (public-key …)), or undefined for any other shape.
function decodeSignature(base64: string): DecodedSignature | undefined {
  if (base64.length > MAX_SIGNATURE_BYTES || !BASE64_REGEXP.test(base64)) {
    return undefined;
  }
  const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
  const sexp = parseGcryptSexp(bytes, { maxBytes: MAX_SIGNATURE_BYTES });
  if (!isList(sexp, "signature") || sexp.length !== 4) return undefined;

  const [, data, sigVal, publicKey] = sexp;
  if (!isList(data, "data")) return undefined;
  const hashField = findList(data, "hash");
  if (hashField?.length !== 3 || !(hashField[2] instanceof Uint8Array)) {
    return undefined;
  }
  const flags = (findList(data, "flags") ?? [atom("flags")]).slice(1);
  if (flags.some((flag) => Array.isArray(flag))) return undefined;

  if (!isList(sigVal, "sig-val") || sigVal.length !== 2) return undefined;
  const ecdsa = sigVal[1];
  if (!isList(ecdsa, "ecdsa")) return undefined;
  const r = findList(ecdsa, "r")?.[1];
  const s = findList(ecdsa, "s")?.[1];
  if (!(r instanceof Uint8Array) || !(s instanceof Uint8Array)) {
    return undefined;
  }
  if (r.length === 0 || s.length === 0) return undefined;

  return {
    hash: hashField[2],
    flags: flags.map((flag) => decoder.decode(flag as Uint8Array)),
    r: bytesToBigint(r),
    s: bytesToBigint(s),
    key: publicKeyFromSexp(publicKey),
  };
}

function dataSexp(digest: Uint8Array): GcryptSexp {
  return [
    atom("data"),
    [atom("flags"), atom("rfc6979")],
    [atom("hash"), atom("sha256"), digest],
  ];
}

function sha256(text: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(text, "utf8").digest());
}

// libgcrypt prints r and s as unsigned integers without leading zero bytes.
function unsignedBytes(value: bigint): Uint8Array {
  const hex = value.toString(16);
  const padded = hex.length % 2 ? "0" + hex : hex;
  return Uint8Array.from(
    padded.match(/../g) ?? [],
    (pair) => parseInt(pair, 16),
  );
}

function bytesToBigint(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function isList(sexp: GcryptSexp, head: string): sexp is GcryptSexp[] {
  return Array.isArray(sexp) && sexp[0] instanceof Uint8Array &&
    decoder.decode(sexp[0]) === head;
}

function findList(
  list: GcryptSexp[],
  head: string,
): GcryptSexp[] | undefined {
  return list.slice(1).find((item): item is GcryptSexp[] => isList(item, head));
}

function atom(text: string): Uint8Array {
  return encoder.encode(text);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
