import assert from "node:assert/strict";
import { type Datum, isSym, sym } from "../../../lib/sexp/datum.ts";
import {
  positionOf,
  readAllSexps,
  readSexp,
  SexpSyntaxError,
} from "../../../lib/sexp/read.ts";
import { writeSexp } from "../../../lib/sexp/write.ts";
import { GUILE_REWRITE, guileAvailable, runGuile } from "./_guile.ts";

const READS: [string, Datum][] = [
  ["(worker-request-info)", [sym("worker-request-info")]],
  [
    '(server-info (worker-address "10.0.0.7") (log-port 5556) (publish-port #f))',
    [
      sym("server-info"),
      [sym("worker-address"), "10.0.0.7"],
      [sym("log-port"), 5556],
      [sym("publish-port"), false],
    ],
  ],
  ["()", []],
  ["  \n\t(a  ( b ) )", [sym("a"), [sym("b")]]],
  ["[a b]", [sym("a"), sym("b")]],
  ["#t", true],
  ["#true", true],
  ["#F", false],
  ["#false", false],
  ["-0", 0],
  ["+5", 5],
  ["007", 7],
  ["9007199254740991", 9007199254740991],
  ["9007199254740992", 9007199254740992n],
  ["-98765432109876543210", -98765432109876543210n],
  ["1+", sym("1+")],
  ["-", sym("-")],
  ["...", sym("...")],
  ["a'b", sym("a'b")],
  ["a#b", sym("a#b")],
  ["{a", sym("{a")],
  ["|a", sym("|a")],
  ["\xa0a", sym("\xa0a")],
  ["#{}#", sym("")],
  ["#{hello world}#", sym("hello world")],
  ["#{a\\x28;b}#", sym("a(b")],
  ["#{a}b}#", sym("a}b")],
  ["#{a \\b}#", sym("a b")],
  ["#{a\\\\b}#", sym("a\\b")],
  ["#{\\x1f600;}#", sym("😀")],
  ['"plain"', "plain"],
  ['"\\a\\b\\t\\n\\v\\f\\r\\0\\\\\\""', '\x07\b\t\n\v\f\r\0\\"'],
  ['"\\x41;"', "A;"],
  ['"\\u00e9\\U01f600"', "é😀"],
  ['"a\\\n   b"', "a   b"],
  ['"raw\nnewline"', "raw\nnewline"],
  ['"é😀"', "é😀"],
  ["(a)b", [sym("a")]],
  ['a"b"', sym("a")],
];

Deno.test("readSexp() reads Guile's written syntax", async (t) => {
  for (const [text, expected] of READS) {
    await t.step(JSON.stringify(text), () => {
      assert.deepEqual(readSexp(text), expected);
    });
  }
});

Deno.test("readSexp() reads UTF-8 bytes", () => {
  assert.deepEqual(
    readSexp(new TextEncoder().encode('(machine "büilder")')),
    [sym("machine"), "büilder"],
  );
});

Deno.test("readSexp() ignores what follows the first datum", () => {
  assert.deepEqual(readSexp("(no-build) trailing ) garbage ("), [
    sym("no-build"),
  ]);
});

const FAILURES: [string, string][] = [
  ["", "no datum in input"],
  ["   \n ", "no datum in input"],
  ["(a (b)", "unexpected end of input: list at 1:1 is not closed"],
  [")", 'unexpected ")"'],
  ["(a]", '"]" closes a list opened with "("'],
  ['"abc', "unterminated string"],
  ['"\\q"', 'invalid escape "\\\\q" in string'],
  ['"\\x4"', "invalid escape"],
  ['"\\ud800"', "not a character"],
  ["#{abc", "unterminated #{ symbol"],
  ["#{a\\x41}#", "invalid \\x escape"],
  ["1.5", 'unsupported number "1.5"'],
  ["1/2", 'unsupported number "1/2"'],
  ["+inf.0", "unsupported number"],
  ["(a . b)", "dotted pairs are not supported"],
  ["#(1 2)", 'unsupported syntax "#"'],
  ["#\\a", 'unsupported syntax "#\\\\a"'],
  ["#:kw", 'unsupported syntax "#:kw"'],
  ["#tru", 'unsupported syntax "#tru"'],
  ["; comment\n1", "comments are not allowed"],
  ["'a", 'quote syntax "\'a" is not allowed'],
];

Deno.test("readSexp() rejects malformed input", async (t) => {
  for (const [text, message] of FAILURES) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => readSexp(text), (error) => {
        assert.ok(error instanceof SexpSyntaxError);
        assert.ok(error instanceof SyntaxError);
        assert.equal(error.name, "SexpSyntaxError");
        assert.ok(
          error.message.includes(message),
          `${JSON.stringify(error.message)} lacks ${JSON.stringify(message)}`,
        );
        return true;
      });
    });
  }
});

Deno.test("readSexp() locates errors by line and column", () => {
  assert.throws(() => readSexp("(a\n  (b\n   c]"), (error) => {
    assert.ok(error instanceof SexpSyntaxError);
    assert.equal(error.line, 3);
    assert.equal(error.column, 5);
    assert.equal(error.offset, 12);
    assert.match(error.message, /^Cannot read s-expression at 3:5: /);
    return true;
  });
});

Deno.test("readSexp() rejects invalid UTF-8", () => {
  assert.throws(
    () => readSexp(new Uint8Array([0x22, 0xff, 0x22])),
    /not valid UTF-8/,
  );
});

Deno.test("readSexp() reads each input alone: a character cut short at the end of one is not completed by the next", () => {
  // The first two bytes of "€" end the first input; the next input's
  // last byte would complete it, were any decoding state kept between.
  assert.throws(
    () => readSexp(new Uint8Array([0x22, 0xe2, 0x82])),
    /not valid UTF-8/,
  );
  assert.throws(
    () => readSexp(new Uint8Array([0xac, 0x22, 0x22])),
    /not valid UTF-8/,
  );
  assert.equal(
    readSexp(new Uint8Array([0x22, 0xe2, 0x82, 0xac, 0x22])),
    "€",
  );
});

Deno.test("readSexp() enforces maxDepth", () => {
  assert.equal(
    (readSexp("(".repeat(64) + ")".repeat(64)) as Datum[]).length,
    1,
  );
  assert.throws(
    () => readSexp("(".repeat(65) + ")".repeat(65)),
    (error) =>
      error instanceof SexpSyntaxError &&
      error.message.includes("maxDepth 64"),
  );
  assert.throws(() => readSexp("((()))", { maxDepth: 2 }), /maxDepth 2/);
  // Unbalanced input a million deep fails fast instead of overflowing.
  assert.throws(() => readSexp("(".repeat(1_000_000)), /maxDepth/);
});

Deno.test("readSexp() enforces maxLength in bytes", () => {
  assert.deepEqual(readSexp('"éé"', { maxLength: 6 }), "éé");
  assert.throws(
    () => readSexp('"ééé"', { maxLength: 7 }),
    /longer than maxLength 7 bytes/,
  );
  assert.throws(
    () => readSexp(new Uint8Array(9), { maxLength: 8 }),
    SexpSyntaxError,
  );
});

Deno.test("readAllSexps() reads every datum", () => {
  assert.deepEqual(readAllSexps(" a 1 (b) #f "), [
    sym("a"),
    1,
    [sym("b")],
    false,
  ]);
  assert.deepEqual(readAllSexps(""), []);
  assert.throws(() => readAllSexps("a (b"), SexpSyntaxError);
});

Deno.test("readSexp() in Scheme mode skips comments and expands quotes", () => {
  const text = `;; a spec file
#| block #| nested |# comment |#
#!guile header!#
(list 'all \`(a ,b ,@c) #;(ignored form) x #;#;y z w)`;
  assert.deepEqual(readSexp(text, { scheme: true }), [
    sym("list"),
    [sym("quote"), sym("all")],
    [sym("quasiquote"), [
      sym("a"),
      [sym("unquote"), sym("b")],
      [sym("unquote-splicing"), sym("c")],
    ]],
    sym("x"),
    sym("w"),
  ]);
  assert.throws(
    () => readSexp("(a #;)", { scheme: true }),
    /unexpected "\)"/,
  );
  assert.throws(
    () => readSexp("'", { scheme: true }),
    /"quote" prefix at 1:1 is not closed/,
  );
  assert.throws(() => readSexp("#| open", { scheme: true }), /unterminated/);
});

Deno.test("readSexp() records list positions on request", () => {
  const datum = readSexp("; c\n(a\n  (b 'c))", {
    scheme: true,
    positions: true,
  }) as Datum[];
  assert.deepEqual(positionOf(datum), { offset: 4, line: 2, column: 1 });
  const inner = datum[1] as Datum[];
  assert.deepEqual(positionOf(inner), { offset: 9, line: 3, column: 3 });
  assert.deepEqual(positionOf(inner[1] as Datum[]), {
    offset: 12,
    line: 3,
    column: 6,
  });
  assert.equal(positionOf(readSexp("(a)") as Datum[]), undefined);
});

Deno.test("isSym() checks the name when given", () => {
  assert.ok(isSym(sym("a")));
  assert.ok(isSym(sym("a"), "a"));
  assert.ok(!isSym(sym("a"), "b"));
  assert.ok(!isSym("a"));
});

Deno.test({
  name: "readSexp() agrees with Guile's read on escapes (needs guile)",
  ignore: !guileAvailable,
  async fn() {
    const texts = READS.map(([text]) => text).filter((text) =>
      // Guile reads a bracket list, which we accept as a plain list too.
      !text.startsWith("[")
    );
    const output = await runGuile(
      GUILE_REWRITE,
      texts.map((text) => `(${text})`).join("\n"),
    );
    const guileData = readAllSexps(output).map((d) => (d as Datum[])[0]);
    const ours = texts.map((text) => readSexp(text));
    assert.deepEqual(guileData.map(writeSexp), ours.map(writeSexp));
  },
});

// Each input is 3 MiB: read in a few hundred milliseconds when reading is
// linear (more under a parallel test run on this machine's slow hours), in
// tens of seconds when each escape or string scans the rest of the text.
const LINEAR_BUDGET_MS = 5000;

Deno.test("readSexp() reads many escapes and many strings in time linear in the input", async (t) => {
  const escapes = 1536 * 1024;
  const strings = 1024 * 1024;
  const inputs: [string, string, (datum: Datum) => void][] = [
    [
      "one string of many escapes, closed at the far end",
      `"${"\\n".repeat(escapes)}"`,
      (datum) => assert.equal(datum, "\n".repeat(escapes)),
    ],
    [
      "many short strings and no backslash anywhere",
      `(${'"" '.repeat(strings)})`,
      (datum) => assert.equal((datum as Datum[]).length, strings),
    ],
  ];
  for (const [what, text, check] of inputs) {
    await t.step(what, () => {
      const started = performance.now();
      const datum = readSexp(text);
      const tookMs = performance.now() - started;
      check(datum);
      assert.ok(
        tookMs < LINEAR_BUDGET_MS,
        `read ${text.length} characters in ${Math.round(tookMs)} ms`,
      );
    });
  }
});
