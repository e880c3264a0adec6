import assert from "node:assert/strict";
import {
  signNarinfoPrefix,
  verifyNarinfoText,
} from "../../../lib/guix/narinfo_signature.ts";
import {
  formatAcl,
  formatPublicKey,
  generateKeyPair,
  parsePublicKey,
  parseSecretKey,
  type PublicKey,
  type SecretKey,
} from "../../../lib/guix/signing_key.ts";
import { parseGcryptSexp } from "../../../lib/guix/gcrypt_sexp.ts";
import { guileGcryptAvailable, runGuile } from "./guile_gcrypt.ts";

// Synthetic item; the hashes are made up but well-formed.
const PREFIX = [
  "StorePath: /gnu/store/0bpdxamsnkn3s7wnvmsc7g3h6kx8pmrk-hello-2.12.1",
  "NarHash: sha256:1ssjvlvjczr2cqnp6d1dwmx2ilfq5kdh6w1xrrdp4iiv1xdj0kyq",
  "NarSize: 226560",
  "References: 0bpdxamsnkn3s7wnvmsc7g3h6kx8pmrk-hello-2.12.1 9rrnm5hdjw7cy96a2a9rfgh6y08wsbmf-glibc-2.35",
  "Deriver: 1ipnmd5lg8wn5xbx2gkc8ajxizp3pcsw-hello-2.12.1.drv",
  "",
].join("\n");
const SUFFIX = "URL: nar/gzip/0bpdxamsnkn3s7wnvmsc7g3h6kx8pmrk-hello-2.12.1\n" +
  "Compression: gzip\nFileSize: 70123\n";

function narinfo(key: SecretKey, prefix = PREFIX): string {
  return `${prefix}Signature: ${
    signNarinfoPrefix(prefix, key, "ci.example")
  }\n${SUFFIX}`;
}

function publicOf(key: SecretKey): PublicKey {
  return { q: key.q };
}

Deno.test("signNarinfoPrefix() returns 1;host;base64 of the libgcrypt signature sexp", () => {
  const key = generateKeyPair();
  const [version, host, body] = signNarinfoPrefix(PREFIX, key, "ci.example")
    .split(";");
  assert.equal(version, "1");
  assert.equal(host, "ci.example");
  const text = atob(body);
  assert.match(
    text,
    /^\(signature \n \(data \n {2}\(flags rfc6979\)\n {2}\(hash sha256 #[0-9A-F]{64}#\)\n {2}\)\n \(sig-val \n {2}\(ecdsa \n {3}\(r #[0-9A-F]+#\)\n {3}\(s #[0-9A-F]+#\)\n {3}\)\n {2}\)\n \(public-key \n/,
  );
  const q = Array.from(key.q, (b) => b.toString(16).padStart(2, "0")).join("")
    .toUpperCase();
  assert.ok(text.endsWith(
    ` (public-key \n  (ecc \n   (curve Ed25519)\n   (q #${q}#)\n   )\n  )\n )\n`,
  ));
  assert.ok(Array.isArray(parseGcryptSexp(text)));
});

Deno.test("signNarinfoPrefix() rejects a host name that would break the field", () => {
  const key = generateKeyPair();
  assert.throws(() => signNarinfoPrefix(PREFIX, key, "a;b"), RangeError);
  assert.throws(() => signNarinfoPrefix(PREFIX, key, "a\nb"), RangeError);
});

Deno.test("verifyNarinfoText() accepts a signed narinfo from an authorized key", () => {
  const key = generateKeyPair();
  const result = verifyNarinfoText(narinfo(key), [
    publicOf(generateKeyPair()),
    publicOf(key),
  ]);
  assert.equal(result.ok, true);
  assert.ok(result.ok && result.key.q.every((b, i) => b === key.q[i]));
  // Fields after the signature are not covered.
  const moved = narinfo(key).replace("FileSize: 70123", "FileSize: 1");
  assert.equal(verifyNarinfoText(moved, [publicOf(key)]).ok, true);
});

Deno.test("verifyNarinfoText() names each failure the way Guix does", async (t) => {
  const key = generateKeyPair();
  const acl = [publicOf(key)];
  const good = narinfo(key);
  const value = good.match(/^Signature: (.*)$/m)![1];
  const [, , body] = value.split(";");
  const swapped = narinfo(generateKeyPair()).replace(
    /^Signature: (.*)$/m,
    (_line, v: string) => {
      // Another key's signature relabelled with the authorized public key.
      const text = atob(v.split(";")[2]).replace(
        /\(public-key[\s\S]*$/,
        formatPublicKey(key).replace(/\n$/, "\n )\n"),
      );
      return `Signature: 1;ci.example;${btoa(text)}`;
    },
  );
  const cases: [string, string, PublicKey[], string][] = [
    ["no signature", PREFIX + SUFFIX, acl, "unsigned"],
    [
      "no NarHash above the signature",
      good.replace(/^NarHash: .*\n/m, ""),
      acl,
      "unsigned",
    ],
    [
      "version 2",
      good.replace("Signature: 1;", "Signature: 2;"),
      acl,
      "corrupt",
    ],
    ["two fields", good.replace(value, `1;${body}`), acl, "corrupt"],
    ["bad base64", good.replace(value, "1;h;***"), acl, "corrupt"],
    [
      "not a sexp",
      good.replace(value, `1;h;${btoa("(signature")}`),
      acl,
      "corrupt",
    ],
    [
      "wrong shape",
      good.replace(value, `1;h;${btoa("(signature (data))")}`),
      acl,
      "corrupt",
    ],
    [
      "edited prefix",
      good.replace("NarSize: 226560", "NarSize: 226561"),
      acl,
      "hash-mismatch",
    ],
    ["unknown key", good, [publicOf(generateKeyPair())], "unauthorized"],
    ["empty ACL", good, [], "unauthorized"],
    ["relabelled signature", swapped, acl, "invalid-signature"],
  ];
  for (const [name, text, keys, reason] of cases) {
    await t.step(name, () => {
      assert.deepEqual(verifyNarinfoText(text, keys), { ok: false, reason });
    });
  }
});

// One Guile run doing what `guix substitute` does with the ACL and narinfos
// we produce, and signing a prefix the way `guix publish` does.
Deno.test({
  name:
    "narinfo signatures interoperate with libgcrypt (needs guile + guile-gcrypt)",
  ignore: !guileGcryptAvailable,
  async fn(t) {
    const key = generateKeyPair();
    const texts = {
      good: narinfo(key),
      tampered: narinfo(key).replace("NarSize: 226560", "NarSize: 226561"),
      unauthorized: narinfo(generateKeyPair()),
    };
    const script = `
(define (acl-keys text)
  (match (canonical-sexp->sexp (string->canonical-sexp text))
    (('acl ('entry keys ('tag ('guix 'import))) ...) keys)))
(define acl (acl-keys ${JSON.stringify(formatAcl([key]))}))
(define (check text)
  (let* ((index (string-contains text "Signature:"))
         (prefix (substring text 0 index))
         (line (substring text index (string-index text #\\newline index)))
         (fields (string-split (string-trim-both (substring line 10)) #\\;))
         (sig (string->canonical-sexp
                (utf8->string (base64-decode (list-ref fields 2)))))
         (data (find-sexp-token sig 'data))
         (key (find-sexp-token sig 'public-key)))
    (cond ((not (equal? (hash-data->bytevector data)
                        (sha256 (string->utf8 prefix)))) "hash-mismatch")
          ((not (member (canonical-sexp->sexp key) acl)) "unauthorized")
          ((verify (find-sexp-token sig 'sig-val) data key) "valid")
          (else "invalid-signature"))))
${
      Object.entries(texts).map(([name, text]) =>
        `(emit "check-${name}" (check ${JSON.stringify(text)}))`
      ).join("\n")
    }
(define pair (generate-key
  (string->canonical-sexp "(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")))
(define secret (find-sexp-token pair 'private-key))
(define public (find-sexp-token pair 'public-key))
(define data (bytevector->hash-data
  (sha256 (string->utf8 ${JSON.stringify(PREFIX)})) #:key-type 'ecc))
(define signature (string->canonical-sexp
  (format #f "(signature ~a ~a ~a)" (sexp-text data)
          (sexp-text (sign data secret)) (sexp-text public))))
(emit "their-secret" (sexp-text secret))
(emit "their-public" (sexp-text public))
(emit "their-value" (string-append "1;ci.example;"
  (base64-encode (string->utf8 (sexp-text signature)))))
`;
    const out = await runGuile(script);

    await t.step(
      "Guix-style checking accepts ours and rejects tampering",
      () => {
        assert.equal(out.get("check-good"), "valid");
        assert.equal(out.get("check-tampered"), "hash-mismatch");
        assert.equal(out.get("check-unauthorized"), "unauthorized");
      },
    );
    const theirValue = out.get("their-value") ?? "";
    const theirPublic = parsePublicKey(out.get("their-public") ?? "");
    await t.step("a libgcrypt-signed narinfo verifies here", () => {
      const text = `${PREFIX}Signature: ${theirValue}\n${SUFFIX}`;
      assert.equal(verifyNarinfoText(text, [theirPublic]).ok, true);
      const edited = text.replace("NarSize: 226560", "NarSize: 1");
      assert.deepEqual(verifyNarinfoText(edited, [theirPublic]), {
        ok: false,
        reason: "hash-mismatch",
      });
    });
    await t.step(
      "our Signature value equals libgcrypt's for the same key",
      () => {
        const theirSecret = parseSecretKey(out.get("their-secret") ?? "");
        assert.equal(
          signNarinfoPrefix(PREFIX, theirSecret, "ci.example"),
          theirValue,
        );
      },
    );
  },
});
