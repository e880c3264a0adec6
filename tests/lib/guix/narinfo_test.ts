import assert from "node:assert/strict";
import {
  chooseNarUrl,
  formatNarinfo,
  type Narinfo,
  narinfoSignedPart,
  NarinfoSyntaxError,
  parseNarinfo,
  signedPrefixOf,
} from "../../../lib/guix/narinfo.ts";
import { commandWorks, mulberry32, runOffline } from "./_support.ts";

// No substituter, so Nix never tries the network.
const nixAvailable = commandWorks("nix", ["--version"]);
const STORE = "/gnu/store";
const HASH = "rd4hcfrr5zvas3r4w2gd08n812b5z3la";
const STORE_PATH = `${STORE}/${HASH}-hello-2.12`;
const NAR_HASH = "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";
const REFERENCE = "ixmg0cz3i5lh3xyq0lf87grryrrxwh44-guile-3.0.9";
const DERIVER = "i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv";
const SIGNATURE = "1;example.org;KHNpZ25hdHVyZSAuLi4p";
const GUIX_TEXT = [
  `StorePath: ${STORE_PATH}`,
  `NarHash: ${NAR_HASH}`,
  `NarSize: 120`,
  `References: ${REFERENCE} ${HASH}-hello-2.12`,
  `Deriver: ${DERIVER}`,
  `Signature: ${SIGNATURE}`,
  `URL: nar/gzip/${HASH}-hello-2.12`,
  `Compression: gzip`,
  `FileSize: 90`,
  "",
].join("\n");

/** A narinfo in Guix's layout with some lines swapped for others. */
function variant(replace: Record<string, string | null>): string {
  const lines = GUIX_TEXT.trimEnd().split("\n").flatMap((line) => {
    const key = line.slice(0, line.indexOf(":"));
    if (!(key in replace)) return [line];
    const value = replace[key];
    return value === null ? [] : [value];
  });
  return lines.join("\n") + "\n";
}

Deno.test("parseNarinfo() reads a current Guix narinfo", () => {
  assert.deepEqual(parseNarinfo(GUIX_TEXT, { storeDir: STORE }), {
    storePath: STORE_PATH,
    narHash: NAR_HASH,
    narSize: 120,
    references: [REFERENCE, `${HASH}-hello-2.12`],
    deriver: DERIVER,
    system: null,
    signature: SIGNATURE,
    urls: [{
      url: `nar/gzip/${HASH}-hello-2.12`,
      compression: "gzip",
      fileSize: 90,
      fileHash: null,
    }],
    extra: {},
  });
});

Deno.test("parseNarinfo() accepts the C13 variants a to h", () => {
  const table: [string, string, (info: Narinfo) => void][] = [
    ["a: full store path", GUIX_TEXT, (info) => {
      assert.equal(info.storePath, STORE_PATH);
    }],
    ["b: References: empty", variant({ References: "References:" }), (info) => {
      assert.deepEqual(info.references, []);
    }],
    [
      "b: References: with a trailing space",
      variant({ References: "References: " }),
      (info) => assert.deepEqual(info.references, []),
    ],
    [
      "c: unknown-deriver",
      variant({ Deriver: "Deriver: unknown-deriver" }),
      (info) => assert.equal(info.deriver, null),
    ],
    ["d: no Deriver", variant({ Deriver: null }), (info) => {
      assert.equal(info.deriver, null);
    }],
    ["e: no Compression", variant({ Compression: null }), (info) => {
      assert.equal(info.urls[0].compression, "none");
    }],
    [
      "f: zstd, lzip, none groups",
      variant({
        URL: [
          `URL: nar/zstd/${HASH}-hello-2.12`,
          "Compression: zstd",
          `URL: nar/lzip/${HASH}-hello-2.12`,
          "Compression: lzip",
          "FileSize: 80",
          `URL: nar/${HASH}-hello-2.12`,
          "Compression: none",
          "FileSize: 120",
        ].join("\n"),
        Compression: null,
        FileSize: null,
      }),
      (info) => {
        assert.deepEqual(
          info.urls.map((url) => [url.compression, url.fileSize]),
          [["zstd", null], ["lzip", 80], ["none", 120]],
        );
        assert.equal(chooseNarUrl(info)?.compression, "none");
        assert.equal(chooseNarUrl(info, ["zstd", "none"])?.compression, "zstd");
        assert.equal(chooseNarUrl(info, ["gzip"]), null);
      },
    ],
    [
      "g: unknown CA key",
      variant({
        FileSize: `FileSize: 90\nCA: fixed:r:sha256:${NAR_HASH.slice(7)}`,
      }),
      (info) => {
        assert.deepEqual(info.extra, {
          CA: `fixed:r:sha256:${NAR_HASH.slice(7)}`,
        });
      },
    ],
    ["h: CRLF", GUIX_TEXT.replaceAll("\n", "\r\n"), (info) => {
      assert.deepEqual(info, parseNarinfo(GUIX_TEXT, { storeDir: STORE }));
    }],
    [
      "old layout: URL first, System line",
      [
        `URL: nar/gzip/${HASH}-hello-2.12`,
        "Compression: gzip",
        `StorePath: ${STORE_PATH}`,
        `NarHash: ${NAR_HASH}`,
        "NarSize: 120",
        "References: ",
        "System: x86_64-linux",
        `Deriver: ${DERIVER}`,
        `Signature: ${SIGNATURE}`,
        "",
      ].join("\n"),
      (info) => {
        assert.equal(info.system, "x86_64-linux");
        assert.equal(info.urls[0].fileSize, null);
      },
    ],
  ];
  for (const [label, text, check] of table) {
    let info: Narinfo;
    try {
      info = parseNarinfo(text, { storeDir: STORE });
    } catch (error) {
      assert.fail(`${label}: ${error}`);
    }
    check(info);
  }
});

Deno.test("parseNarinfo() rejects C13 i and j and other bad fields, naming the field", () => {
  const badPath = (hash: string) =>
    variant({ StorePath: `StorePath: ${STORE}/${hash}-hello-2.12` });
  const table: [string, string, string][] = [
    ["i: 31-char hash", badPath(HASH.slice(1)), "StorePath"],
    ...["e", "o", "u", "t"].map((letter): [string, string, string] => [
      `i: hash with ${letter}`,
      badPath(letter + HASH.slice(1)),
      "StorePath",
    ]),
    [
      "j: hex NarHash",
      variant({
        NarHash:
          "NarHash: sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
      }),
      "NarHash",
    ],
    [
      "NarHash out of range",
      variant({ NarHash: `NarHash: sha256:z${NAR_HASH.slice(8)}` }),
      "NarHash",
    ],
    [
      "bare basename",
      variant({ StorePath: `StorePath: ${HASH}-hello-2.12` }),
      "StorePath",
    ],
    [
      "other store",
      variant({ StorePath: `StorePath: /nix/store/${HASH}-hello-2.12` }),
      "StorePath",
    ],
    [
      "sub-path",
      variant({ StorePath: `StorePath: ${STORE_PATH}/bin` }),
      "StorePath",
    ],
    ["no StorePath", variant({ StorePath: null }), "StorePath"],
    ["no NarHash", variant({ NarHash: null }), "NarHash"],
    ["NarSize text", variant({ NarSize: "NarSize: abc" }), "NarSize"],
    ["NarSize negative", variant({ NarSize: "NarSize: -1" }), "NarSize"],
    [
      "NarSize huge",
      variant({ NarSize: "NarSize: 99999999999999999" }),
      "NarSize",
    ],
    [
      "bad reference",
      variant({ References: "References: ../etc" }),
      "References",
    ],
    [
      "bad deriver",
      variant({ Deriver: "Deriver: /gnu/store/x.drv" }),
      "Deriver",
    ],
    ["FileSize text", variant({ FileSize: "FileSize: 1e3" }), "FileSize"],
    ["no URL", variant({ URL: null }), "URL"],
    ["twice", GUIX_TEXT + `NarSize: 121\n`, "NarSize"],
    ["no colon", GUIX_TEXT + "garbage\n", ""],
  ];
  for (const [label, text, field] of table) {
    assert.throws(() => parseNarinfo(text, { storeDir: STORE }), (error) => {
      assert.ok(error instanceof NarinfoSyntaxError, `${label}: ${error}`);
      assert.ok(error instanceof SyntaxError);
      assert.equal(error.field, field, label);
      assert.match(error.message, /^Cannot parse narinfo/);
      if (field !== "") assert.ok(error.message.includes(`"${field}"`), label);
      return true;
    });
  }
  assert.throws(
    () => parseNarinfo(GUIX_TEXT, { storeDir: STORE, maxBytes: 50 }),
    NarinfoSyntaxError,
  );
});

Deno.test("parseNarinfo() throws nothing but NarinfoSyntaxError on seeded mutations", () => {
  const random = mulberry32(13);
  const pieces = [
    "\n",
    "\r",
    ":",
    " ",
    "\0",
    "é",
    "StorePath:",
    "URL:",
    "FileSize: 9",
    "e",
    "0",
  ];
  let accepted = 0;
  for (let i = 0; i < 3000; i++) {
    let text = GUIX_TEXT;
    for (let k = 0; k < 1 + Math.floor(random() * 3); k++) {
      const at = Math.floor(random() * text.length);
      const roll = random();
      if (roll < 0.4) {
        text = text.slice(0, at) +
          text.slice(at + 1 + Math.floor(random() * 10));
      } else {
        text = text.slice(0, at) +
          pieces[Math.floor(random() * pieces.length)] + text.slice(at);
      }
    }
    try {
      parseNarinfo(text, { storeDir: STORE });
      accepted++;
    } catch (error) {
      assert.ok(error instanceof NarinfoSyntaxError, String(error));
    }
  }
  assert.ok(accepted > 0 && accepted < 3000);
  for (const input of [undefined, null, 42, {}] as unknown as string[]) {
    assert.throws(
      () => parseNarinfo(input, { storeDir: STORE }),
      NarinfoSyntaxError,
    );
  }
});

Deno.test("narinfoSignedPart() and formatNarinfo() write Guix's layout", () => {
  const info = parseNarinfo(GUIX_TEXT, { storeDir: STORE });
  assert.equal(formatNarinfo(info), GUIX_TEXT);
  assert.equal(
    narinfoSignedPart({ ...info, references: [], deriver: null }),
    `StorePath: ${STORE_PATH}\nNarHash: ${NAR_HASH}\nNarSize: 120\nReferences: \n`,
  );
  assert.equal(signedPrefixOf(GUIX_TEXT), narinfoSignedPart(info));
  assert.equal(signedPrefixOf(variant({ Signature: null })), null);
});

Deno.test("formatNarinfo() output parses back to the same record", () => {
  const random = mulberry32(21);
  const alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
  const hash = () =>
    Array.from({ length: 32 }, () => alphabet[Math.floor(random() * 32)])
      .join("");
  const pick = <T>(values: T[]) => values[Math.floor(random() * values.length)];
  for (let i = 0; i < 200; i++) {
    const name = pick(["hello-2.12", "a+b", "x.drv", "guile-3.0.9-debug"]);
    const info: Narinfo = {
      storePath: `${STORE}/${hash()}-${name}`,
      narHash: "sha256:" + "0" + Array.from(
        { length: 51 },
        () => alphabet[Math.floor(random() * 32)],
      ).join(""),
      narSize: Math.floor(random() * 2 ** 40),
      references: Array.from(
        { length: Math.floor(random() * 4) },
        () => `${hash()}-${pick(["glibc-2.35", "bash-5.1"])}`,
      ),
      deriver: pick([null, `${hash()}-${name}.drv`]),
      system: pick([null, "x86_64-linux"]),
      signature: pick([null, SIGNATURE]),
      urls: Array.from({ length: 1 + Math.floor(random() * 3) }, () => ({
        url: `nar/${pick(["gzip/", "zstd/", ""])}${hash()}-${
          name.replace("+", "%2B")
        }`,
        compression: pick(["gzip", "zstd", "lzip", "none"]),
        fileSize: pick([null, Math.floor(random() * 10000)]),
        fileHash: pick([null, NAR_HASH]),
      })),
      extra: pick<Record<string, string>>([{}, { CA: "fixed:r:sha256:abc" }]),
    };
    const text = formatNarinfo(info);
    assert.deepEqual(parseNarinfo(text, { storeDir: STORE }), info);
    if (info.signature !== null) {
      assert.equal(signedPrefixOf(text), narinfoSignedPart(info));
    }
  }
});

Deno.test("chooseNarUrl() prefers the smallest known size, else the preference order", () => {
  const base = parseNarinfo(GUIX_TEXT, { storeDir: STORE });
  const urls = (...entries: [string, number | null][]) => ({
    ...base,
    urls: entries.map(([compression, fileSize]) => ({
      url: `nar/${compression}/x`,
      compression,
      fileSize,
      fileHash: null,
    })),
  });
  const table: [Narinfo, string[] | undefined, string | null][] = [
    [urls(["gzip", 50], ["none", 120]), undefined, "gzip"],
    [urls(["gzip", null], ["none", 120]), undefined, "none"],
    [urls(["zstd", 10], ["gzip", 50]), undefined, "gzip"],
    [urls(["zstd", 10], ["gzip", 50]), ["gzip", "zstd"], "zstd"],
    [urls(["lzip", 10]), undefined, null],
    [urls(), undefined, null],
  ];
  for (const [info, supported, expected] of table) {
    assert.equal(chooseNarUrl(info, supported)?.compression ?? null, expected);
  }
});

Deno.test({
  name: "parseNarinfo() reads narinfos written by nix copy (needs nix)",
  ignore: !nixAvailable,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/f.txt`, "hello\n");
      const store = `local?root=${dir}/r&store=${STORE}`;
      // A text item referring to a recursive source import.
      const expression = `builtins.toFile "t" "see \${${dir}/f.txt}"`;
      const textPath = JSON.parse(runOffline("nix-instantiate", [
        "--read-write-mode",
        "--store",
        store,
        "--eval",
        "-E",
        expression,
      ]));
      runOffline("nix", [
        "--extra-experimental-features",
        "nix-command",
        "copy",
        "--offline",
        "--store",
        store,
        "--to",
        `file://${dir}/cache?compression=none&store=${STORE}`,
        textPath,
      ]);
      const infos = [...Deno.readDirSync(`${dir}/cache`)]
        .filter((entry) => entry.name.endsWith(".narinfo"))
        .map((entry) =>
          parseNarinfo(Deno.readTextFileSync(`${dir}/cache/${entry.name}`), {
            storeDir: STORE,
          })
        );
      assert.equal(infos.length, 2);
      const text = infos.find((info) => info.storePath === textPath)!;
      const source = infos.find((info) => info.storePath !== textPath)!;
      assert.deepEqual(text.references, [
        source.storePath.slice(STORE.length + 1),
      ]);
      assert.equal(text.deriver, null);
      assert.match(text.extra.CA, /^text:sha256:/);
      assert.equal(
        source.narHash,
        "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
      );
      assert.equal(source.extra.CA, `fixed:r:${source.narHash}`);
      for (const info of infos) {
        assert.equal(info.urls.length, 1);
        assert.equal(info.urls[0].compression, "none");
        assert.equal(info.urls[0].fileSize, info.narSize);
        assert.equal(info.urls[0].fileHash, info.narHash);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
