import assert from "node:assert/strict";
import { decodeNixBase32 } from "../../../lib/guix/base32.ts";
import {
  compressHash,
  makeFixedOutputStorePath,
  makeSourceStorePath,
  makeStorePath,
  makeTextStorePath,
  sha256,
  toHex,
} from "../../../lib/guix/store_hash.ts";
import { commandWorks, hexOf, mulberry32, runOffline } from "./_support.ts";

// No substituter, so Nix never tries the network.
const nixAvailable = commandWorks("nix-store", ["--version"]);
const HELLO_SHA256 =
  "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
// The NAR of a regular file holding "hello\n", from guix.md §4.
const HELLO_NAR_HEX = [
  "0d00000000000000",
  hexOf("nix-archive-1") + "000000",
  "0100000000000000",
  hexOf("(") + "00000000000000",
  "0400000000000000",
  hexOf("type") + "00000000",
  "0700000000000000",
  hexOf("regular") + "00",
  "0800000000000000",
  hexOf("contents"),
  "0600000000000000",
  hexOf("hello\n") + "0000",
  "0100000000000000",
  hexOf(")") + "00000000000000",
].join("");

Deno.test("sha256() hashes strings as UTF-8 and bytes as given", () => {
  assert.equal(toHex(sha256("hello\n")), HELLO_SHA256);
  assert.equal(
    toHex(sha256(new TextEncoder().encode("hello\n"))),
    HELLO_SHA256,
  );
  assert.deepEqual(sha256("é"), sha256(new Uint8Array([0xc3, 0xa9])));
});

Deno.test("compressHash() folds by XOR", () => {
  const hash = new Uint8Array(32).map((_, i) => i);
  const folded = compressHash(hash, 20);
  assert.equal(folded.length, 20);
  assert.equal(folded[0], 0 ^ 20);
  assert.equal(folded[11], 11 ^ 31);
  assert.equal(folded[12], 12);
});

Deno.test("store path computations reproduce the guix.md vectors", () => {
  const nar = fromHex(HELLO_NAR_HEX);
  assert.equal(nar.length, 120);
  const table: [string, string][] = [
    [
      makeSourceStorePath("f.txt", sha256(nar), "/gnu/store"),
      "/gnu/store/gv3ypdcsxx987gsh2ksjq2q9sq5a0lvw-f.txt",
    ],
    [
      makeFixedOutputStorePath(
        "hello.txt",
        "sha256",
        HELLO_SHA256,
        "/gnu/store",
      ),
      "/gnu/store/wxykb3w2hprzmc82c32q49pfzwx2drsa-hello.txt",
    ],
    [
      makeStorePath(
        "output:out",
        toHex(sha256(`fixed:out:sha256:${HELLO_SHA256}:`)),
        "hello.txt",
        "/gnu/store",
      ),
      "/gnu/store/wxykb3w2hprzmc82c32q49pfzwx2drsa-hello.txt",
    ],
    [
      makeFixedOutputStorePath(
        "f.txt",
        "r:sha256",
        toHex(sha256(nar)),
        "/gnu/store",
      ),
      "/gnu/store/gv3ypdcsxx987gsh2ksjq2q9sq5a0lvw-f.txt",
    ],
  ];
  for (const [actual, expected] of table) assert.equal(actual, expected);
});

Deno.test("makeStorePath() depends on the store directory", () => {
  const inner = toHex(sha256("x"));
  assert.notEqual(
    makeStorePath("source", inner, "x", "/gnu/store").slice(-34),
    makeStorePath("source", inner, "x", "/nix/store").slice(-34),
  );
  assert.match(
    makeStorePath("source", inner, "x", "/nix/store"),
    /^\/nix\/store\/[0-9a-z]{32}-x$/,
  );
});

Deno.test("makeTextStorePath() sorts its references", () => {
  const a = "/gnu/store/gv3ypdcsxx987gsh2ksjq2q9sq5a0lvw-f.txt";
  const b = "/gnu/store/wxykb3w2hprzmc82c32q49pfzwx2drsa-hello.txt";
  assert.equal(
    makeTextStorePath("t", "x", [b, a], "/gnu/store"),
    makeTextStorePath("t", "x", [a, b], "/gnu/store"),
  );
  assert.notEqual(
    makeTextStorePath("t", "x", [a], "/gnu/store"),
    makeTextStorePath("t", "x", [], "/gnu/store"),
  );
});

Deno.test({
  name:
    "store paths agree with nix-store --add, --add-fixed and toFile (needs nix-store)",
  ignore: !nixAvailable,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const store = `local?root=${dir}/r&store=/gnu/store`;
      const random = mulberry32(3);
      for (let i = 0; i < 4; i++) {
        const content = `file ${i} ${random()}\n`.repeat(i + 1);
        const name = `item-${i}.txt`;
        await Deno.writeTextFile(`${dir}/${name}`, content);
        const flat = runOffline("nix-store", [
          "--store",
          store,
          "--add-fixed",
          "sha256",
          `${dir}/${name}`,
        ]);
        assert.equal(
          makeFixedOutputStorePath(
            name,
            "sha256",
            toHex(sha256(content)),
            "/gnu/store",
          ),
          flat,
        );
        // nix-store --add is a recursive import; hash the NAR the §4 way.
        const added = runOffline("nix-store", [
          "--store",
          store,
          "--add",
          `${dir}/${name}`,
        ]);
        const narHash = runOffline("nix-hash", [
          "--type",
          "sha256",
          "--base32",
          `${dir}/${name}`,
        ]);
        assert.equal(
          makeSourceStorePath(name, decodeNixBase32(narHash), "/gnu/store"),
          added,
        );
        // A text item referring to the two items above.
        const expression =
          `builtins.toFile "t-${i}" "see \${${dir}/${name}} and \${builtins.toFile "u" "x"}"`;
        const textPath = JSON.parse(
          runOffline("nix-instantiate", [
            "--store",
            store,
            "--eval",
            "-E",
            expression,
          ]),
        );
        const inner = runOffline("nix-instantiate", [
          "--store",
          store,
          "--eval",
          "-E",
          `builtins.toFile "u" "x"`,
        ]);
        const u = JSON.parse(inner);
        assert.equal(u, makeTextStorePath("u", "x", [], "/gnu/store"));
        assert.equal(
          makeTextStorePath(
            `t-${i}`,
            `see ${added} and ${u}`,
            [u, added],
            "/gnu/store",
          ),
          textPath,
        );
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function fromHex(hex: string): Uint8Array {
  return new Uint8Array(
    hex.match(/../g)!.map((pair) => parseInt(pair, 16)),
  );
}
