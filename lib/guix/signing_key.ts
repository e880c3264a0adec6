// Guix signing keys (`signing-key.pub`, `signing-key.sec`) and the
// `/etc/guix/acl` file: ECDSA keys on Ed25519 as libgcrypt S-expressions.

import {
  formatAdvanced,
  type GcryptSexp,
  GcryptSexpError,
  parseGcryptSexp,
} from "./gcrypt_sexp.ts";
import {
  decodePoint,
  generateSecretScalar,
  publicKeyOf,
} from "./ecdsa_ed25519.ts";

/** A public key: q, the 32-byte compressed curve point. */
export interface PublicKey {
  q: Uint8Array;
}

/** A key pair: q and the secret scalar d (32 big-endian bytes). */
export interface SecretKey {
  q: Uint8Array;
  d: Uint8Array;
}

/** Thrown for a key or ACL file that does not hold what it should. */
export class KeyFormatError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KeyFormatError";
  }
}

const CURVE = "Ed25519";
const POINT_BYTES = 32;
const SCALAR_BYTES = 32;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Generates a key pair the way `guix archive --generate-key` (libgcrypt) does. */
export function generateKeyPair(): SecretKey {
  const d = generateSecretScalar();
  return { q: publicKeyOf(d), d };
}

/**
 * Reads `(public-key (ecc (curve Ed25519) (q #…#)))` in any layout.
 * @throws {KeyFormatError} when the text is not such a key.
 */
export function parsePublicKey(text: string | Uint8Array): PublicKey {
  return publicKeyFromSexp(parseKeyText(text, "public key"));
}

/**
 * Reads `(private-key (ecc (curve Ed25519) (q #…#) (d #…#)))` in any layout,
 * checking that q belongs to d.
 * @throws {KeyFormatError} when the text is not such a key.
 */
export function parseSecretKey(text: string | Uint8Array): SecretKey {
  const sexp = parseKeyText(text, "secret key");
  const fields = eccFields(sexp, "private-key", "secret key");
  const q = pointField(fields, "secret key");
  const rawD = fields.get("d");
  if (rawD === undefined || rawD.length === 0 || rawD.length > SCALAR_BYTES) {
    throw new KeyFormatError(
      'Cannot parse secret key: missing or malformed "d"',
    );
  }
  const d = new Uint8Array(SCALAR_BYTES);
  d.set(rawD, SCALAR_BYTES - rawD.length);
  let derived: Uint8Array;
  try {
    derived = publicKeyOf(d);
  } catch (error) {
    throw new KeyFormatError('Cannot parse secret key: unusable "d"', {
      cause: error,
    });
  }
  if (!bytesEqual(derived, q)) {
    throw new KeyFormatError(
      'Cannot parse secret key: "q" does not match "d"',
    );
  }
  return { q, d };
}

/** Writes a public key as `signing-key.pub` holds it (libgcrypt advanced layout). */
export function formatPublicKey(key: PublicKey): string {
  return formatAdvanced(publicKeySexp(key));
}

/** Writes a key pair as `signing-key.sec` holds it (libgcrypt advanced layout). */
export function formatSecretKey(key: SecretKey): string {
  return formatAdvanced([
    atom("private-key"),
    [
      atom("ecc"),
      [atom("curve"), atom(CURVE)],
      [atom("q"), key.q],
      [atom("d"), stripLeadingZeros(key.d)],
    ],
  ]);
}

/**
 * Reads an ACL, `(acl (entry (public-key …) (tag (guix import))) …)`.
 * @throws {KeyFormatError} when it is not an ACL or an entry is not a valid key.
 */
export function parseAcl(text: string | Uint8Array): PublicKey[] {
  const sexp = parseKeyText(text, "ACL");
  if (!Array.isArray(sexp) || !isAtom(sexp[0], "acl")) {
    throw new KeyFormatError('Cannot parse ACL: expected "(acl …)"');
  }
  return sexp.slice(1).map((entry, i) => {
    if (!Array.isArray(entry) || !isAtom(entry[0], "entry")) {
      throw new KeyFormatError(
        `Cannot parse ACL: element ${i + 1} is not an "entry"`,
      );
    }
    const key = entry.find((item) =>
      Array.isArray(item) && isAtom(item[0], "public-key")
    );
    if (key === undefined) {
      throw new KeyFormatError(
        `Cannot parse ACL: entry ${i + 1} has no "public-key"`,
      );
    }
    return publicKeyFromSexp(key);
  });
}

/** Writes an ACL as `guix archive --authorize` does, without duplicate keys. */
export function formatAcl(keys: PublicKey[]): string {
  const unique = keys.filter((key, i) =>
    keys.findIndex((other) => samePublicKey(key, other)) === i
  );
  return formatAdvanced([
    atom("acl"),
    ...unique.map((key): GcryptSexp => [
      atom("entry"),
      publicKeySexp(key),
      [atom("tag"), [atom("guix"), atom("import")]],
    ]),
  ]);
}

/** Whether two public keys are the same key. */
export function samePublicKey(a: PublicKey, b: PublicKey): boolean {
  return bytesEqual(a.q, b.q);
}

/**
 * The `(public-key (ecc (curve Ed25519) (q …)))` S-expression of a key.
 * @internal shared with narinfo_signature.ts
 */
export function publicKeySexp(key: PublicKey): GcryptSexp {
  return [
    atom("public-key"),
    [atom("ecc"), [atom("curve"), atom(CURVE)], [atom("q"), key.q]],
  ];
}

/**
 * Reads a public key from an already parsed S-expression.
 * @throws {KeyFormatError} when it is not an Ed25519 public key.
 */
export function publicKeyFromSexp(sexp: GcryptSexp): PublicKey {
  const fields = eccFields(sexp, "public-key", "public key");
  return { q: pointField(fields, "public key") };
}

function parseKeyText(text: string | Uint8Array, what: string): GcryptSexp {
  try {
    return parseGcryptSexp(text);
  } catch (error) {
    if (!(error instanceof GcryptSexpError)) throw error;
    throw new KeyFormatError(
      `Cannot parse ${what}: not an S-expression (${error.message})`,
      { cause: error },
    );
  }
}

// Returns the (name value) pairs under `(<head> (ecc …))`, requiring Ed25519.
function eccFields(
  sexp: GcryptSexp,
  head: string,
  what: string,
): Map<string, Uint8Array> {
  if (!Array.isArray(sexp) || !isAtom(sexp[0], head)) {
    throw new KeyFormatError(`Cannot parse ${what}: expected "(${head} …)"`);
  }
  const ecc = sexp[1];
  if (sexp.length !== 2 || !Array.isArray(ecc) || !isAtom(ecc[0], "ecc")) {
    throw new KeyFormatError(
      `Cannot parse ${what}: expected a single "(ecc …)" key`,
    );
  }
  // Only the fields Guix keys have; anything else (e.g. `(flags eddsa)`)
  // would change what libgcrypt does with the key.
  const allowed = head === "public-key" ? ["curve", "q"] : ["curve", "q", "d"];
  const fields = new Map<string, Uint8Array>();
  for (const item of ecc.slice(1)) {
    if (
      !Array.isArray(item) || item.length !== 2 ||
      Array.isArray(item[0]) || Array.isArray(item[1])
    ) {
      throw new KeyFormatError(`Cannot parse ${what}: malformed "ecc" field`);
    }
    const name = decoder.decode(item[0]);
    if (!allowed.includes(name) || fields.has(name)) {
      throw new KeyFormatError(
        `Cannot parse ${what}: unexpected or repeated field ${quote(name)}`,
      );
    }
    fields.set(name, item[1]);
  }
  const curve = fields.get("curve");
  if (curve === undefined || decoder.decode(curve) !== CURVE) {
    const found = curve === undefined ? "none" : quote(decoder.decode(curve));
    throw new KeyFormatError(
      `Cannot parse ${what}: curve ${found} is not "${CURVE}"`,
    );
  }
  return fields;
}

function pointField(fields: Map<string, Uint8Array>, what: string): Uint8Array {
  const q = fields.get("q");
  if (q === undefined || q.length !== POINT_BYTES) {
    throw new KeyFormatError(
      `Cannot parse ${what}: "q" is missing or not ${POINT_BYTES} bytes`,
    );
  }
  if (decodePoint(q) === undefined) {
    throw new KeyFormatError(
      `Cannot parse ${what}: "q" is not a point on the curve`,
    );
  }
  return q.slice();
}

function atom(text: string): Uint8Array {
  return encoder.encode(text);
}

function isAtom(sexp: GcryptSexp | undefined, text: string): boolean {
  return sexp instanceof Uint8Array && decoder.decode(sexp) === text;
}

// libgcrypt prints d as an integer, so leading zero bytes are dropped.
function stripLeadingZeros(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return bytes.slice(i);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
}
