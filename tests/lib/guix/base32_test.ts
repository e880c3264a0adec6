import assert from "node:assert/strict";
import {
  Base32SyntaxError,
  decodeNixBase32,
  encodeNixBase32,
} from "../../../lib/guix/base32.ts";
import { sha256, toHex } from "../../../lib/guix/store_hash.ts";
import { commandWorks, mulberry32, OFFLINE } from "./_support.ts";

// No substituter, so Nix never tries the network.
const nixAvailable = commandWorks("nix-hash", ["--version"]);

Deno.test('encodeNixBase32() matches the sha256("") vector', () => {
  assert.equal(
    encodeNixBase32(sha256("")),
    "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
  );
});

Deno.test("encodeNixBase32() gives ceil(8L/5) characters", () => {
  const table: [number, number][] = [[0, 0], [1, 2], [5, 8], [20, 32], [
    32,
    52,
  ], [64, 103]];
  for (const [bytes, chars] of table) {
    assert.equal(encodeNixBase32(new Uint8Array(bytes)).length, chars);
  }
});

Deno.test("decodeNixBase32() inverts encodeNixBase32() on seeded random bytes", () => {
  const random = mulberry32(5);
  for (let i = 0; i < 300; i++) {
    const bytes = new Uint8Array(Math.floor(random() * 70));
    for (let k = 0; k < bytes.length; k++) {
      bytes[k] = Math.floor(random() * 256);
    }
    assert.deepEqual(decodeNixBase32(encodeNixBase32(bytes)), bytes);
  }
});

Deno.test("decodeNixBase32() rejects bad text naming the character", () => {
  const good = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
  const table: [string, number, string][] = [
    [good.slice(0, 10) + "e" + good.slice(11), 10, "e"],
    [good.slice(0, 3) + "o" + good.slice(4), 3, "o"],
    [good.slice(0, 51) + "u", 51, "u"],
    [good.slice(0, 20) + "T" + good.slice(21), 20, "T"],
    // 52 characters hold 260 bits; a leading digit of 2 or more sets bit 256+.
    ["z" + good.slice(1), 0, "z"],
  ];
  for (const [text, offset, character] of table) {
    assert.throws(() => decodeNixBase32(text), (error) => {
      assert.ok(error instanceof Base32SyntaxError);
      assert.ok(error instanceof SyntaxError);
      assert.equal(error.offset, offset);
      assert.equal(error.character, character);
      assert.match(error.message, new RegExp(JSON.stringify(character)));
      return true;
    });
  }
  assert.throws(() => decodeNixBase32("0"), Base32SyntaxError);
  assert.throws(() => decodeNixBase32(good.slice(1)), Base32SyntaxError);
});

Deno.test({
  name: "encodeNixBase32() agrees with nix-hash --to-base32 (needs nix-hash)",
  ignore: !nixAvailable,
  fn() {
    const random = mulberry32(11);
    for (let i = 0; i < 8; i++) {
      const digest = sha256(String(random()));
      const hex = toHex(digest);
      const output = new Deno.Command("nix-hash", {
        env: OFFLINE,
        args: ["--type", "sha256", "--to-base32", hex],
      }).outputSync();
      assert.ok(output.success);
      const expected = new TextDecoder().decode(output.stdout).trim();
      assert.equal(encodeNixBase32(digest), expected);
      assert.deepEqual(decodeNixBase32(expected), digest);
    }
  },
});
