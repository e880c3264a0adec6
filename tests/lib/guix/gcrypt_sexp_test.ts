import assert from "node:assert/strict";
import {
  formatAdvanced,
  formatCanonical,
  type GcryptSexp,
  GcryptSexpError,
  parseGcryptSexp,
} from "../../../lib/guix/gcrypt_sexp.ts";
import { guileGcryptAvailable, runGuile } from "./guile_gcrypt.ts";

const te = new TextEncoder();
const a = (text: string) => te.encode(text);
const bytes = (...values: number[]) => Uint8Array.from(values);

Deno.test("parseGcryptSexp() reads every atom syntax", async (t) => {
  const cases: [string, string | Uint8Array, GcryptSexp][] = [
    ["tokens", "(public-key ecc)", [a("public-key"), a("ecc")]],
    ["token specials", "(a-b.c/d_e:f*g+h=i x1)", [
      a("a-b.c/d_e:f*g+h=i"),
      a("x1"),
    ]],
    ["canonical", "(3:abc2:de)", [a("abc"), a("de")]],
    ["canonical with binary", bytes(0x28, 0x32, 0x3a, 0x00, 0x29, 0x29), [
      bytes(0x00, 0x29),
    ]],
    ["hex", "(q #0aFf#)", [a("q"), bytes(0x0a, 0xff)]],
    ["hex with spaces", "(q # 41 42 #)", [a("q"), a("AB")]],
    ["base64", "(a |YWJj|)", [a("a"), a("abc")]],
    ["quoted", '(a "x y")', [a("a"), a("x y")]],
    ["escapes", '(a "\\n\\t\\"\\\\\\x41\\101\\\'")', [
      a("a"),
      a("\n\t\"\\AA'"),
    ]],
    ["line continuation", '(a "q\\\nw")', [a("a"), a("qw")]],
    ["empty string", '(a "")', [a("a"), new Uint8Array()]],
    ["length hints", '(3"abc" 2#4142# 3|YWJj|)', [a("abc"), a("AB"), a("abc")]],
    ["nested and whitespace", " \n( a\t(b (c) ) ()\r\n)\n ", [
      a("a"),
      [a("b"), [a("c")]],
      [],
    ]],
  ];
  for (const [name, input, expected] of cases) {
    await t.step(
      name,
      () => assert.deepEqual(parseGcryptSexp(input), expected),
    );
  }
});

Deno.test("parseGcryptSexp() rejects malformed input with an offset", async (t) => {
  const cases: [string, string][] = [
    ["bare number", "(a 123)"],
    ["digit-led token", "(a 1a)"],
    ["odd hex", "(a #414#)"],
    ["bad hex digit", "(a #4G#)"],
    ["unclosed list", "(a (b)"],
    ["unclosed string", '(a "abc)'],
    ["unknown escape", '(a "\\q")'],
    ["spaces in base64", "(a |YW Jj|)"],
    ["bad base64", "(a |Y|)"],
    ["length past end", "(9:abc)"],
    ["hint mismatch", '(2"abc")'],
    ["leading zero length", "(03:abc)"],
    ["atom at top level", "abc"],
    ["trailing data", "(a) junk"],
    ["two lists", "(a)(b)"],
    ["stray close", ")"],
    ["display hint", "([x]y)"],
    ["empty input", ""],
  ];
  for (const [name, input] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseGcryptSexp(input), (error) => {
        assert.ok(error instanceof GcryptSexpError);
        assert.ok(error instanceof SyntaxError);
        assert.equal(typeof error.offset, "number");
        assert.match(error.message, /^Cannot parse S-expression: /);
        return true;
      });
    });
  }
});

Deno.test("parseGcryptSexp() enforces maxBytes and maxDepth", () => {
  const deep = "(".repeat(10) + ")".repeat(10);
  assert.deepEqual(
    parseGcryptSexp(deep, { maxDepth: 10 }),
    [[[[[[[[[[]]]]]]]]]],
  );
  assert.throws(() => parseGcryptSexp(deep, { maxDepth: 9 }), GcryptSexpError);
  assert.throws(
    () => parseGcryptSexp("(".repeat(100_000) + ")".repeat(100_000)),
    GcryptSexpError,
  );
  assert.throws(
    () => parseGcryptSexp("(abcdef)", { maxBytes: 7 }),
    GcryptSexpError,
  );
});

Deno.test("formatAdvanced() lays out a public key as guix writes signing-key.pub", () => {
  const q = new Uint8Array(32).fill(0xab);
  const key: GcryptSexp = [a("public-key"), [a("ecc"), [
    a("curve"),
    a("Ed25519"),
  ], [
    a("q"),
    q,
  ]]];
  assert.equal(
    formatAdvanced(key),
    "(public-key \n (ecc \n  (curve Ed25519)\n  (q #" + "AB".repeat(32) +
      "#)\n  )\n )\n",
  );
});

Deno.test("formatAdvanced() chooses token, string or hex per atom", async (t) => {
  const cases: [string, Uint8Array, string][] = [
    ["token", a("sha256"), "(sha256)\n"],
    ["digit-led text", a("1abc"), '("1abc")\n'],
    ["text with space", a("x y"), '("x y")\n'],
    ["escaped controls", a("a\nb'\""), '("a\\nb\\\'\\"")\n'],
    ["empty", new Uint8Array(), '("")\n'],
    ["binary", bytes(0x01, 0x02), "(#0102#)\n"],
    ["high bit", bytes(0x80), "(#80#)\n"],
  ];
  for (const [name, atom, expected] of cases) {
    await t.step(name, () => assert.equal(formatAdvanced([atom]), expected));
  }
});

Deno.test("formatCanonical() writes length-prefixed atoms and round-trips", () => {
  const sexp: GcryptSexp = [a("data"), [
    a("hash"),
    a("sha256"),
    bytes(0, 0x29),
  ]];
  const canonical = formatCanonical(sexp);
  assert.equal(
    new TextDecoder().decode(canonical),
    "(4:data(4:hash6:sha2562:\u0000)))",
  );
  assert.deepEqual(parseGcryptSexp(canonical), sexp);
  assert.deepEqual(parseGcryptSexp(formatAdvanced(sexp)), sexp);
});

// The ASCII-only samples below must be printed byte for byte as libgcrypt's
// gcry_sexp_sprint (advanced mode) prints them.
Deno.test({
  name:
    "formatAdvanced() matches libgcrypt's printer (needs guile + guile-gcrypt)",
  ignore: !guileGcryptAvailable,
  async fn(t) {
    const samples: GcryptSexp[] = [
      [a("a")],
      [a("a"), a("b"), a("c")],
      [a("a"), [], [a("b")], a("c")],
      [a("a"), [a("b"), [a("c"), [a("d")]]], [a("e")], a("f"), a("g")],
      [[a("x")], [a("y")]],
      [
        a("s"),
        a("x y"),
        a("1abc"),
        a("a\nb'\"\\"),
        new Uint8Array(),
        a("tab\t"),
      ],
      [a("bin"), bytes(0x01, 0x7f), bytes(0x00), bytes(0x1f, 0x41)],
      [a("sig"), [a("r"), bytes(0x06, 0x9c)], [a("s"), bytes(0x7a)]],
    ];
    // Fed in advanced syntax: libgcrypt refuses the canonical "0:" empty atom.
    const script = samples.map((sample, i) =>
      `(emit "sample-${i}" (sexp-text (string->canonical-sexp ${
        JSON.stringify(formatAdvanced(sample))
      })))`
    ).join("\n");
    const out = await runGuile(script);
    for (const [i, sample] of samples.entries()) {
      await t.step(`sample ${i}`, () => {
        const theirs = out.get(`sample-${i}`) ?? "missing";
        assert.equal(formatAdvanced(sample), theirs);
        assert.deepEqual(parseGcryptSexp(theirs), sample);
      });
    }
  },
});
