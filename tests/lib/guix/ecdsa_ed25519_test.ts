import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  add,
  BASE_POINT,
  decodePoint,
  double,
  encodePoint,
  generateSecretScalar,
  GROUP_ORDER,
  IDENTITY,
  isOnCurve,
  multiply,
  pointsEqual,
  publicKeyOf,
  signDigest,
  verifyDigest,
} from "../../../lib/guix/ecdsa_ed25519.ts";
import { parseGcryptSexp } from "../../../lib/guix/gcrypt_sexp.ts";
import {
  formatSecretKey,
  parseSecretKey,
} from "../../../lib/guix/signing_key.ts";
import {
  fromHex,
  guileGcryptAvailable,
  runGuile,
  toHex,
} from "./guile_gcrypt.ts";

const digest = (text: string) =>
  new Uint8Array(createHash("sha256").update(text).digest());

// A key libgcrypt 1.10.1 generated with (genkey (ecdsa (curve Ed25519)
// (flags rfc6979))), and its signature over sha256("hello").
const FIXED_D = fromHex(
  "5671B4710403AC5E42E4E9DDE10075A18FA69EF6B2A3D0380DF0D40DF9AF58B8",
);
const FIXED_Q = fromHex(
  "B5D8F827EA6CFCE3C145656BFB7811315455B3D45E81273F31686385125138C7",
);
const FIXED_R =
  0x069C9B957F75AF76481A28ACB68369A22891199678D27A33056588218DE6FC0An;
const FIXED_S =
  0x0B6B24E88A99ED1E85C8B39C05DA83A72EE248225ECFEFD20D4ABB5347CDB36Bn;

Deno.test("the base point has the group order", () => {
  assert.ok(isOnCurve(BASE_POINT));
  assert.ok(pointsEqual(multiply(BASE_POINT, GROUP_ORDER), IDENTITY));
  assert.ok(!pointsEqual(multiply(BASE_POINT, GROUP_ORDER - 1n), IDENTITY));
  assert.ok(
    pointsEqual(
      multiply(BASE_POINT, GROUP_ORDER + 5n),
      multiply(BASE_POINT, 5n),
    ),
  );
});

Deno.test("double() agrees with add() and multiply()", () => {
  const p = multiply(BASE_POINT, 123456789n);
  assert.ok(pointsEqual(double(p), add(p, p)));
  assert.ok(pointsEqual(add(double(p), p), multiply(p, 3n)));
  assert.ok(pointsEqual(add(p, IDENTITY), p));
  assert.ok(isOnCurve(double(double(p))));
});

Deno.test("encodePoint() and decodePoint() round-trip the standard base point", () => {
  // RFC 8032 encodes B as 0x58666…66.
  assert.equal(toHex(encodePoint(BASE_POINT)), "58" + "66".repeat(31));
  const p = multiply(BASE_POINT, 987654321n);
  const decoded = decodePoint(encodePoint(p));
  assert.ok(decoded !== undefined && pointsEqual(decoded, p));
});

Deno.test("decodePoint() rejects bytes that are not a curve point", () => {
  const notOnCurve = fromHex("02" + "00".repeat(31)); // y = 2
  assert.equal(decodePoint(notOnCurve), undefined);
  assert.equal(decodePoint(new Uint8Array(31)), undefined);
  assert.equal(decodePoint(new Uint8Array(32).fill(0xff)), undefined); // y ≥ p
});

Deno.test("publicKeyOf() matches a libgcrypt-generated key", () => {
  assert.deepEqual(publicKeyOf(FIXED_D), FIXED_Q);
});

Deno.test("signDigest() reproduces a libgcrypt RFC 6979 signature exactly", () => {
  const sig = signDigest(digest("hello"), FIXED_D);
  assert.equal(sig.r, FIXED_R);
  assert.equal(sig.s, FIXED_S);
});

Deno.test("generateSecretScalar() clamps like libgcrypt", () => {
  for (let i = 0; i < 8; i++) {
    const d = generateSecretScalar();
    assert.equal(d.length, 32);
    assert.equal(d[0] & 0xc0, 0x40);
    assert.equal(d[31] & 0x07, 0);
  }
});

Deno.test("verifyDigest() accepts a fresh signature and rejects tampering", async (t) => {
  const d = generateSecretScalar();
  const q = publicKeyOf(d);
  const h = digest("some narinfo");
  const sig = signDigest(h, d);
  assert.ok(verifyDigest(h, sig, q));

  const otherQ = publicKeyOf(generateSecretScalar());
  const flipped = h.slice();
  flipped[5] ^= 1;
  const cases: [string, Parameters<typeof verifyDigest>][] = [
    ["tampered digest", [flipped, sig, q]],
    ["tampered r", [h, { r: sig.r ^ 1n, s: sig.s }, q]],
    ["tampered s", [h, { r: sig.r, s: sig.s + 1n }, q]],
    ["other key", [h, sig, otherQ]],
    ["r = 0", [h, { r: 0n, s: sig.s }, q]],
    ["s = n", [h, { r: sig.r, s: GROUP_ORDER }, q]],
    ["r + n", [h, { r: sig.r + GROUP_ORDER, s: sig.s }, q]],
    ["negative s", [h, { r: sig.r, s: -sig.s }, q]],
    ["off-curve key", [h, sig, fromHex("02" + "00".repeat(31))]],
    ["short key", [h, sig, q.subarray(1)]],
    ["identity key", [h, sig, encodePoint(IDENTITY)]],
    ["empty digest", [new Uint8Array(0), sig, q]],
  ];
  for (const [name, args] of cases) {
    await t.step(name, () => assert.equal(verifyDigest(...args), false));
  }
});

Deno.test("signDigest() rejects an unusable secret", () => {
  assert.throws(() => signDigest(digest("x"), new Uint8Array(0)), RangeError);
  assert.throws(() => signDigest(digest("x"), new Uint8Array(33)), RangeError);
  assert.throws(() => signDigest(digest("x"), new Uint8Array(32)), RangeError);
});

// One Guile run: libgcrypt generates a key and signs digests with it and with
// our key, and checks our signatures.
Deno.test({
  name: "signatures agree with libgcrypt (needs guile + guile-gcrypt)",
  ignore: !guileGcryptAvailable,
  async fn(t) {
    const d = generateSecretScalar();
    const ours = { d, q: publicKeyOf(d) };
    const digests = Array.from({ length: 12 }, (_, i) => digest(`item ${i}`));
    const ourSigs = digests.map((h) => signDigest(h, ours.d));
    const tampered = { r: ourSigs[0].r, s: ourSigs[0].s ^ 4n };
    const sigVal = (sig: { r: bigint; s: bigint }) =>
      `(sig-val (ecdsa (r #${hexInt(sig.r)}#) (s #${hexInt(sig.s)}#)))`;

    const script = `
(define ours (string->canonical-sexp ${JSON.stringify(formatSecretKey(ours))}))
(define ours-pub (find-sexp-token ours 'public-key))
(define pair (generate-key
  (string->canonical-sexp "(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")))
(define theirs (find-sexp-token pair 'private-key))
(emit "their-key" (sexp-text theirs))
(define ours-pubkey (string->canonical-sexp
  ${
      JSON.stringify(
        `(public-key (ecc (curve Ed25519) (q #${toHex(ours.q)}#)))`,
      )
    }))
${
      digests.map((h, i) => `
(emit "their-sig-${i}" (sexp-text (sign (hash-data "${toHex(h)}") theirs)))
(emit "their-sig-by-ours-${i}" (sexp-text (sign (hash-data "${
        toHex(h)
      }") ours)))
(emit "verify-ours-${i}" (safe-verify (string->canonical-sexp "${
        sigVal(ourSigs[i])
      }") (hash-data "${toHex(h)}") ours-pubkey))`).join("")
    }
(emit "verify-tampered" (safe-verify (string->canonical-sexp "${
      sigVal(tampered)
    }") (hash-data "${toHex(digests[0])}") ours-pubkey))
`;
    const out = await runGuile(script);

    const theirKey = parseSecretKey(out.get("their-key")!);
    await t.step("libgcrypt's key loads and its q follows from d", () => {
      assert.deepEqual(publicKeyOf(theirKey.d), theirKey.q);
    });
    await t.step("libgcrypt accepts our key and signs exactly as we do", () => {
      digests.forEach((_, i) => {
        assert.deepEqual(
          readSig(out.get(`their-sig-by-ours-${i}`)!),
          ourSigs[i],
        );
      });
    });
    await t.step("libgcrypt's signatures verify here and equal ours", () => {
      digests.forEach((h, i) => {
        const sig = readSig(out.get(`their-sig-${i}`)!);
        assert.ok(verifyDigest(h, sig, theirKey.q));
        assert.deepEqual(signDigest(h, theirKey.d), sig);
      });
    });
    await t.step("libgcrypt verifies our signatures", () => {
      digests.forEach((_, i) =>
        assert.equal(out.get(`verify-ours-${i}`), "#t")
      );
    });
    await t.step("libgcrypt rejects a tampered signature of ours", () => {
      assert.equal(out.get("verify-tampered"), "#f");
    });
  },
});

function hexInt(value: bigint): string {
  const hex = value.toString(16).toUpperCase();
  return hex.length % 2 ? "0" + hex : hex;
}

function readSig(text: string): { r: bigint; s: bigint } {
  const sexp = parseGcryptSexp(text) as unknown[];
  const ecdsa = sexp[1] as [Uint8Array, [Uint8Array, Uint8Array], [
    Uint8Array,
    Uint8Array,
  ]];
  return {
    r: BigInt("0x" + toHex(ecdsa[1][1])),
    s: BigInt("0x" + toHex(ecdsa[2][1])),
  };
}
