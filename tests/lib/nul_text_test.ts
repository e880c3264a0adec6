import assert from "node:assert/strict";
import { describeNul, findNul } from "../../lib/nul_text.ts";

Deno.test("findNul names the field of the first NUL, arrays by index and keys by name", () => {
  const value = {
    name: "hello",
    channels: [{ url: "file:///a" }, { url: "file:///b\0c", branch: "x" }],
  };
  assert.deepEqual(findNul(value), {
    path: "channels[1].url",
    text: "file:///b\0c",
  });
  assert.deepEqual(
    findNul([["ok"], ["ok", "x\0"]], "jobs")?.path,
    "jobs[1][1]",
  );
});

Deno.test("findNul finds a NUL in a key and none in clean or non-text values", () => {
  assert.deepEqual(findNul({ ["a\0b"]: 1 }), { path: "a\0b", text: "a\0b" });
  assert.deepEqual(
    findNul({ n: 1, b: true, z: null, list: ["a", { c: "d" }] }),
    null,
  );
  assert.deepEqual(findNul(undefined), null);
});

Deno.test("describeNul escapes the NUL in its message", () => {
  assert.deepEqual(
    describeNul({ path: "job", text: "a\0b" }),
    'field "job" holds a NUL character (U+0000): "a\\u0000b"',
  );
});

Deno.test("findNul finds a lone UTF-16 surrogate too (both drivers would store U+FFFD in its place), not a pair", () => {
  const lone = JSON.parse('"job\\ud800x"') as string;
  assert.deepEqual(findNul({ jobs: [{ name: lone }] }), {
    path: "jobs[0].name",
    text: lone,
  });
  const trailing = JSON.parse('"\\udc00"') as string;
  assert.deepEqual(findNul({ [trailing]: 1 })?.path, trailing);
  assert.equal(findNul({ name: "emoji \u{1F600} and \u00e9" }), null);
  assert.equal(
    describeNul({ path: "name", text: lone }),
    'field "name" holds a lone UTF-16 surrogate, no Unicode character: "job\\ud800x"',
  );
  // A long text is shown around its lone surrogate.
  const long = "a".repeat(300) + trailing + "b";
  assert.match(describeNul({ path: "", text: long }), /…a+\\udc00b"$/);
});
