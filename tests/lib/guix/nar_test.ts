import assert from "node:assert/strict";
import { dumpNar, narHashOfPath } from "../../../lib/guix/nar_dump.ts";
import { NarFormatError } from "../../../lib/guix/nar_format.ts";
import { restoreNar } from "../../../lib/guix/nar_restore.ts";
import { encodeNixBase32 } from "../../../lib/guix/base32.ts";
import { sha256, toHex } from "../../../lib/guix/store_hash.ts";
import {
  commandWorks,
  hexOf,
  joinBytes,
  mulberry32,
  OFFLINE,
} from "./_support.ts";

// No substituter, so Nix never tries the network.
const nixAvailable = commandWorks("nix-store", ["--version"]);
const encoder = new TextEncoder();

type Node =
  | { type: "regular"; contents: Uint8Array; executable?: boolean }
  | { type: "symlink"; target: string }
  | { type: "directory"; entries: [string | Uint8Array, Node][] };

Deno.test("dumpNar() writes the guix.md §4 bytes for a hello file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/hello`, "hello\n");
    const bytes = await collect(dumpNar(`${dir}/hello`));
    assert.equal(
      toHex(bytes),
      "0d00000000000000" + hexOf("nix-archive-1") + "000000" +
        "0100000000000000" + hexOf("(") + "00000000000000" +
        "0400000000000000" + hexOf("type") + "00000000" +
        "0700000000000000" + hexOf("regular") + "00" +
        "0800000000000000" + hexOf("contents") +
        "0600000000000000" + hexOf("hello\n") + "0000" +
        "0100000000000000" + hexOf(")") + "00000000000000",
    );
    assert.deepEqual(await narHashOfPath(`${dir}/hello`), {
      narHash: "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
      narSize: 120,
    });
  });
});

Deno.test("dumpNar() sizes follow 112 + ceil8(n), +32 executable, 96 empty dir", async () => {
  await withTempDir(async (dir) => {
    const table: [number, boolean, number][] = [
      [0, false, 112],
      [1, false, 120],
      [8, false, 120],
      [13, true, 112 + 16 + 32],
      [70000, false, 112 + 70000],
    ];
    for (const [size, executable, narSize] of table) {
      const path = `${dir}/f${size}`;
      await Deno.writeFile(path, new Uint8Array(size).fill(7), {
        mode: executable ? 0o755 : 0o644,
      });
      await Deno.chmod(path, executable ? 0o755 : 0o644);
      assert.equal((await narHashOfPath(path)).narSize, narSize);
    }
    await Deno.mkdir(`${dir}/empty`);
    assert.equal((await narHashOfPath(`${dir}/empty`)).narSize, 96);
  });
});

Deno.test("dumpNar() rejects a file type NARs cannot hold", async () => {
  await withTempDir(async (dir) => {
    const fifo = `${dir}/fifo`;
    const made = new Deno.Command("mkfifo", { args: [fifo] }).outputSync();
    assert.ok(made.success);
    await assert.rejects(collect(dumpNar(fifo)), /unsupported file type/);
  });
});

Deno.test({
  name:
    "dumpNar() and narHashOfPath() equal nix-store --dump and nix-hash on seeded trees (needs nix-store)",
  ignore: !nixAvailable,
  async fn() {
    await withTempDir(async (dir) => {
      const random = mulberry32(42);
      for (let i = 0; i < 6; i++) {
        const root = `${dir}/tree${i}`;
        await writeTree(root, randomTree(random, 0));
        await assertSameAsNix(root);
      }
      // Every name side by side, so byte order is what decides.
      await writeTree(`${dir}/names`, {
        type: "directory",
        entries: NAMES.map((name) => [name, {
          type: "regular",
          contents: encoder.encode(name),
        }]),
      });
      await assertSameAsNix(`${dir}/names`);
      // Top-level file, executable and symlink items.
      await Deno.writeTextFile(`${dir}/plain`, "x");
      await Deno.writeTextFile(`${dir}/script`, "#!/bin/sh\n");
      await Deno.chmod(`${dir}/script`, 0o755);
      await Deno.symlink("/nonexistent/target", `${dir}/link`);
      for (const name of ["plain", "script", "link"]) {
        await assertSameAsNix(`${dir}/${name}`);
      }
    });
  },
});

Deno.test("restoreNar() round-trips seeded trees, whatever the chunking", async () => {
  await withTempDir(async (dir) => {
    const random = mulberry32(9);
    for (let i = 0; i < 5; i++) {
      const root = `${dir}/tree${i}`;
      await writeTree(root, randomTree(random, 0));
      const nar = await collect(dumpNar(root));
      const digest = await narHashOfPath(root);
      // One-byte chunks only for small archives, to keep the run short.
      const chunkSizes = nar.length < 50_000 ? [1, 7, 4096] : [7, 4096];
      for (const chunkSize of [...chunkSizes, nar.length]) {
        const copy = `${dir}/copy${i}-${chunkSize}`;
        const result = await restoreNar(streamOf(nar, chunkSize), copy);
        assert.deepEqual(result, digest);
        assert.deepEqual(await collect(dumpNar(copy)), nar);
      }
    }
  });
});

Deno.test({
  name: "restoreNar() unpacks what nix-store --dump wrote (needs nix-store)",
  ignore: !nixAvailable,
  async fn() {
    await withTempDir(async (dir) => {
      await writeTree(`${dir}/src`, randomTree(mulberry32(77), 0));
      const dump = new Deno.Command("nix-store", {
        env: OFFLINE,
        args: ["--dump", `${dir}/src`],
        stdout: "piped",
      }).spawn();
      const result = await restoreNar(dump.stdout, `${dir}/out`);
      assert.ok((await dump.status).success);
      assert.deepEqual(result, await narHashOfPath(`${dir}/src`));
      assert.equal(result.narHash, nixHash(`${dir}/out`));
    });
  },
});

Deno.test("restoreNar() rejects hostile or malformed NARs and cleans up", async () => {
  const file = (text: string): Node => ({
    type: "regular",
    contents: encoder.encode(text),
  });
  const dir = (...entries: [string | Uint8Array, Node][]): Node => ({
    type: "directory",
    entries,
  });
  let deep: Node = file("x");
  for (let i = 0; i < 600; i++) deep = dir(["d", deep]);
  // Twenty 250-byte names: each fits NAME_MAX, the whole path not PATH_MAX.
  let long: Node = file("x");
  for (let i = 0; i < 20; i++) long = dir(["c".repeat(250), long]);
  const good = narOf(dir(["a", file("1")], ["b", file("2")]));
  const badPadding = narOf(file("abc"));
  badPadding[badPadding.length - 16 - 1] = 1; // padding after "abc"
  const table: [string, Uint8Array, RegExp][] = [
    ["slash", narOf(dir(["a/b", file("x")])), /unsafe entry name "a\/b"/],
    ["root slash", narOf(dir(["/", file("x")])), /unsafe entry name/],
    ["dot-dot", narOf(dir(["..", file("x")])), /unsafe entry name "\.\."/],
    ["dot", narOf(dir([".", file("x")])), /unsafe entry name "\."/],
    ["empty", narOf(dir(["", file("x")])), /unsafe entry name ""/],
    ["NUL", narOf(dir(["a\0b", file("x")])), /unsafe entry name/],
    [
      "not UTF-8",
      narOf(dir([new Uint8Array([0xff, 0x41]), file("x")])),
      /not valid UTF-8/,
    ],
    [
      "unsorted",
      narOf(dir(["b", file("1")], ["a", file("2")])),
      /"a" is not sorted/,
    ],
    [
      "duplicate",
      narOf(dir(["a", file("1")], ["a", dir()])),
      /"a" is not sorted/,
    ],
    [
      "empty symlink target",
      narOf(dir(["l", { type: "symlink", target: "" }])),
      /invalid symlink target/,
    ],
    ["deep", narOf(deep), /nested deeper than/],
    [
      "long name",
      narOf(dir(["a".repeat(256), file("x")])),
      /entry name of 256 bytes exceeds 255/,
    ],
    [
      "long symlink target",
      narOf(dir(["l", { type: "symlink", target: "b".repeat(4096) }])),
      /symlink target longer than 4095 bytes/,
    ],
    ["long path", narOf(long), /path of \d+ bytes exceeds 4095/],
    [
      "bad magic",
      joinBytes(str("nix-archive-2"), good.subarray(24)),
      /expected "nix-archive-1"/,
    ],
    ["truncated", good.subarray(0, good.length - 5), /unexpected end/],
    ["trailing", joinBytes(good, new Uint8Array(8)), /trailing bytes/],
    ["padding", badPadding, /non-zero padding/],
    [
      "unknown type",
      joinBytes(str("nix-archive-1"), str("("), str("type"), str("socket")),
      /unknown node type "socket"/,
    ],
    [
      "huge length",
      joinBytes(
        str("nix-archive-1"),
        str("("),
        str("type"),
        str("regular"),
        str("contents"),
        u64(2n ** 62n),
      ),
      /too large/,
    ],
    [
      "long keyword",
      joinBytes(str("nix-archive-1"), u64(1n << 40n)),
      /expected a keyword/,
    ],
  ];
  await withTempDir(async (tmp) => {
    for (const [label, bytes, pattern] of table) {
      const destination = `${tmp}/${label.replaceAll(" ", "-")}/out`;
      await Deno.mkdir(`${tmp}/${label.replaceAll(" ", "-")}`);
      await assert.rejects(
        restoreNar(streamOf(bytes, 5), destination),
        (error) => {
          assert.ok(error instanceof NarFormatError, `${label}: ${error}`);
          assert.ok(error instanceof SyntaxError);
          assert.match(error.message, /^Cannot restore NAR: /);
          assert.match(error.message, pattern, label);
          assert.equal(typeof error.offset, "number");
          return true;
        },
      );
      await assert.rejects(Deno.lstat(destination), Deno.errors.NotFound);
      assert.deepEqual(
        [...Deno.readDirSync(`${tmp}/${label.replaceAll(" ", "-")}`)],
        [],
        `${label} left files behind`,
      );
    }
    // The limit applies to the stream, and an existing destination is kept.
    await assert.rejects(
      restoreNar(streamOf(good, 16), `${tmp}/limited`, { maxBytes: 100 }),
      /exceeds the limit of 100 bytes/,
    );
    await Deno.mkdir(`${tmp}/exists`);
    await assert.rejects(
      restoreNar(streamOf(good, 16), `${tmp}/exists`),
      Deno.errors.AlreadyExists,
    );
    assert.ok((await Deno.stat(`${tmp}/exists`)).isDirectory);
  });
});

async function assertSameAsNix(path: string): Promise<void> {
  const ours = await collect(dumpNar(path));
  const theirs = new Deno.Command("nix-store", {
    env: OFFLINE,
    args: ["--dump", path],
  })
    .outputSync();
  assert.ok(theirs.success);
  assert.equal(ours.length, theirs.stdout.length, path);
  assert.deepEqual(ours, theirs.stdout, path);
  const digest = await narHashOfPath(path);
  assert.equal(digest.narHash, nixHash(path));
  assert.equal(digest.narSize, ours.length);
  assert.equal(digest.narHash, "sha256:" + encodeNixBase32(sha256(ours)));
}

function nixHash(path: string): string {
  const output = new Deno.Command("nix-hash", {
    env: OFFLINE,
    args: ["--type", "sha256", "--base32", path],
  }).outputSync();
  assert.ok(output.success);
  return "sha256:" + new TextDecoder().decode(output.stdout).trim();
}

// Names chosen to exercise byte-order sorting: case, dots, dashes, and
// U+E000 (3 UTF-8 bytes) against an emoji (4 bytes, a surrogate pair in JS).
const NAMES = [
  "a",
  "B",
  "Z",
  "z",
  "a.b",
  "a-b",
  "_x",
  "é",
  "\uE000",
  "😀",
  "日本",
  "with space",
  "A",
  ".hidden",
];

function randomTree(random: () => number, depth: number): Node {
  const roll = random();
  if (depth === 0 || (depth < 3 && roll < 0.35)) {
    const count = Math.floor(random() * (depth === 0 ? 7 : 5));
    const names = [
      ...new Set(Array.from(
        { length: count },
        () => NAMES[Math.floor(random() * NAMES.length)],
      )),
    ];
    return {
      type: "directory",
      entries: names.map((name) => [name, randomTree(random, depth + 1)]),
    };
  }
  if (roll < 0.5) {
    const targets = ["a", "../B", "/gnu/store/none", "é/😀", "missing"];
    return {
      type: "symlink",
      target: targets[Math.floor(random() * targets.length)],
    };
  }
  const sizes = [0, 1, 7, 8, 13, 65536, 70001];
  const size = sizes[Math.floor(random() * sizes.length)];
  const contents = new Uint8Array(size);
  for (let i = 0; i < size; i++) contents[i] = Math.floor(random() * 256);
  return { type: "regular", contents, executable: random() < 0.3 };
}

async function writeTree(path: string, node: Node): Promise<void> {
  if (node.type === "regular") {
    await Deno.writeFile(path, node.contents);
    await Deno.chmod(path, node.executable ? 0o755 : 0o644);
  } else if (node.type === "symlink") {
    await Deno.symlink(node.target, path);
  } else {
    await Deno.mkdir(path);
    for (const [name, child] of node.entries) {
      await writeTree(`${path}/${name}`, child);
    }
  }
}

/** Serialises a node as given, entries unsorted, so hostile NARs can be built. */
function narOf(node: Node): Uint8Array {
  const parts: Uint8Array[] = [str("nix-archive-1")];
  const walk = (n: Node) => {
    parts.push(str("("), str("type"));
    if (n.type === "regular") {
      parts.push(str("regular"));
      if (n.executable) parts.push(str("executable"), str(""));
      parts.push(str("contents"), str(n.contents));
    } else if (n.type === "symlink") {
      parts.push(str("symlink"), str("target"), str(n.target));
    } else {
      parts.push(str("directory"));
      for (const [name, child] of n.entries) {
        parts.push(str("entry"), str("("), str("name"), str(name), str("node"));
        walk(child);
        parts.push(str(")"));
      }
    }
    parts.push(str(")"));
  };
  walk(node);
  return joinBytes(...parts);
}

function str(value: string | Uint8Array): Uint8Array {
  const bytes = typeof value === "string" ? encoder.encode(value) : value;
  const padded = new Uint8Array(Math.ceil(bytes.length / 8) * 8);
  padded.set(bytes);
  return joinBytes(u64(BigInt(bytes.length)), padded);
}

function u64(value: bigint): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  return bytes;
}

function streamOf(bytes: Uint8Array, chunkSize: number) {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + chunkSize));
      at += chunkSize;
    },
  });
}

async function collect(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return joinBytes(...parts);
}

async function withTempDir(
  body: (dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
