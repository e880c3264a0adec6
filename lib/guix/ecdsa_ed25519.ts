// Deterministic ECDSA (RFC 6979, SHA-256) on the Ed25519 twisted Edwards
// curve, the scheme libgcrypt applies to Guix's `(ecc (curve Ed25519))` keys.
//
// This is not EdDSA: libgcrypt takes its ECDSA path because Guix keys carry
// no `(flags eddsa)`, so r is the affine x of kG reduced mod n and
// s = k⁻¹(e + d·r) mod n. BigInt arithmetic is not constant-time; signing
// happens on the build farm's own machine with its own key.

import { createHmac, randomBytes } from "node:crypto";

/** An ECDSA signature as two integers in [1, n-1]. */
export interface EcdsaSignature {
  r: bigint;
  s: bigint;
}

/** The field prime 2^255 - 19. */
export const FIELD_PRIME = (1n << 255n) - 19n;
/** The prime order of the base point. */
export const GROUP_ORDER = (1n << 252n) +
  27742317777372353535851937790883648493n;

const P = FIELD_PRIME;
const N = GROUP_ORDER;
// Curve -x² + y² = 1 + D·x²·y², D = -121665/121666.
const D =
  37095705934669439343138083508754565189542113879843219016388785533085940283555n;
const D2 = (2n * D) % P;
const SQRT_M1 =
  19681161376707505956807079304988542015446066515923890162744021073123829784752n;
const BASE_X =
  15112221349535400772501151409588531511454012693041857206046113283949847762202n;
const BASE_Y =
  46316835694926478169428394003475163141307993866256225615783033603165251855960n;
const ORDER_BITS = 253;
const SCALAR_BYTES = 32;

/** A point in extended twisted Edwards coordinates (x = X/Z, y = Y/Z, xy = T/Z). */
export interface EdwardsPoint {
  X: bigint;
  Y: bigint;
  Z: bigint;
  T: bigint;
}

/** The neutral element (0, 1). */
export const IDENTITY: EdwardsPoint = { X: 0n, Y: 1n, Z: 1n, T: 0n };
/** The standard Ed25519 base point G. */
export const BASE_POINT: EdwardsPoint = {
  X: BASE_X,
  Y: BASE_Y,
  Z: 1n,
  T: (BASE_X * BASE_Y) % P,
};

/**
 * Returns a fresh secret scalar laid out as libgcrypt generates one for this
 * curve: 32 big-endian bytes with bit 254 set, bit 255 and the low 3 bits clear.
 */
export function generateSecretScalar(): Uint8Array {
  const bytes = new Uint8Array(randomBytes(SCALAR_BYTES));
  bytes[0] = (bytes[0] & 0x7f) | 0x40;
  bytes[SCALAR_BYTES - 1] &= 0xf8;
  return bytes;
}

/**
 * Returns q = d·G in the 32-byte compressed form libgcrypt prints for these
 * keys (little-endian y, sign of x in the top bit).
 * @throws {RangeError} when the secret is empty, longer than 32 bytes or zero mod n.
 */
export function publicKeyOf(secret: Uint8Array): Uint8Array {
  const d = secretToBigint(secret);
  return encodePoint(multiply(BASE_POINT, d));
}

/**
 * Signs a message digest (normally SHA-256) with RFC 6979 nonces, as
 * libgcrypt's `gcry_pk_sign` does for `(data (flags rfc6979) (hash sha256 …))`.
 * @throws {RangeError} when the secret is unusable or the digest is empty.
 */
export function signDigest(
  digest: Uint8Array,
  secret: Uint8Array,
): EcdsaSignature {
  const d = secretToBigint(secret);
  if (digest.length === 0) {
    throw new RangeError("Cannot sign digest: it is empty");
  }

  const e = bitsToInt(digest);
  for (const k of rfc6979Nonces(digest, d)) {
    const r = affineX(multiply(BASE_POINT, k)) % N;
    if (r === 0n) continue;
    const s = (invert(k, N) * (e + d * r)) % N;
    if (s === 0n) continue;
    return { r, s };
  }
  throw new Error("Cannot sign digest: no usable nonce"); // unreachable
}

/** Checks an ECDSA signature over a digest; false for any malformed input. */
export function verifyDigest(
  digest: Uint8Array,
  signature: EcdsaSignature,
  publicKey: Uint8Array,
): boolean {
  const { r, s } = signature;
  if (typeof r !== "bigint" || typeof s !== "bigint") return false;
  if (r <= 0n || r >= N || s <= 0n || s >= N) return false;
  if (digest.length === 0) return false;
  const q = decodePoint(publicKey);
  if (q === undefined || isIdentity(q)) return false;

  const w = invert(s, N);
  const u1 = (bitsToInt(digest) * w) % N;
  const u2 = (r * w) % N;
  const sum = add(multiply(BASE_POINT, u1), multiply(q, u2));
  if (isIdentity(sum)) return false;
  return affineX(sum) % N === r;
}

/** Adds two points (unified formula, complete for a = -1 and non-square D). */
export function add(a: EdwardsPoint, b: EdwardsPoint): EdwardsPoint {
  const A = mod((a.Y - a.X) * (b.Y - b.X));
  const B = mod((a.Y + a.X) * (b.Y + b.X));
  const C = mod(a.T * D2 % P * b.T);
  const Dd = mod(2n * a.Z * b.Z);
  const E = B - A, F = Dd - C, G = Dd + C, H = B + A;
  return { X: mod(E * F), Y: mod(G * H), Z: mod(F * G), T: mod(E * H) };
}

/** Doubles a point. */
export function double(a: EdwardsPoint): EdwardsPoint {
  const A = mod(a.X * a.X);
  const B = mod(a.Y * a.Y);
  const C = mod(2n * a.Z * a.Z);
  const sum = a.X + a.Y;
  const E = mod(sum * sum - A - B);
  const G = B - A; // a·A + B with a = -1
  const F = G - C;
  const H = -A - B;
  return { X: mod(E * F), Y: mod(G * H), Z: mod(F * G), T: mod(E * H) };
}

/** Multiplies a point by a non-negative scalar (double-and-add). */
export function multiply(point: EdwardsPoint, scalar: bigint): EdwardsPoint {
  let result = IDENTITY;
  let addend = point;
  for (let k = scalar; k > 0n; k >>= 1n) {
    if (k & 1n) result = add(result, addend);
    addend = double(addend);
  }
  return result;
}

/** Whether two points are the same affine point. */
export function pointsEqual(a: EdwardsPoint, b: EdwardsPoint): boolean {
  return mod(a.X * b.Z - b.X * a.Z) === 0n &&
    mod(a.Y * b.Z - b.Y * a.Z) === 0n;
}

/** Whether a point satisfies the curve equation. */
export function isOnCurve(a: EdwardsPoint): boolean {
  const x = affineX(a), y = affineY(a);
  const xx = x * x % P, yy = y * y % P;
  return mod(yy - xx - 1n - D * xx % P * yy) === 0n;
}

/** Encodes a point as 32 bytes: little-endian y, sign bit of x on top. */
export function encodePoint(a: EdwardsPoint): Uint8Array {
  const x = affineX(a);
  let y = affineY(a);
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) {
    out[i] = Number(y & 0xffn);
    y >>= 8n;
  }
  if (x & 1n) out[31] |= 0x80;
  return out;
}

/** Decodes a 32-byte compressed point, or undefined when it is not on the curve. */
export function decodePoint(bytes: Uint8Array): EdwardsPoint | undefined {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) return undefined;
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(bytes[i]);
  const sign = y >> 255n;
  y &= (1n << 255n) - 1n;
  if (y >= P) return undefined;

  // x² = (y² - 1) / (D·y² + 1); p ≡ 5 (mod 8) gives a closed-form root.
  const yy = y * y % P;
  const u = mod(yy - 1n);
  const v = mod(D * yy + 1n);
  const v3 = v * v % P * v % P;
  let x = u * v3 % P * modPow(u * v3 % P * v3 % P * v % P, (P - 5n) / 8n, P) %
    P;
  const check = v * x % P * x % P;
  if (check === mod(-u)) x = x * SQRT_M1 % P;
  else if (check !== u) return undefined;
  if (x === 0n && sign === 1n) return undefined;
  if ((x & 1n) !== sign) x = P - x;
  return { X: x, Y: y, Z: 1n, T: x * y % P };
}

function secretToBigint(secret: Uint8Array): bigint {
  if (
    !(secret instanceof Uint8Array) || secret.length === 0 ||
    secret.length > SCALAR_BYTES
  ) {
    throw new RangeError(
      `Cannot use secret scalar: expected 1 to ${SCALAR_BYTES} bytes`,
    );
  }
  const d = bytesToBigint(secret);
  if (d % N === 0n) {
    throw new RangeError("Cannot use secret scalar: it is zero modulo n");
  }
  return d;
}

// RFC 6979 §3.2 with HMAC-SHA-256, qlen = 253. The secret goes in unreduced,
// as libgcrypt does (its clamped d exceeds n), which decides the exact nonce.
function* rfc6979Nonces(digest: Uint8Array, d: bigint): Generator<bigint> {
  const rlen = Math.ceil(ORDER_BITS / 8);
  const x = bigintToBytes(d, rlen);
  const h = bigintToBytes(bitsToInt(digest) % N, rlen);
  let v: Uint8Array = new Uint8Array(32).fill(1);
  let k: Uint8Array = new Uint8Array(32);
  k = hmac(k, v, [0], x, h);
  v = hmac(k, v);
  k = hmac(k, v, [1], x, h);
  v = hmac(k, v);
  while (true) {
    let t: Uint8Array = new Uint8Array(0);
    while (t.length < rlen) {
      v = hmac(k, v);
      t = concat(t, v);
    }
    const candidate = bitsToInt(t.subarray(0, rlen));
    if (candidate > 0n && candidate < N) yield candidate;
    k = hmac(k, v, [0]);
    v = hmac(k, v);
  }
}

function hmac(
  key: Uint8Array,
  ...parts: (Uint8Array | number[])[]
): Uint8Array {
  const mac = createHmac("sha256", key);
  for (const part of parts) mac.update(Uint8Array.from(part));
  return new Uint8Array(mac.digest());
}

// RFC 6979 bits2int: the leftmost qlen bits of the string as an integer.
function bitsToInt(bytes: Uint8Array): bigint {
  const value = bytesToBigint(bytes);
  const excess = bytes.length * 8 - ORDER_BITS;
  return excess > 0 ? value >> BigInt(excess) : value;
}

function affineX(a: EdwardsPoint): bigint {
  return a.X * invert(a.Z, P) % P;
}

function affineY(a: EdwardsPoint): bigint {
  return a.Y * invert(a.Z, P) % P;
}

function isIdentity(a: EdwardsPoint): boolean {
  return pointsEqual(a, IDENTITY);
}

function mod(a: bigint): bigint {
  const r = a % P;
  return r < 0n ? r + P : r;
}

function invert(a: bigint, m: bigint): bigint {
  return modPow(((a % m) + m) % m, m - 2n, m);
}

function modPow(base: bigint, exponent: bigint, m: bigint): bigint {
  let result = 1n;
  let b = ((base % m) + m) % m;
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = result * b % m;
    b = b * b % m;
  }
  return result;
}

function bytesToBigint(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

function bigintToBytes(value: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
