import assert from "node:assert/strict";
import {
  type Derivation,
  derivationHashModulo,
  derivationOutputPaths,
  DrvSyntaxError,
  instantiateDerivation,
  parseDerivation,
  printDerivation,
} from "../../../lib/guix/drv.ts";
import { commandWorks, mulberry32, OFFLINE } from "./_support.ts";

// No substituter, so Nix never tries the network.
const nixAvailable = commandWorks("nix-instantiate", ["--version"]);
const STORE = "/gnu/store";
const GUILE_DRV = "/gnu/store/lrp828kq63nslm50c1xc47li188jwq1d-guile-3.0.9.drv";
const GUILE_OUT = "/gnu/store/ixmg0cz3i5lh3xyq0lf87grryrrxwh44-guile-3.0.9";
const GUILE_DEBUG =
  "/gnu/store/xvvd7ca4k21mplblvkwfqjnwasg45lqr-guile-3.0.9-debug";
const HELLO_BUILDER =
  "/gnu/store/nbchfaqwkn5a5bxag03lnlq0s0b4yd18-hello-2.12-builder";
const HELLO_DRV = "/gnu/store/i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv";
const HELLO_DOC = "/gnu/store/i4di5xix80s76311m0s299h8nja9l3sm-hello-2.12-doc";
const HELLO_OUT = "/gnu/store/rd4hcfrr5zvas3r4w2gd08n812b5z3la-hello-2.12";
// guix.md §6.4, without the line wrapping.
const HELLO_TEXT = [
  `Derive([("doc","${HELLO_DOC}","",""),("out","${HELLO_OUT}","","")],`,
  `[("${GUILE_DRV}",["out"])],["${HELLO_BUILDER}"],"x86_64-linux",`,
  `"${GUILE_OUT}/bin/guile",["--no-auto-compile","${HELLO_BUILDER}"],`,
  `[("doc","${HELLO_DOC}"),("out","${HELLO_OUT}")])`,
].join("");

function guileExample() {
  return instantiateDerivation({
    name: "guile-3.0.9",
    system: "x86_64-linux",
    builder: "/bin/sh",
    args: ["-c", "exit 0"],
    env: {},
    inputDrvs: [],
    inputSrcs: [],
    outputs: ["out", "debug"],
  }, { storeDir: STORE, readInput: () => assert.fail("no inputs") });
}

Deno.test("instantiateDerivation() reproduces the guix.md §6.4 guile drv", () => {
  const guile = guileExample();
  assert.equal(guile.path, GUILE_DRV);
  assert.deepEqual(
    derivationOutputPaths(guile.drv),
    new Map([["debug", GUILE_DEBUG], ["out", GUILE_OUT]]),
  );
  assert.deepEqual(guile.drv.env, [["debug", GUILE_DEBUG], ["out", GUILE_OUT]]);
});

Deno.test("instantiateDerivation() reproduces the guix.md §6.4 hello drv byte for byte", () => {
  const guile = guileExample();
  const reads: string[] = [];
  const hello = instantiateDerivation({
    name: "hello-2.12",
    system: "x86_64-linux",
    builder: `${GUILE_OUT}/bin/guile`,
    args: ["--no-auto-compile", HELLO_BUILDER],
    env: {},
    inputDrvs: [{ path: GUILE_DRV, outputs: ["out"] }],
    inputSrcs: [HELLO_BUILDER],
    outputs: ["doc", "out"],
  }, {
    storeDir: STORE,
    readInput(path) {
      reads.push(path);
      return parseDerivation(guile.text);
    },
  });
  assert.equal(hello.text, HELLO_TEXT);
  assert.equal(hello.path, HELLO_DRV);
  assert.deepEqual(reads, [GUILE_DRV]);
  assert.deepEqual(
    [...derivationOutputPaths(hello.drv).values()],
    [HELLO_DOC, HELLO_OUT],
  );
});

Deno.test("parseDerivation() and printDerivation() round-trip the §6.4 text", () => {
  const drv = parseDerivation(HELLO_TEXT);
  assert.equal(drv.outputs.length, 2);
  assert.deepEqual(drv.inputDrvs, [{ path: GUILE_DRV, outputs: ["out"] }]);
  assert.equal(drv.builder, `${GUILE_OUT}/bin/guile`);
  assert.equal(printDerivation(drv), HELLO_TEXT);
});

Deno.test("derivationHashModulo() uses the cache and hashes fixed outputs by spec", () => {
  const guile = guileExample();
  const cache = new Map<string, Uint8Array>();
  const hello = parseDerivation(HELLO_TEXT);
  let reads = 0;
  const readInput = () => {
    reads++;
    return guile.drv;
  };
  const first = derivationHashModulo(hello, readInput, cache);
  const second = derivationHashModulo(hello, readInput, cache);
  assert.deepEqual(first, second);
  assert.equal(reads, 1);
  assert.ok(cache.has(GUILE_DRV));

  const fixed: Derivation = {
    outputs: [{
      name: "out",
      path: "/gnu/store/wxykb3w2hprzmc82c32q49pfzwx2drsa-hello.txt",
      hashAlgo: "sha256",
      hash: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
    }],
    inputDrvs: [],
    inputSrcs: [],
    system: "x86_64-linux",
    builder: "builtin:download",
    args: [],
    env: [["url", "a"]],
  };
  const other = { ...fixed, env: [["url", "b"]] as [string, string][] };
  assert.deepEqual(
    derivationHashModulo(fixed, readInput),
    derivationHashModulo(other, readInput),
  );
});

Deno.test('printDerivation() escapes only \\" \\\\ \\n \\r \\t and sorts', () => {
  const drv: Derivation = {
    outputs: [{ name: "out", path: "/o", hashAlgo: "", hash: "" }, {
      name: "bin",
      path: "/b",
      hashAlgo: "",
      hash: "",
    }],
    inputDrvs: [{ path: "/z.drv", outputs: ["out", "dev"] }, {
      path: "/a.drv",
      outputs: ["out"],
    }],
    inputSrcs: ["/s2", "/s1"],
    system: "x86_64-linux",
    builder: "/bin/sh",
    args: ["b", 'a"\\\n\r\t\u0001é😀'],
    env: [["z", "1"], ["a", "2"]],
  };
  assert.equal(
    printDerivation(drv),
    'Derive([("bin","/b","",""),("out","/o","","")],[("/a.drv",["out"]),("/z.drv",["dev","out"])],["/s1","/s2"],"x86_64-linux","/bin/sh",["b","a\\"\\\\\\n\\r\\t\u0001é😀"],[("a","2"),("z","1")])',
  );
});

Deno.test("parseDerivation() round-trips seeded random derivations", () => {
  const random = mulberry32(7);
  const alphabet = [
    "a",
    "Z",
    "0",
    '"',
    "\\",
    "\n",
    "\r",
    "\t",
    "é",
    "😀",
    " ",
    "(",
    ",",
    "]",
  ];
  const word = () =>
    Array.from(
      { length: Math.floor(random() * 8) },
      () => alphabet[Math.floor(random() * alphabet.length)],
    ).join("");
  const many = <T>(make: () => T) =>
    Array.from({ length: Math.floor(random() * 4) }, make);
  // Sets and maps of a derivation hold each key once.
  const unique = <T>(items: T[], key: (item: T) => string) => [
    ...new Map(items.map((item) => [key(item), item])).values(),
  ];
  for (let i = 0; i < 200; i++) {
    const drv: Derivation = {
      outputs: unique(
        many(() => ({
          name: word(),
          path: word(),
          hashAlgo: word(),
          hash: word(),
        })),
        (o) => o.name,
      ),
      inputDrvs: unique(
        many(() => ({ path: word(), outputs: unique(many(word), (o) => o) })),
        (input) => input.path,
      ),
      inputSrcs: unique(many(word), (src) => src),
      system: word(),
      builder: word(),
      args: many(word),
      env: unique(
        many((): [string, string] => [word(), word()]),
        ([key]) => key,
      ),
    };
    const text = printDerivation(drv);
    const parsed = parseDerivation(text);
    assert.equal(printDerivation(parsed), text);
    assert.deepEqual(parsed.args, drv.args);
  }
});

Deno.test("parseDerivation() rejects malformed text with an offset", () => {
  const table: [string, number][] = [
    ["", 0],
    ["Derive(", 7],
    ['derive([],[],[],"s","b",[],[])', 0],
    ['Derive([],[],[],"s","b",[],[])x', 30],
    ['Derive([],[],[],"s","b",[],[]', 29],
    ['Derive([],[],[],"s,"b",[],[])', 20],
    ['Derive([],[],[],"s","b\\', 22],
    ['Derive([("out","/o","")],[],[],"s","b",[],[])', 22],
    ['Derive([],[],[],"s","b",[,],[])', 25],
    ['Derive([], [],[],"s","b",[],[])', 10],
  ];
  for (const [text, offset] of table) {
    assert.throws(() => parseDerivation(text), (error) => {
      assert.ok(error instanceof DrvSyntaxError, String(error));
      assert.equal(error.offset, offset, text);
      assert.match(error.message, /^Cannot parse derivation: /);
      return true;
    });
  }
  assert.throws(
    () => parseDerivation(HELLO_TEXT, { maxBytes: 100 }),
    DrvSyntaxError,
  );
});

Deno.test({
  name:
    "nix-instantiate .drv files are reprinted and re-instantiated exactly (needs nix-instantiate)",
  ignore: !nixAvailable,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/src.txt`, "some source\n");
      await Deno.writeTextFile(`${dir}/drvs.nix`, NIX_EXPRESSION);
      const store = `local?root=${dir}/r&store=${STORE}`;
      const output = new Deno.Command("nix-instantiate", {
        env: OFFLINE,
        args: ["--store", store, `${dir}/drvs.nix`],
        stderr: "piped",
      }).outputSync();
      assert.ok(output.success, new TextDecoder().decode(output.stderr));
      const topPaths = new TextDecoder().decode(output.stdout).trim().split(
        "\n",
      );
      assert.equal(topPaths.length, 3);

      const physical = (path: string) =>
        `${dir}/r/nix/store/${path.slice(STORE.length + 1)}`;
      const readInput = (path: string) =>
        parseDerivation(Deno.readTextFileSync(physical(path)));
      const cache = new Map<string, Uint8Array>();
      const checked = new Set<string>();
      let fixed = 0;
      for (const entry of Deno.readDirSync(`${dir}/r/nix/store`)) {
        if (!entry.name.endsWith(".drv")) continue;
        const path = `${STORE}/${entry.name}`;
        const text = Deno.readTextFileSync(physical(path));
        const drv = parseDerivation(text);
        assert.equal(printDerivation(drv), text, entry.name);
        if (drv.outputs.some((output) => output.hash !== "")) {
          fixed++;
          continue;
        }
        const outputNames = drv.outputs.map((output) => output.name);
        const env = Object.fromEntries(
          drv.env.filter(([key]) => !outputNames.includes(key)),
        );
        const result = instantiateDerivation({
          name: env.name,
          system: drv.system,
          builder: drv.builder,
          args: drv.args,
          env,
          inputDrvs: drv.inputDrvs,
          inputSrcs: drv.inputSrcs,
          outputs: outputNames,
        }, { storeDir: STORE, readInput, cache });
        assert.equal(result.text, text, entry.name);
        assert.equal(result.path, path);
        assert.deepEqual(
          derivationOutputPaths(result.drv),
          derivationOutputPaths(drv),
        );
        checked.add(path);
      }
      assert.equal(fixed, 2);
      assert.equal(checked.size, 4);
      for (const top of topPaths) assert.ok(checked.has(top), top);
      // The top derivations' inputs went through the hash-modulo cache.
      assert.equal(cache.size, 4);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// Derivations with input derivations (plain, multi-output, fixed-output
// flat and recursive), an input source, and strings needing every escape;
// "@{" stands for Nix's "${".
const NIX_EXPRESSION = String.raw`
let
  sys = "x86_64-linux";
  base = derivation {
    name = "base-1.0"; system = sys; builder = "/bin/sh";
    args = [ "-c" "echo \"quoted\" \\ back\n\ttab\r é ☃ 😀" ];
    outputs = [ "out" "dev" "doc" ];
  };
  flat = derivation {
    name = "flat.txt"; system = sys; builder = "/bin/sh"; args = [ "-c" "x" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
  };
  tree = derivation {
    name = "tree"; system = sys; builder = "/bin/sh"; args = [ "-c" "y" ];
    outputHashMode = "recursive"; outputHashAlgo = "sha256";
    outputHash = "0dmbsvxll2461rqwl868j3khcln1ldm9n1i82rjmhbrd9065qhvz";
  };
  middle = derivation {
    name = "middle"; system = sys; builder = "@{base}/bin/sh";
    args = [ "@{base.dev}" ./src.txt ];
    flat = flat; tree = "@{tree}";
  };
in [
  middle
  (derivation {
    name = "top"; system = sys; builder = "/bin/sh";
    outputs = [ "out" "lib" ];
    deps = [ middle base.doc flat ];
    empty = "";
  })
  (derivation { name = "other"; system = "aarch64-linux"; builder = "/bin/sh"; })
]
`.replaceAll("@{", "${");

Deno.test("parseDerivation() rejects repeated or unsorted entries", () => {
  const cases = [
    'Derive([("out","/o","",""),("out","/p","","")],[],[],"s","b",[],[])',
    'Derive([("out","/o","","")],[],["/s","/s"],"s","b",[],[])',
    'Derive([("out","/o","","")],[],[],"s","b",[],[("a","1"),("a","2")])',
    'Derive([("out","/o","","")],[],[],"s","b",[],[("b","1"),("a","2")])',
    'Derive([("out","/o","","")],[("/d.drv",["out","out"])],[],"s","b",[],[])',
  ];
  for (const text of cases) {
    assert.throws(() => parseDerivation(text), DrvSyntaxError, text);
  }
});
