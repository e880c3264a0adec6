import assert from "node:assert/strict";
import {
  derivationStoreDir,
  isDerivationPath,
  parseDerivationPath,
  StorePathError,
} from "../../../lib/guix/store_path.ts";

const STORE = "/gnu/store";
const HASH = "0123456789abcdfghijklmnpqrsvwxyz";

// What a hostile server put where a derivation belongs (all seen reaching
// `guix build`'s command line before the worker checked them).
const NOT_DERIVATIONS = [
  '--expression=(begin (mkdir "/tmp/x") #f)',
  "--load=/tmp/evil.scm",
  "--version",
  "-e",
  "hello",
  "/etc/passwd",
  `${STORE}/../../../../etc/shadow`,
  `${STORE}/${HASH}-a/../../../../etc/shadow.drv`,
  `${STORE}/${HASH}-hello.drv/x.drv`,
  `${STORE}/${HASH}-.drv`,
  `${STORE}/${HASH}-..drv`,
  `${STORE}/${HASH}-hello`,
  `${STORE}/${HASH}-hello drv.drv`,
  `${STORE}/${HASH}-hello\n.drv`,
  `${STORE}/${HASH.slice(1)}e-hello.drv`,
  `${STORE}/${HASH}hello.drv`,
  `${STORE}/${HASH}-${"x".repeat(208)}.drv`,
  `${STORE}//${HASH}-hello.drv`,
  `/nix/store/${HASH}-hello.drv`,
  `${HASH}-hello.drv`,
  "",
];

Deno.test("parseDerivationPath() takes a .drv item of the store, parts and all", () => {
  for (const name of ["hello-2.12.drv", "a.drv", "-x.drv", "g++_?=.drv"]) {
    assert.deepEqual(parseDerivationPath(`${STORE}/${HASH}-${name}`, STORE), {
      path: `${STORE}/${HASH}-${name}`,
      hash: HASH,
      name,
      basename: `${HASH}-${name}`,
    });
  }
  assert.equal(
    isDerivationPath(`/tmp/s/${HASH}-${"x".repeat(207)}.drv`, "/tmp/s"),
    true,
  );
});

Deno.test("parseDerivationPath() refuses options, packages, other files and escapes, naming them", async (t) => {
  for (const value of NOT_DERIVATIONS) {
    await t.step(JSON.stringify(value), () => {
      assert.equal(isDerivationPath(value, STORE), false);
      assert.throws(
        () => parseDerivationPath(value, STORE),
        (error: unknown) =>
          error instanceof StorePathError && error.value === value &&
          error.message.startsWith("Cannot parse ") &&
          error.message.includes(JSON.stringify(value).slice(0, 40)),
      );
    });
  }
});

Deno.test("derivationStoreDir() names the store a derivation path is in, when that is a plain absolute directory", () => {
  assert.equal(derivationStoreDir(`${STORE}/${HASH}-hello.drv`), STORE);
  assert.equal(derivationStoreDir(`/srv/other/${HASH}-a.drv`), "/srv/other");
  // A worker takes the store so named for the server's, and stops when it
  // is not its own: "/gnu/store/../../etc" was no store, only a path that
  // a hostile server made up, and it stopped the worker all the same.
  for (
    const value of [
      `${STORE}/../../etc/${HASH}-hello.drv`,
      `${STORE}/./${HASH}-hello.drv`,
      `/gnu//store/${HASH}-hello.drv`,
      `gnu/store/${HASH}-hello.drv`,
      `/${HASH}-hello.drv`,
      `${STORE}/${HASH}-hello`,
      "/etc/passwd",
      "",
    ]
  ) {
    assert.equal(derivationStoreDir(value), undefined, value);
  }
});
