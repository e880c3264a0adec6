// The parsers under fuzzing: for each, a corpus of valid inputs to mutate,
// tokens for random inputs, how to run one input and which errors are its own.

import { isDeepStrictEqual } from "node:util";
import zlib from "node:zlib";
import {
  readAllSexps,
  readSexp,
  SexpSyntaxError,
} from "../../lib/sexp/read.ts";
import { writeSexp } from "../../lib/sexp/write.ts";
import { type Datum, Sym } from "../../lib/sexp/datum.ts";
import {
  encodeCommandFrame,
  encodeMessage as encodeZmtpMessage,
  FrameDecoder,
  ZmtpFrameSizeError,
  ZmtpSyntaxError,
} from "../../lib/zmtp/frame.ts";
import {
  encodeError,
  encodeGreeting,
  encodePing,
  encodePong,
  encodeReady,
  GreetingReader,
  parseCommand,
  parseErrorReason,
  parseGreeting,
  parseMetadata,
  parsePing,
} from "../../lib/zmtp/greeting.ts";
import {
  formatNarinfo,
  NarinfoSyntaxError,
  parseNarinfo,
} from "../../lib/guix/narinfo.ts";
import { verifyNarinfoText } from "../../lib/guix/narinfo_signature.ts";
import { signNarinfoPrefix } from "../../lib/guix/narinfo_signature.ts";
import { dumpNar } from "../../lib/guix/nar_dump.ts";
import { NarFormatError } from "../../lib/guix/nar_format.ts";
import { restoreNar } from "../../lib/guix/nar_restore.ts";
import {
  DrvSyntaxError,
  parseDerivation,
  printDerivation,
} from "../../lib/guix/drv.ts";
import {
  formatAdvanced,
  formatCanonical,
  GcryptSexpError,
  parseGcryptSexp,
} from "../../lib/guix/gcrypt_sexp.ts";
import {
  formatAcl,
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  KeyFormatError,
  parseAcl,
  parsePublicKey,
  parseSecretKey,
} from "../../lib/guix/signing_key.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  ProtocolError,
} from "../../lib/protocol/messages.ts";
import {
  openLogUpload,
  startLogReceiver,
} from "../../lib/protocol/log_channel.ts";
import { createLogger } from "../../lib/log.ts";
import { prng, randomDatum } from "../lib/sexp/_guile.ts";
import { concat, type Rng } from "./_mutate.ts";

/** One parser prepared for fuzzing. */
export interface FuzzTarget {
  /** Valid inputs: run as they are first, then mutated. */
  corpus: Uint8Array[];
  /** Pieces random inputs are assembled from. */
  tokens: string[];
  /** Runs one input; resolving or throwing the parser's own error is fine. */
  run(input: Uint8Array, next: Rng): unknown;
  /** Whether `error` is one the parser documents. */
  expected(error: unknown): boolean;
  /** Checks after the run (the component still works, ...). */
  finish?(): Promise<void>;
  /** Releases what setup took. */
  close?(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const STORE = "/gnu/store";
const HASH = "rd4hcfrr5zvas3r4w2gd08n812b5z3la";

/** Thrown when a parser accepted an input but broke a property it promises. */
class PropertyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PropertyError";
  }
}

function same(a: unknown, b: unknown, what: string): void {
  if (!isDeepStrictEqual(a, b)) {
    throw new PropertyError(
      `${what}: ${String(a).slice(0, 200)} vs ${String(b).slice(0, 200)}`,
    );
  }
}

/** Splits `bytes` into random chunks, as a network would deliver them. */
function chunks(next: Rng, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    const size = 1 + next(next(4) === 0 ? 8 : 512);
    out.push(bytes.slice(at, at + size));
    at += size;
  }
  return out;
}

// ------------------------------------------------------------------- sexp

const MESSAGES: Message[] = [
  { type: "worker-request-info" },
  {
    type: "server-info",
    workerAddress: "10.0.0.7",
    logPort: 5556,
    publishPort: null,
  },
  {
    type: "worker-ready",
    worker: {
      name: "q3ZfA9kL",
      address: "10.0.0.7",
      machine: "builder1",
      systems: ["x86_64-linux", "i686-linux"],
      lastSeen: 0,
    },
  },
  {
    type: "worker-ping",
    worker: {
      name: 'w"é',
      address: "::1",
      machine: "m",
      systems: [],
      lastSeen: 1700000000,
    },
  },
  { type: "worker-request-work", name: "q3ZfA9kL" },
  { type: "no-build" },
  {
    type: "build",
    drv: `${STORE}/${HASH}-hello-2.12.drv`,
    priority: 9,
    timeout: 72000,
    maxSilent: 3600,
    timestamp: null,
    system: "x86_64-linux",
  } as Message,
  {
    type: "build-started",
    drv: `${STORE}/${HASH}-hello-2.12.drv`,
    worker: "q3ZfA9kL",
  },
  {
    type: "build-succeeded",
    drv: `${STORE}/${HASH}-hello-2.12.drv`,
    url: "http://10.0.0.7:5558",
    log: null,
  },
  {
    type: "build-failed",
    drv: `${STORE}/${HASH}-hello-2.12.drv`,
    url: "http://10.0.0.7:5558",
    log: "/var/log/x.drv.gz",
  },
];

const SEXP_TOKENS = [
  "(",
  ")",
  "(",
  ")",
  "[",
  "]",
  '"',
  '"',
  "\\",
  " ",
  "\n",
  "#t",
  "#f",
  "#true",
  "#{",
  "}#",
  "#\\a",
  "#\\x41",
  "#\\space",
  "\\x41;",
  "\\u0041",
  "\\",
  "-",
  "+",
  "12345678901234567890",
  "-0",
  "007",
  "1.5",
  "1/2",
  "#x1F",
  "#e1",
  ";",
  "#|",
  "|#",
  "#;",
  "#!",
  "!#",
  "'",
  "`",
  ",",
  ",@",
  ".",
  "#:kw",
  "#(",
  "#vu8(",
  "é",
  "|",
  "sym",
  "log",
  "version",
  "derivation",
  "\x00",
  "\r",
];

function hasBackslashSymbol(datum: Datum): boolean {
  if (Array.isArray(datum)) return datum.some(hasBackslashSymbol);
  return datum instanceof Sym && datum.name.includes("\\");
}

function sexpTarget(): FuzzTarget {
  const next = prng(1234);
  const corpus = [
    ...Array.from({ length: 40 }, () => writeSexp(randomDatum(next))),
    ...MESSAGES.map((message) => decoder.decode(encodeMessage(message))),
    ';; a spec\n(list (specification (name "guix") #;(gone) (priority 2)))',
    "#!guile!# '(a `(b ,c ,@d)) #| block |# #{odd sym}# #\\x",
  ].map((text) => encoder.encode(text));
  return {
    corpus,
    tokens: SEXP_TOKENS,
    run(input) {
      readSexp(input);
      readSexp(input, { scheme: true, positions: true });
      const data = readAllSexps(input, { maxDepth: 16 });
      // What we read we can write, and read back to the same data; except
      // symbols with a backslash, which Guile's own write/read loses too
      // (it writes "a\\b" as #{a\b}# and reads that back as "ab").
      if (data.some(hasBackslashSymbol)) return;
      const again = readAllSexps(data.map((d) => writeSexp(d)).join(" "));
      same(again, data, "write then read changed the data");
    },
    expected: (error) => error instanceof SexpSyntaxError,
  };
}

// ------------------------------------------------------------------- zmtp

function zmtpCorpus(): Uint8Array[] {
  const ready = encodeReady({ "Socket-Type": "DEALER", Identity: "w-1" });
  return [
    encodeZmtpMessage([new Uint8Array(0), encoder.encode("(no-build)")]),
    encodeZmtpMessage([new Uint8Array(300).fill(7), new Uint8Array(1)]),
    encodeCommandFrame(ready),
    encodeCommandFrame(encodePing(300, encoder.encode("ctx"))),
    encodeCommandFrame(encodePong(encoder.encode("ctx"))),
    encodeCommandFrame(encodeError("go away")),
    concat([
      encodeGreeting(),
      encodeCommandFrame(encodeReady({ "Socket-Type": "ROUTER" })),
      encodeZmtpMessage([encoder.encode("a"), encoder.encode("b")]),
    ]),
  ];
}

function zmtpFrameTarget(): FuzzTarget {
  return {
    corpus: zmtpCorpus(),
    tokens: [
      "\x00",
      "\x01",
      "\x02",
      "\x04",
      "\x03",
      "\x06",
      "\xff",
      "\x05READY",
      "\x04PING",
      "\x04PONG",
      "\x05ERROR",
      "\x0bSocket-Type",
      "\x00\x00\x00\x06DEALER",
    ],
    run(input, next) {
      const decoder = new FrameDecoder({
        maxFrameBytes: 1 << 20,
        maxCommandBytes: 4096,
      });
      for (const chunk of chunks(next, input)) {
        for (const frame of decoder.push(chunk)) {
          if (!frame.command) continue;
          const command = parseCommand(frame.body);
          if (command.name === "READY") parseMetadata(command.data);
          if (command.name === "PING") parsePing(command.data);
          if (command.name === "ERROR") parseErrorReason(command.data);
        }
      }
      decoder.check();
      // The command parsers on their own, on raw bytes.
      for (
        const parse of [
          parseCommand,
          parseMetadata,
          parsePing,
          parseErrorReason,
        ]
      ) {
        try {
          parse(input);
        } catch (error) {
          if (!(error instanceof ZmtpSyntaxError)) throw error;
        }
      }
    },
    expected: (error) =>
      error instanceof ZmtpSyntaxError || error instanceof ZmtpFrameSizeError,
  };
}

function zmtpGreetingTarget(): FuzzTarget {
  const greetings = [
    encodeGreeting(),
    encodeGreeting({ mechanism: "PLAIN", asServer: true }),
    concat([
      encodeGreeting(),
      encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
    ]),
  ];
  return {
    corpus: greetings,
    tokens: [
      "\xff",
      "\x00",
      "\x7f",
      "\x03",
      "\x01",
      "\x00",
      "NULL",
      "PLAIN",
      "CURVE",
    ],
    run(input, next) {
      const reader = new GreetingReader();
      for (const chunk of chunks(next, input)) {
        const done = reader.push(chunk);
        if (done !== undefined) break;
      }
      parseGreeting(input);
    },
    expected: (error) => error instanceof ZmtpSyntaxError,
  };
}

// ---------------------------------------------------------------- narinfo

function narinfoTarget(): FuzzTarget {
  const key = generateKeyPair();
  const base = formatNarinfo(
    {
      storePath: `${STORE}/${HASH}-hello-2.12`,
      narHash: "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw",
      narSize: 120,
      references: [
        `ixmg0cz3i5lh3xyq0lf87grryrrxwh44-guile-3.0.9`,
        `${HASH}-hello-2.12`,
      ],
      deriver: "i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv",
      system: "x86_64-linux",
      signature: null,
      urls: [
        {
          url: `nar/gzip/${HASH}-hello-2.12`,
          compression: "gzip",
          fileSize: 90,
        },
        { url: `nar/${HASH}-hello-2.12`, compression: "none", fileSize: 120 },
      ],
      extra: {},
    } as Parameters<typeof formatNarinfo>[0],
  );
  const signed = base +
    `Signature: ${signNarinfoPrefix(base, key, "example.org")}\n`;
  const texts = [
    base,
    signed,
    signed.replaceAll("\n", "\r\n"),
    base.split("\n").reverse().join("\n") + "CA: fixed:r:sha256:abc\n",
  ];
  return {
    corpus: texts.map((text) => encoder.encode(text)),
    tokens: [
      "StorePath: ",
      "NarHash: ",
      "NarSize: ",
      "References: ",
      "Deriver: ",
      "System: ",
      "Signature: ",
      "URL: ",
      "Compression: ",
      "FileSize: ",
      "FileHash: ",
      "\n",
      "\r\n",
      ":",
      " ",
      STORE + "/",
      HASH,
      "-hello",
      "sha256:",
      "gzip",
      "none",
      "1;",
      "120",
    ],
    run(input) {
      const text = decoder.decode(input);
      try {
        verifyNarinfoText(text, [key]);
      } catch (error) {
        throw new PropertyError(`verifyNarinfoText() threw: ${String(error)}`);
      }
      parseNarinfo(text, { storeDir: STORE });
    },
    expected: (error) => error instanceof NarinfoSyntaxError,
  };
}

// -------------------------------------------------------------------- drv

function drvTarget(roundTrip = false): FuzzTarget {
  const drv = {
    outputs: [
      {
        name: "doc",
        path: `${STORE}/${HASH}-hello-doc`,
        hashAlgo: "",
        hash: "",
      },
      { name: "out", path: `${STORE}/${HASH}-hello`, hashAlgo: "", hash: "" },
    ],
    inputDrvs: [{ path: `${STORE}/${HASH}-guile.drv`, outputs: ["out"] }],
    inputSrcs: [`${STORE}/${HASH}-builder.scm`],
    system: "x86_64-linux",
    builder: `${STORE}/${HASH}-guile/bin/guile`,
    args: ["--no-auto-compile", "-c", 'say "hi"\\\n\t\r'],
    env: [["out", `${STORE}/${HASH}-hello`], ["z", "é😀\u0001"]] as [
      string,
      string,
    ][],
  };
  const fixed = {
    ...drv,
    outputs: [{
      name: "out",
      path: `${STORE}/${HASH}-src.tar.gz`,
      hashAlgo: "sha256",
      hash: "0".repeat(64),
    }],
    inputDrvs: [],
  };
  return {
    corpus: [printDerivation(drv), printDerivation(fixed)].map((text) =>
      encoder.encode(text)
    ),
    tokens: [
      "Derive(",
      "[",
      "]",
      "(",
      ")",
      ",",
      '"',
      '\\"',
      "\\\\",
      "\\n",
      "\\x",
      "out",
      STORE,
      "/",
      "sha256",
      "r:sha256",
    ],
    run(input) {
      const parsed = parseDerivation(decoder.decode(input));
      const text = printDerivation(parsed);
      if (!roundTrip) return;
      same(
        parseDerivation(text),
        parsed,
        "print then parse changed the derivation",
      );
    },
    expected: (error) => error instanceof DrvSyntaxError,
  };
}

// --------------------------------------------------------- gcrypt sexps

function gcryptTarget(): FuzzTarget {
  const key = generateKeyPair();
  const texts = [
    formatPublicKey(key),
    formatSecretKey(key),
    formatAcl([key, generateKeyPair()]),
    "(data (flags rfc6979) (hash sha256 #0123ABCD#))",
    '(a "quoted \\n \\x41 \\101 \\"" |YWJj| 3:abc #ff# [text/plain]"x" (b))',
  ];
  const corpus: Uint8Array[] = texts.map((text) => encoder.encode(text));
  corpus.push(formatCanonical(parseGcryptSexp(texts[1])));
  return {
    corpus,
    tokens: [
      "(",
      ")",
      "(",
      ")",
      " ",
      "\n",
      '"',
      "\\",
      "\\x4",
      "#",
      "#0A#",
      "|",
      "|YWJj|",
      "3:",
      "0:",
      "99999999999:",
      "[",
      "]",
      "public-key",
      "private-key",
      "ecc",
      "curve",
      "Ed25519",
      "q",
      "d",
      "acl",
      "entry",
      "-./_:*+=",
      "\x00",
    ],
    run(input) {
      const sexp = parseGcryptSexp(input);
      same(
        parseGcryptSexp(formatCanonical(sexp)),
        sexp,
        "canonical round trip",
      );
      same(parseGcryptSexp(formatAdvanced(sexp)), sexp, "advanced round trip");
      for (const parse of [parsePublicKey, parseSecretKey, parseAcl]) {
        try {
          parse(input);
        } catch (error) {
          if (!(error instanceof KeyFormatError)) throw error;
        }
      }
    },
    expected: (error) => error instanceof GcryptSexpError,
  };
}

// --------------------------------------------------------------- messages

function messagesTarget(): FuzzTarget {
  return {
    corpus: MESSAGES.map((message) => encodeMessage(message)),
    tokens: [
      ...SEXP_TOKENS,
      ...MESSAGES.map((m) => m.type),
      "worker",
      "name",
      "address",
      "machine",
      "systems",
      "last-seen",
      "drv",
      "priority",
      "timeout",
      "max-silent",
      "timestamp",
      "system",
      "url",
      "log",
      "worker-address",
      "log-port",
      "publish-port",
    ],
    run(input) {
      const message = decodeMessage(input);
      same(
        decodeMessage(encodeMessage(message)),
        message,
        "encode then decode changed the message",
      );
    },
    expected: (error) => error instanceof ProtocolError,
  };
}

// -------------------------------------------------------------------- NAR

async function writeTree(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/sub/déjà vu`, { recursive: true });
  await Deno.writeTextFile(`${dir}/hello`, "hello\n");
  await Deno.writeFile(`${dir}/empty`, new Uint8Array(0));
  await Deno.writeTextFile(`${dir}/sub/run`, "#!/bin/sh\necho 12345678\n");
  await Deno.chmod(`${dir}/sub/run`, 0o755);
  await Deno.symlink("../hello", `${dir}/sub/link`);
  await Deno.writeFile(
    `${dir}/sub/déjà vu/blob`,
    new Uint8Array(300).map((_, i) => i),
  );
  await Deno.mkdir(`${dir}/sub/empty-dir`);
}

async function collect(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return concat(parts);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function narTarget(): Promise<FuzzTarget> {
  const root = await Deno.makeTempDir({ prefix: "lorica-fuzz-nar-" });
  const tree = `${root}/tree`;
  await Deno.mkdir(tree);
  await writeTree(tree);
  const corpus = [
    await collect(dumpNar(tree)),
    await collect(dumpNar(`${tree}/hello`)),
    await collect(dumpNar(`${tree}/sub/run`)),
    await collect(dumpNar(`${tree}/sub/link`)),
    await collect(dumpNar(`${tree}/sub/empty-dir`)),
  ];
  let count = 0;
  return {
    corpus,
    tokens: [],
    async run(input, next) {
      const destination = `${root}/out-${count++}`;
      const stream = ReadableStream.from(chunks(next, input));
      try {
        await restoreNar(stream, destination, { maxBytes: 1 << 20 });
      } catch (error) {
        if (await exists(destination)) {
          throw new PropertyError(`failed restore left ${destination} behind`);
        }
        throw error;
      }
      // Whatever it accepts is the canonical NAR of what it wrote.
      const again = await collect(dumpNar(destination));
      await Deno.remove(destination, { recursive: true });
      same(again, input, "restored tree dumps to different bytes");
    },
    expected: (error) => error instanceof NarFormatError,
    async close() {
      await Deno.remove(root, { recursive: true });
    },
  };
}

// ------------------------------------------------------------ log channel

async function logChannelTarget(): Promise<FuzzTarget> {
  const root = await Deno.makeTempDir({ prefix: "lorica-fuzz-log-" });
  const storeDir = `${root}/store`;
  const lines: string[] = [];
  const completed = new Map<string, number>();
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir: `${root}/cache`,
    storeDir,
    logger: createLogger({
      level: "debug",
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    onComplete: (drv, bytes) => completed.set(drv, bytes),
  });
  const drv = `${storeDir}/${HASH}-hello-2.12.drv`;
  const header = (path: string) =>
    encoder.encode(`(log (version 0) (derivation ${JSON.stringify(path)}))`);
  const corpus = [
    concat([header(drv), zlib.gzipSync(encoder.encode("building...\n"))]),
    header(drv),
    encoder.encode(` \n(log (version 0) (derivation "${drv}"))`),
    header(`${storeDir}/${HASH}-hello-2.12`),
  ];
  return {
    corpus,
    tokens: [
      ...SEXP_TOKENS,
      "log",
      "version",
      "derivation",
      storeDir,
      "/",
      HASH,
      ".drv",
    ],
    async run(input) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: receiver.port,
      });
      try {
        await conn.write(input).catch(() => 0);
        await conn.closeWrite().catch(() => {});
        // The receiver must close the connection: read until it does.
        const buffer = new Uint8Array(4096);
        while ((await conn.read(buffer).catch(() => null)) !== null) {
          // Its greeting, then nothing.
        }
      } finally {
        conn.close();
      }
      const crashed = lines.find((line) => line.includes("crashed"));
      if (crashed !== undefined) {
        throw new PropertyError(`receiver: ${crashed}`);
      }
    },
    // The client sees no errors at all: the receiver only hangs up.
    expected: () => false,
    async finish() {
      // The receiver still serves a valid client.
      const good = `${storeDir}/${"a".repeat(32)}-after-fuzz.drv`;
      const upload = await openLogUpload({
        hostname: "127.0.0.1",
        port: receiver.port,
        drv: good,
        logger: createLogger({
          level: "error",
          timestamps: false,
          sink: () => {},
        }),
      });
      await upload.write(encoder.encode("still serving\n"));
      await upload.close();
      if (upload.error) {
        throw new Error(`valid upload failed: ${upload.error.message}`);
      }
      for (let i = 0; i < 200 && !completed.has(good); i++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const stored = await Deno.readFile(
        `${root}/cache/${"a".repeat(32)}.log.gz`,
      );
      const text = decoder.decode(zlib.gunzipSync(stored));
      if (text !== "still serving\n") {
        throw new Error(`valid upload stored ${JSON.stringify(text)}`);
      }
    },
    async close() {
      await receiver.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Every fuzz target by name. */
export const TARGETS: Record<string, () => FuzzTarget | Promise<FuzzTarget>> = {
  sexp: sexpTarget,
  "zmtp-frame": zmtpFrameTarget,
  "zmtp-greeting": zmtpGreetingTarget,
  narinfo: narinfoTarget,
  drv: () => drvTarget(),
  "drv-roundtrip": () => drvTarget(true),
  "gcrypt-sexp": gcryptTarget,
  messages: messagesTarget,
  nar: narTarget,
  "log-channel": logChannelTarget,
};
