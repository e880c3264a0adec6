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
