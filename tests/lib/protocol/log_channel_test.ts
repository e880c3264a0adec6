import assert from "node:assert/strict";
import { quietPort } from "../../_ports.ts";
import zlib from "node:zlib";
import {
  logFileName,
  type LogReceiver,
  openLogUpload,
  startLogReceiver,
  truncationMarker,
} from "../../../lib/protocol/log_channel.ts";
import { StorePathError } from "../../../lib/guix/store_path.ts";
import { createLogger } from "../../../lib/log.ts";
import { C10_LOG } from "../../fixtures/c10_log.ts";
import { scriptedLogServer } from "./_scripted_log_server.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";
const encoder = new TextEncoder();

interface Fixture {
  root: string;
  cacheDir: string;
  storeDir: string;
  receiver: LogReceiver;
  lines: string[];
  completed: Map<string, number>;
  chunks: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

async function fixture(
  options: { maxLogBytes?: number; headerTimeoutMs?: number } = {},
): Promise<Fixture> {
  const root = await Deno.makeTempDir({ prefix: "lorica-log-" });
  const cacheDir = `${root}/cache`;
  const storeDir = `${root}/store`;
  const lines: string[] = [];
  const completed = new Map<string, number>();
  const chunks: string[] = [];
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir,
    storeDir,
    logger: createLogger({
      level: "debug",
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    onChunk: (drv) => chunks.push(drv),
    onComplete: (drv, bytes) => completed.set(drv, bytes),
    ...options,
  });
  return {
    root,
    cacheDir,
    storeDir,
    receiver,
    lines,
    completed,
    chunks,
    async [Symbol.asyncDispose]() {
      await receiver.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

function upload(f: Fixture, drv: string, flushIntervalMs = 1000) {
  return openLogUpload({
    hostname: "127.0.0.1",
    port: f.receiver.port,
    drv,
    logger: createLogger({ sink: () => {}, timestamps: false }),
    flushIntervalMs,
  });
}

/** Decompresses with the real gzip binary; tolerates a truncated stream. */
async function gunzip(path: string): Promise<{ out: Uint8Array; ok: boolean }> {
  const { stdout, success } = await new Deno.Command("gzip", {
    args: ["-dc", path],
    stdout: "piped",
    stderr: "null",
  }).output();
  return { out: stdout, ok: success };
}

const gzipAvailable = await new Deno.Command("gzip", { args: ["--version"] })
  .output().then((o) => o.success, () => false);

/** Sends `bytes` as a raw client and returns everything the server sent. */
async function rawClient(port: number, bytes: Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes).catch(() => 0);
    await conn.closeWrite().catch(() => {});
    const received: number[] = [];
    const buffer = new Uint8Array(1024);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      received.push(...buffer.subarray(0, n));
    }
    return new TextDecoder().decode(new Uint8Array(received));
  } finally {
    conn.close();
  }
}

function header(drv: string): Uint8Array {
  return encoder.encode(
    `(log (version 0) (derivation ${JSON.stringify(drv)}))`,
  );
}

async function listTree(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    found.push(path);
    if (entry.isDirectory) found.push(...await listTree(path));
  }
  return found.sort();
}

Deno.test("startLogReceiver() greets with (log-server (version 0)) exactly", async () => {
  await using f = await fixture();
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: f.receiver.port,
  });
  const expected = "(log-server (version 0))";
  const buffer = new Uint8Array(64);
  let got = "";
  while (got.length < expected.length) {
    const n = await conn.read(buffer);
    if (n === null) break;
    got += new TextDecoder().decode(buffer.subarray(0, n));
  }
  conn.close();
  assert.equal(got, expected);
});

Deno.test({
  name: "openLogUpload() stores a log that gunzips to the original bytes (C10)",
  ignore: !gzipAvailable, // gzip binary is the oracle
  async fn() {
    await using f = await fixture();
    const drv = `${f.storeDir}/${HASH}-hello-2.12.drv`;
    const up = await upload(f, drv);
    assert.equal(up.error, undefined);
    for (let i = 0; i < C10_LOG.length; i += 3) {
      await up.write(C10_LOG.subarray(i, i + 3));
    }
    await up.close();
    assert.equal(up.error, undefined);

    const path = `${f.cacheDir}/${HASH}.log.gz`;
    const { out, ok } = await gunzip(path);
    assert.ok(ok, "gzip -d accepts the stored file");
    assert.deepEqual(out, C10_LOG);
    assert.equal(f.completed.get(drv), C10_LOG.length, "log bytes stored");
    assert.ok(f.chunks.length > 0 && f.chunks.every((d) => d === drv));
  },
});

Deno.test({
  name: "openLogUpload() makes flushed bytes readable while still open",
  ignore: !gzipAvailable,
  async fn() {
    await using f = await fixture();
    const drv = `${f.storeDir}/${HASH}-slow-1.0.drv`;
    const path = `${f.cacheDir}/${HASH}.log.gz`;
    const up = await upload(f, drv, 20);
    await up.write(encoder.encode("first line\n"));

    // Wait (bounded) for the periodic flush to reach the file.
    let seen = "";
    for (let attempt = 0; attempt < 500 && !seen.includes("\n"); attempt++) {
      await new Promise((r) => setTimeout(r, 10));
      const bytes = await Deno.readFile(path).catch(() => new Uint8Array());
      if (bytes.length === 0) continue;
      seen = zlib.gunzipSync(bytes, {
        finishFlush: zlib.constants.Z_SYNC_FLUSH,
      }).toString();
    }
    assert.equal(seen, "first line\n");
    const partial = await gunzip(path);
    assert.equal(new TextDecoder().decode(partial.out), "first line\n");
    assert.equal(f.completed.size, 0, "log still open");

    await up.write(encoder.encode("second line\n"));
    await up.close();
    const done = await gunzip(path);
    assert.ok(done.ok);
    assert.equal(
      new TextDecoder().decode(done.out),
      "first line\nsecond line\n",
    );
  },
});

const HOSTILE_NAMES = [
  "/gnu/store/../../etc/x.drv",
  "STORE/../../escape.drv",
  `STORE/${HASH}-a/../../../escape.drv`,
  `STORE/${HASH}-..drv`,
  `STORE/${HASH}-hello.txt`,
  `${HASH}-hello.drv`,
  "relative/path.drv",
  `/nix/store/${HASH}-hello.drv`,
  `STORE/${HASH.slice(1)}e-hello.drv`,
  "",
];

Deno.test("startLogReceiver() refuses hostile derivation names and writes nothing", async () => {
  await using f = await fixture();
  for (const template of HOSTILE_NAMES) {
    const drv = template.replace("STORE", f.storeDir);
    const payload = new Uint8Array([...header(drv), 1, 2, 3, 4]);
    const reply = await rawClient(f.receiver.port, payload);
    assert.equal(reply, "(log-server (version 0))", drv);
  }
  assert.deepEqual(await listTree(f.root), [f.cacheDir]);
  assert.equal(f.completed.size, 0);
  assert.equal(
    f.lines.filter((l) => l.startsWith("warn log header rejected")).length,
    HOSTILE_NAMES.length,
  );
  assert.ok(f.lines.every((l) => !l.includes("log received")));
});

Deno.test("logFileName() maps a derivation to <hash>.log.gz inside cacheDir", () => {
  assert.equal(
    logFileName("/c/", "/gnu/store", `/gnu/store/${HASH}-a.drv`),
    `/c/${HASH}.log.gz`,
  );
  for (const template of HOSTILE_NAMES) {
    const drv = template.replace("STORE", "/gnu/store");
    assert.throws(
      () => logFileName("/c", "/gnu/store", drv),
      StorePathError,
      drv,
    );
  }
});

const BAD_CLIENTS: [string, Uint8Array][] = [
  ["an oversized header", encoder.encode(`(log ${"(x ".repeat(3000)}`)],
  ["garbage", new Uint8Array([0xff, 0x00, 0x1f, 0x8b, 0x08, 0x29, 0x28])],
  ["an early end of file", encoder.encode("(log (version 0) (deriv")],
  ["an unbalanced datum", encoder.encode(")))")],
  ["an unreadable datum", encoder.encode('(log #<procedure> "x)')],
  [
    "a wrong version",
    encoder.encode(`(log (version 1) (derivation "/gnu/store/x.drv"))`),
  ],
  ["a wrong shape", encoder.encode('(log (derivation "x") (version 0))')],
  ["nothing at all", new Uint8Array()],
];

Deno.test({
  name: "startLogReceiver() survives bad clients and serves the next one",
  ignore: !gzipAvailable,
  async fn() {
    await using f = await fixture();
    for (const [what, bytes] of BAD_CLIENTS) {
      const reply = await rawClient(f.receiver.port, bytes);
      assert.equal(reply, "(log-server (version 0))", what);
    }
    // A client that says nothing is dropped at the header timeout.
    await using g = await fixture({ headerTimeoutMs: 50 });
    const silent = await Deno.connect({
      hostname: "127.0.0.1",
      port: g.receiver.port,
    });
    const buffer = new Uint8Array(64);
    while (await silent.read(buffer) !== null);
    silent.close();
    assert.ok(
      g.lines.some((l) =>
        l.includes("LogTimeoutError") || l.includes("timed out") ||
        l.includes("no answer")
      ),
    );

    const drv = `${f.storeDir}/${HASH}-next-1.drv`;
    const up = await upload(f, drv);
    await up.write(encoder.encode("still alive\n"));
    await up.close();
    const { out, ok } = await gunzip(`${f.cacheDir}/${HASH}.log.gz`);
    assert.ok(ok);
    assert.equal(new TextDecoder().decode(out), "still alive\n");
    assert.deepEqual(await listTree(f.root), [
      f.cacheDir,
      `${f.cacheDir}/${HASH}.log.gz`,
    ]);
  },
});

Deno.test("C11: startLogReceiver() keeps maxLogBytes of log, then a marker", async () => {
  await using f = await fixture({ maxLogBytes: 1000 });
  const drv = `${f.storeDir}/${HASH}-big-1.drv`;
  const up = await upload(f, drv);
  // Random bytes do not compress, so far more than 1000 bytes are sent.
  const noise = new Uint8Array(200_000);
  for (let i = 0; i < noise.length; i += 65536) {
    crypto.getRandomValues(noise.subarray(i, i + 65536));
  }
  for (let i = 0; i < noise.length; i += 10_000) {
    await up.write(noise.subarray(i, i + 10_000));
  }
  await up.close();
  assert.equal(up.error, undefined, "the worker never notices the cap");
  const stored = zlib.gunzipSync(
    await Deno.readFile(`${f.cacheDir}/${HASH}.log.gz`),
  );
  assert.deepEqual(
    new Uint8Array(stored.subarray(0, 1000)),
    noise.slice(0, 1000),
  );
  assert.equal(
    new TextDecoder().decode(stored.subarray(1000)),
    truncationMarker(1000),
  );
  assert.equal(f.completed.get(drv), 1000);
  assert.ok(f.lines.some((l) => l.startsWith("warn log size limit reached")));
});

Deno.test("openLogUpload() swallows data when no server listens", async () => {
  const port = quietPort();
  const lines: string[] = [];
  const up = await openLogUpload({
    hostname: "127.0.0.1",
    port,
    drv: `/gnu/store/${HASH}-x.drv`,
    logger: createLogger({ sink: (l) => lines.push(l), timestamps: false }),
  });
  assert.ok(up.error instanceof Error);
  await up.write(encoder.encode("dropped\n"));
  await up.close();
  assert.ok(lines.some((l) => l.startsWith("warn log upload failed")));
});

Deno.test("openLogUpload() rejects a server that does not greet properly", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const serving = (async () => {
    const conn = await listener.accept();
    await conn.write(encoder.encode("(hello (version 0))"));
    const buffer = new Uint8Array(64);
    while (await conn.read(buffer).catch(() => null) !== null);
    conn.close();
  })();
  const up = await openLogUpload({
    hostname: "127.0.0.1",
    port,
    drv: `/gnu/store/${HASH}-x.drv`,
    logger: createLogger({ sink: () => {}, timestamps: false }),
  });
  assert.equal(up.error?.name, "LogProtocolError");
  await up.write(encoder.encode("dropped\n"));
  await up.close();
  await serving;
  listener.close();
});

Deno.test("openLogUpload() keeps accepting writes after the server goes away", async () => {
  await using f = await fixture();
  const up = await upload(f, `${f.storeDir}/${HASH}-gone-1.drv`, 10);
  await up.write(encoder.encode("before\n"));
  await f.receiver.close();
  const noise = new Uint8Array(65536);
  for (let i = 0; i < 40 && up.error === undefined; i++) {
    crypto.getRandomValues(noise);
    await up.write(noise);
  }
  await up.close();
  assert.ok(up.error instanceof Error);
});

Deno.test("openLogUpload() gives up on a server that stops reading", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepted = listener.accept().then(async (conn) => {
    await conn.write(encoder.encode("(log-server (version 0))"));
    return conn; // never read from again
  });
  const up = await openLogUpload({
    hostname: "127.0.0.1",
    port,
    drv: `/gnu/store/${HASH}-stuck-1.drv`,
    logger: createLogger({ sink: () => {}, timestamps: false }),
    sendTimeoutMs: 100,
  });
  const noise = new Uint8Array(65536);
  for (let i = 0; i < 1024 && up.error === undefined; i++) {
    crypto.getRandomValues(noise);
    await up.write(noise);
  }
  await up.close();
  assert.equal(up.error?.name, "LogTimeoutError");
  (await accepted).close();
  listener.close();
});

// A Guile peer doing what Cuirass's log server does: greet, `read` one
// datum, then copy the rest of the connection to a file.
const GUILE_LOG_SERVER = `
(use-modules (ice-9 binary-ports) (rnrs bytevectors))
(define out-file (cadr (command-line)))
(define sock (socket PF_INET SOCK_STREAM 0))
(bind sock AF_INET (inet-pton AF_INET "127.0.0.1") 0)
(listen sock 1)
(display (sockaddr:port (getsockname sock))) (newline) (force-output)
(define client (car (accept sock)))
(display "(log-server (version 0))" client) (force-output client)
(define header (read client))
(call-with-output-file out-file
  (lambda (port)
    (let loop ()
      (let ((bytes (get-bytevector-some client)))
        (unless (eof-object? bytes)
          (put-bytevector port bytes)
          (loop))))))
(write header) (newline)
(close client)
`;

const guileAvailable = await new Deno.Command("guile", { args: ["--version"] })
  .output().then((o) => o.success, () => false);

Deno.test({
  name:
    "openLogUpload() talks to a Guile peer that reads the header with `read` (needs guile, gzip)",
  ignore: !guileAvailable || !gzipAvailable,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lorica-log-guile-" });
    try {
      const child = new Deno.Command("guile", {
        args: ["--no-auto-compile", "-c", GUILE_LOG_SERVER, `${dir}/log.gz`],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await lines.read();
        if (done) break;
        text += value;
      }
      const port = Number(text.trim());
      const drv = `/gnu/store/${HASH}-hello-2.12.drv`;
      const up = await openLogUpload({
        hostname: "127.0.0.1",
        port,
        drv,
        logger: createLogger({ sink: () => {}, timestamps: false }),
      });
      await up.write(C10_LOG);
      await up.close();
      assert.equal(up.error, undefined);
      while (true) {
        const { value, done } = await lines.read();
        if (done) break;
        text += value;
      }
      const status = await child.status;
      await child.stderr.cancel();
      assert.ok(status.success);
      assert.equal(
        text.split("\n")[1],
        `(log (version 0) (derivation "${drv}"))`,
      );
      const { out, ok } = await gunzip(`${dir}/log.gz`);
      assert.ok(ok);
      assert.deepEqual(out, C10_LOG);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("startLogReceiver() says (log-stored) once the log is in place to a worker that asks, and nothing to one that does not", async () => {
  await using f = await fixture();
  const drv = `${f.storeDir}/${HASH}-ack-1.drv`;
  const log = zlib.gzipSync(encoder.encode("built\n"));
  const asking = encoder.encode(
    `(log (version 0) (derivation ${JSON.stringify(drv)}) (acknowledge #t))`,
  );
  const answer = await rawClient(
    f.receiver.port,
    new Uint8Array([...asking, ...log]),
  );
  assert.equal(answer, "(log-server (version 0))(log-stored)");
  const stored = await Deno.readFile(`${f.cacheDir}/${HASH}.log.gz`);
  assert.equal(zlib.gunzipSync(stored).toString(), "built\n");
  // Cuirass's header: the greeting alone, as a Cuirass worker expects.
  const plain = await rawClient(
    f.receiver.port,
    new Uint8Array([...header(drv), ...log]),
  );
  assert.equal(plain, "(log-server (version 0))");
  const bad = await rawClient(
    f.receiver.port,
    encoder.encode(
      `(log (version 0) (derivation ${JSON.stringify(drv)}) (acknowledge 1))`,
    ),
  );
  assert.equal(bad, "(log-server (version 0))");
  assert.ok(f.lines.some((l) => l.includes("log header rejected")));
});

Deno.test("openLogUpload({acknowledge}) asks for (log-stored), and a close without it is a failed upload", async () => {
  for (
    const [words, failed] of [["(log-stored)", false], ["", true], [
      "(log-lost)",
      true,
    ]] as const
  ) {
    const server = scriptedLogServer([words]);
    const drv = `/gnu/store/${HASH}-x.drv`;
    const up = await openLogUpload({
      hostname: "127.0.0.1",
      port: server.port,
      drv,
      acknowledge: true,
      logger: createLogger({ sink: () => {}, timestamps: false }),
    });
    await up.write(encoder.encode("built\n"));
    await up.close();
    const [upload] = await server.served;
    assert.equal(
      upload.header,
      `(log (version 0) (derivation ${JSON.stringify(drv)}) (acknowledge #t))`,
    );
    if (failed) {
      assert.match(String(up.error), /without saying it stored the log/);
    } else assert.equal(up.error, undefined);
  }
});

Deno.test("openLogUpload() without acknowledge takes a plain close as success, as with a Cuirass server", async () => {
  const server = scriptedLogServer([""]);
  const drv = `/gnu/store/${HASH}-x.drv`;
  const up = await openLogUpload({
    hostname: "127.0.0.1",
    port: server.port,
    drv,
    logger: createLogger({ sink: () => {}, timestamps: false }),
  });
  await up.write(encoder.encode("built\n"));
  await up.close();
  const [upload] = await server.served;
  assert.equal(
    upload.header,
    `(log (version 0) (derivation ${JSON.stringify(drv)}))`,
  );
  assert.equal(up.error, undefined);
});
