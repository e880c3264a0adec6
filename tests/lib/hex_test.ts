import assert from "node:assert/strict";
import { toHex } from "../../lib/hex.ts";

Deno.test("toHex() writes two lower-case digits per byte, zeros kept", () => {
  assert.equal(toHex(new Uint8Array([0, 1, 0x0f, 0xa0, 0xff])), "00010fa0ff");
  assert.equal(toHex(new Uint8Array(0)), "");
});
