import assert from "node:assert/strict";
import net from "node:net";
import zlib from "node:zlib";
import {
  corruptionMarker,
  endedEarlyMarker,
  startLogReceiver,
  truncationMarker,
} from "../../../lib/protocol/log_receiver.ts";
import { openLogUpload } from "../../../lib/protocol/log_upload.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { C10_LOG } from "../../fixtures/c10_log.ts";
import { type Clock, systemClock } from "../../../lib/clock.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";
const encoder = new TextEncoder();
/** How a cut marker ends, after its reason. */
const MISSING = "the rest of the build log is missing";

async function fixture(options: {
  maxLogBytes?: number;
  maxCompressedBytes?: number;
  maxConnections?: number;
  maxPendingPerAddress?: number;
  accept?: (drv: string, peerAddress: string) => Promise<boolean>;
  headerTimeoutMs?: number;
  idleTimeoutMs?: number;
  clock?: Clock;
} = {}) {
  const root = await Deno.makeTempDir({ prefix: "lorica-logrx-" });
  const lines: string[] = [];
  const completed = new Map<string, number>();
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir: `${root}/cache`,
    storeDir: `${root}/store`,
    logger: createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    onComplete: (drv, bytes) => completed.set(drv, bytes),
    ...options,
  });
  return {
    root,
    receiver,
    lines,
    completed,
    drv: `${root}/store/${HASH}-x-1.drv`,
    file: `${root}/cache/${HASH}.log.gz`,
    async [Symbol.asyncDispose]() {
      await receiver.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** Connects as a raw worker, sends the header and `body`, reads to the end. */
async function sendRaw(
  port: number,
  drv: string,
  body: Uint8Array,
): Promise<{ accepted: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const greeting = new Uint8Array(64);
  await conn.read(greeting);
  const header = encoder.encode(
    `(log (version 0) (derivation ${JSON.stringify(drv)}))`,
  );
  await conn.write(header);
  let accepted = 0;
  try {
    for (let at = 0; at < body.length; at += 64 * 1024) {
      accepted += await conn.write(body.subarray(at, at + 64 * 1024));
    }
    await conn.closeWrite();
    while (await conn.read(greeting) !== null);
  } catch {
    // The receiver closed the connection: that is the point of some tests.
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
  return { accepted };
}

async function waitFor(check: () => boolean) {
  for (let i = 0; i < 1000 && !check(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(check(), "condition never held");
}

/**
 * A gzip bomb: a gzip header, then `copies` independent runs of deflate
 * blocks of 1 MiB of zeros each (sync-flushed, never final). About 1 KiB
 * each, so 10,000 copies are ~10 MB that inflate to ~10 GiB.
 */
function gzipBomb(copies: number): Uint8Array {
  const block = zlib.deflateRawSync(new Uint8Array(1 << 20), {
    finishFlush: zlib.constants.Z_SYNC_FLUSH,
    level: 9,
  });
  const header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
  const bomb = new Uint8Array(header.length + block.length * copies);
  bomb.set(header);
  for (let i = 0; i < copies; i++) {
    bomb.set(block, header.length + i * block.length);
  }
  return bomb;
}

Deno.test("C11: a 10 MB gzip bomb is cut at the log cap, not inflated whole", async () => {
  await using f = await fixture({ maxLogBytes: 1 << 20 });
  const bomb = gzipBomb(10_000);
  assert.ok(bomb.length > 9_000_000, `bomb is ${bomb.length} bytes`);
  const before = Deno.memoryUsage().rss;
  await sendRaw(f.receiver.port, f.drv, bomb);
  await waitFor(() => f.completed.has(f.drv));
  const grown = Deno.memoryUsage().rss - before;
  assert.ok(grown < 200 * 1024 * 1024, `rss grew by ${grown} bytes`);
  assert.equal(f.completed.get(f.drv), 1 << 20);
  const stored = zlib.gunzipSync(await Deno.readFile(f.file));
  assert.equal(stored.length, (1 << 20) + truncationMarker(1 << 20).length);
  assert.ok(stored.subarray(0, 1 << 20).every((b) => b === 0));
  assert.ok(
    new TextDecoder().decode(stored.subarray(1 << 20)).includes(
      "log truncated",
    ),
  );
  assert.ok(f.lines.some((l) => l.startsWith("warn log size limit reached")));
  const closed = f.lines.find((l) =>
    l.startsWith("warn log connection closed")
  );
  assert.ok(closed, "the receiver stops reading past maxCompressedBytes");
  // Read to maxCompressedBytes (4 MB here, some 4 GB of zeros), but not
  // inflated past the cap and one slice of input.
  const inflated = Number(closed.match(/ inflated=(\d+)/)![1]);
  assert.ok(inflated < 32 << 20, `inflated ${inflated} bytes`);
});

Deno.test("C11: compressed input past maxCompressedBytes closes the connection", async () => {
  await using f = await fixture({
    maxLogBytes: 4096,
    maxCompressedBytes: 100_000,
  });
  const noise = new Uint8Array(2_000_000);
  for (let i = 0; i < noise.length; i += 65536) {
    crypto.getRandomValues(noise.subarray(i, i + 65536));
  }
  await sendRaw(
    f.receiver.port,
    f.drv,
    zlib.gzipSync(noise, { level: 0 }),
  );
  await waitFor(() => f.completed.has(f.drv));
  assert.equal(f.completed.get(f.drv), 4096);
  const closed = f.lines.find((l) =>
    l.startsWith("warn log connection closed")
  );
  assert.ok(closed, "connection closed past the limit");
  const received = Number(closed.match(/received=(\d+)/)![1]);
  assert.ok(received < 200_000, `read ${received} bytes`);
});

Deno.test("C10/C11: bytes that are not gzip end the stored log with a marker", async () => {
  await using f = await fixture();
  await sendRaw(f.receiver.port, f.drv, encoder.encode("plain text, no gzip"));
  await waitFor(() => f.completed.has(f.drv));
  const stored = zlib.gunzipSync(await Deno.readFile(f.file));
  assert.equal(new TextDecoder().decode(stored), corruptionMarker(0));
  assert.ok(f.lines.some((l) => l.startsWith("warn log data invalid")));
});

Deno.test("C10: garbage after an upload's last gzip member cuts the stored log after every line before it", async () => {
  await using f = await fixture();
  // Lines that gzip shrinks only so much: several 4 KiB slices of input.
  const lines = Array.from(
    { length: 3000 },
    (_, i) => `line ${i} ${(i * 2654435761 % 2 ** 32).toString(36)}\n`,
  );
  const text = lines.join("");
  const body = new Uint8Array([
    ...zlib.gzipSync(lines.slice(0, 500).join("")),
    ...zlib.gzipSync(lines.slice(500).join("")),
  ]);
  assert.ok(body.length > 3 * 4096, `${body.length}`);
  // The garbage lands in the middle of a slice.
  assert.ok(body.length % 4096 > 100 && body.length % 4096 < 4000);
  await sendRaw(
    f.receiver.port,
    f.drv,
    new Uint8Array([...body, ...encoder.encode("garbage")]),
  );
  await waitFor(() => f.completed.has(f.drv));
  const stored = new TextDecoder().decode(
    zlib.gunzipSync(await Deno.readFile(f.file)),
  );
  assert.equal(stored, text + corruptionMarker(text.length));
  assert.equal(f.completed.get(f.drv), text.length);
  assert.ok(f.lines.some((l) => l.startsWith("warn log data invalid")));
});

Deno.test("C10: a truncated upload (worker killed) keeps what was decodable", async () => {
  await using f = await fixture();
  const text = encoder.encode("line one\nline two\n".repeat(100));
  const gz = zlib.gzipSync(text);
  // Cut the trailer and some data: the stream ends mid-member.
  await sendRaw(f.receiver.port, f.drv, gz.subarray(0, gz.length - 20));
  await waitFor(() => f.completed.has(f.drv));
  const stored = zlib.gunzipSync(await Deno.readFile(f.file));
  const marker = encoder.encode(endedEarlyMarker("connection lost"));
  const kept = stored.subarray(0, stored.length - marker.length);
  assert.ok(kept.length > 0 && kept.length <= text.length);
  assert.deepEqual(new Uint8Array(kept), text.slice(0, kept.length));
  assert.deepEqual(new Uint8Array(stored.subarray(kept.length)), marker);
  assert.ok(!f.lines.some((l) => l.startsWith("warn log data invalid")));
});

Deno.test("a worker killed mid-upload leaves a log ending with a marker saying the connection was lost; its resend leaves none", async () => {
  await using f = await fixture();
  const line = "compiling part 1 of many\n";
  const worker = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      new URL("./_dying_uploader.ts", import.meta.url).pathname,
      String(f.receiver.port),
      f.drv,
      line,
      "40",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // The receiver has what was sent (the live log) before the crash.
    for (let i = 0; i < 1000; i++) {
      if ((await storedText(f.file)) === line.repeat(40)) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(await storedText(f.file), line.repeat(40), "log live");
  } finally {
    worker.kill("SIGKILL");
    await worker.status;
  }
  await waitFor(() => f.completed.has(f.drv));
  const cut = line.repeat(40) + endedEarlyMarker("connection lost");
  assert.equal(wholeGzip(await Deno.readFile(f.file)), cut);
  assert.ok(cut.endsWith(`[lorica: log cut: connection lost; ${MISSING}]\n`));
  assert.ok(
    f.lines.some((l) =>
      l.startsWith("info log ended early") &&
      l.includes(`reason="connection lost"`)
    ),
    f.lines.join("\n"),
  );

  // The worker comes back and sends the whole log from its own copy.
  f.completed.clear();
  await uploadLog(f.receiver.port, f.drv, line.repeat(50) + "done\n");
  await waitFor(() => f.completed.has(f.drv));
  assert.equal(
    wholeGzip(await Deno.readFile(f.file)),
    line.repeat(50) + "done\n",
  );
});

Deno.test("an upload cut by the receiver says why: silence past the idle limit, or the log server stopping", async (t) => {
  for (
    const [name, reason, options, cut] of [
      ["idle", "no log data for 200 ms", { idleTimeoutMs: 200 }, () => {}],
      [
        "stop",
        "the log server stopped",
        {},
        (receiver: { close(): Promise<void> }) => receiver.close(),
      ],
    ] as const
  ) {
    await t.step(name, async () => {
      await using f = await fixture(options);
      const upload = await openLogUpload({
        hostname: "127.0.0.1",
        port: f.receiver.port,
        drv: f.drv,
        logger: silentLogger,
        flushIntervalMs: 10,
      });
      try {
        await upload.write(encoder.encode("still building\n"));
        for (let i = 0; i < 1000; i++) {
          if ((await storedText(f.file)) !== "") break;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await cut(f.receiver);
        await waitFor(() => f.completed.has(f.drv));
        const stored = wholeGzip(await Deno.readFile(f.file));
        assert.equal(stored, "still building\n" + endedEarlyMarker(reason));
        assert.ok(stored.endsWith(`log cut: ${reason}; ${MISSING}]\n`));
      } finally {
        await upload.close();
      }
    });
  }
});

Deno.test("C10: raw bytes (invalid UTF-8, ANSI, CR) are stored unchanged", async () => {
  await using f = await fixture();
  const bytes = C10_LOG;
  const upload = await openLogUpload({
    hostname: "127.0.0.1",
    port: f.receiver.port,
    drv: f.drv,
    logger: silentLogger,
  });
  await upload.write(bytes);
  await upload.close();
  await waitFor(() => f.completed.has(f.drv));
  assert.deepEqual(
    new Uint8Array(zlib.gunzipSync(await Deno.readFile(f.file))),
    bytes,
  );
});

Deno.test("a log is refused when the receiver does not accept its sender", async () => {
  const asked: [string, string][] = [];
  await using f = await fixture({
    accept: (drv, peer) => {
      asked.push([drv, peer]);
      return Promise.resolve(false);
    },
  });
  await sendRaw(f.receiver.port, f.drv, zlib.gzipSync("forged log\n"));
  await waitFor(() => f.lines.some((l) => l.includes("log refused")));
  assert.deepEqual(asked, [[f.drv, "127.0.0.1"]]);
  await assert.rejects(Deno.stat(f.file), Deno.errors.NotFound);
});

/**
 * Opens a connection to 127.0.0.1:`port` from the loopback address `from`
 * and sends nothing; resolves once the receiver has dealt with it (sent its
 * greeting, or hung up).
 */
function idleFrom(from: string, port: number): Promise<net.Socket> {
  return new Promise((resolve) => {
    const socket = net.createConnection({
      host: "127.0.0.1",
      port,
      localAddress: from,
    });
    socket.on("error", () => {});
    socket.once("data", () => resolve(socket));
    socket.once("close", () => resolve(socket));
  });
}

Deno.test("one address holding idle connections leaves room for the others' uploads", async () => {
  await using f = await fixture({
    maxConnections: 16,
    maxPendingPerAddress: 4,
  });
  // Another loopback address plays the hog, as in the review: it opens
  // every place the receiver has and never sends a header.
  const hog: net.Socket[] = [];
  try {
    for (let i = 0; i < 16; i++) {
      hog.push(await idleFrom("127.0.0.2", f.receiver.port));
    }
    const upload = await openLogUpload({
      hostname: "127.0.0.1",
      port: f.receiver.port,
      drv: f.drv,
      logger: silentLogger,
    });
    assert.equal(upload.error, undefined, "the worker got in");
    await upload.write(encoder.encode("a real log\n"));
    await upload.close();
    await waitFor(() => f.completed.has(f.drv));
    assert.equal(
      new TextDecoder().decode(zlib.gunzipSync(await Deno.readFile(f.file))),
      "a real log\n",
    );
    const refused = f.lines.filter((l) =>
      l.startsWith("warn log connection refused peer=127.0.0.2:") &&
      l.includes('reason="too many from this address without a header"') &&
      l.includes("limit=4")
    );
    assert.equal(refused.length, 12, f.lines.join("\n"));
  } finally {
    for (const socket of hog) socket.destroy();
  }
});

Deno.test("a worker's concurrent uploads from one address all get in", async () => {
  await using f = await fixture();
  const drvs = Array.from(
    { length: 24 },
    (_, i) => `${f.root}/store/${HASH.slice(0, 30)}${HASH[i]}0-x-${i}.drv`,
  );
  const uploads = await Promise.all(drvs.map((drv) =>
    openLogUpload({
      hostname: "127.0.0.1",
      port: f.receiver.port,
      drv,
      logger: silentLogger,
    })
  ));
  assert.ok(uploads.every((u) => u.error === undefined));
  await Promise.all(uploads.map(async (upload, i) => {
    await upload.write(encoder.encode(`build ${i}\n`));
    await upload.close();
  }));
  await waitFor(() => f.completed.size === drvs.length);
  assert.ok(!f.lines.some((l) => l.includes("log connection refused")));
});

/** Uploads `text` as the log of `drv`, as a worker does; waits for the end. */
async function uploadLog(port: number, drv: string, text: string) {
  const upload = await openLogUpload({
    hostname: "127.0.0.1",
    port,
    drv,
    logger: silentLogger,
  });
  if (text.length > 0) await upload.write(encoder.encode(text));
  await upload.close();
  assert.equal(upload.error, undefined);
}

/** The text of `bytes`, which must be one gzip stream with nothing after. */
function wholeGzip(bytes: Uint8Array): string {
  // Node's gunzip skips what follows the stream; `info` tells how far it read.
  const { buffer, engine } = zlib.gunzipSync(bytes, {
    info: true,
  }) as unknown as {
    buffer: Uint8Array;
    engine: { bytesWritten: number };
  };
  assert.equal(engine.bytesWritten, bytes.length, "bytes after the stream");
  return new TextDecoder().decode(buffer);
}

/** The stored log, even a still-open gzip stream. */
async function storedText(file: string): Promise<string> {
  const bytes = await Deno.readFile(file).catch(() => new Uint8Array());
  return new TextDecoder().decode(
    zlib.gunzipSync(bytes, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  );
}

Deno.test("an upload with no log bytes keeps the build's earlier log, and says so", async () => {
  await using f = await fixture();
  const real = "checking for gcc... gcc\n".repeat(4000);
  await uploadLog(f.receiver.port, f.drv, real);
  await waitFor(() => f.completed.get(f.drv) === real.length);
  const before = await Deno.readFile(f.file);

  // The same build dispatched again to a worker that already has its
  // outputs: it "builds" at once and sends an empty gzip stream.
  f.completed.clear();
  await uploadLog(f.receiver.port, f.drv, "");
  await waitFor(() => f.completed.has(f.drv));
  assert.deepEqual(await Deno.readFile(f.file), before, "earlier log kept");
  const dropped = f.lines.find((l) => l.startsWith("warn log upload dropped"));
  assert.ok(dropped, f.lines.join("\n"));
  assert.ok(dropped.includes(`drv=${f.drv}`), dropped);
  assert.ok(dropped.includes(` kept=${before.length}`), dropped);
  assert.ok(/ compressed=\d+ /.test(dropped), dropped);

  // Bytes that are not gzip at all carry no log either.
  f.completed.clear();
  await sendRaw(f.receiver.port, f.drv, encoder.encode("not gzip"));
  await waitFor(() => f.completed.has(f.drv));
  assert.deepEqual(await Deno.readFile(f.file), before, "still kept");

  // Only the two uploads' own files were made, and both are gone.
  const names = [...Deno.readDirSync(`${f.root}/cache`)].map((e) => e.name);
  assert.deepEqual(names, [`${HASH}.log.gz`]);
});

Deno.test("C08: an empty upload of a build with no log yet stores an empty log", async () => {
  await using f = await fixture();
  await uploadLog(f.receiver.port, f.drv, "");
  await waitFor(() => f.completed.has(f.drv));
  assert.equal(f.completed.get(f.drv), 0);
  assert.equal(await storedText(f.file), "");
  assert.ok(f.lines.some((l) => l.startsWith("info log received")));
});

Deno.test("a new run with log bytes replaces the earlier log", async () => {
  await using f = await fixture();
  await uploadLog(f.receiver.port, f.drv, "first run\n");
  await waitFor(() => f.completed.has(f.drv));
  f.completed.clear();
  await uploadLog(f.receiver.port, f.drv, "second run\n");
  await waitFor(() => f.completed.has(f.drv));
  assert.equal(await storedText(f.file), "second run\n");
  assert.ok(!f.lines.some((l) => l.includes("log upload dropped")));
});

Deno.test("an upload superseded by a newer run never writes into the newer log", async () => {
  await using f = await fixture();
  const old = await openLogUpload({
    hostname: "127.0.0.1",
    port: f.receiver.port,
    drv: f.drv,
    logger: silentLogger,
    flushIntervalMs: 10,
  });
  await old.write(encoder.encode("old run, first line\n".repeat(50)));
  for (let i = 0; i < 1000 && (await storedText(f.file)) === ""; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok((await storedText(f.file)).startsWith("old run"), "old log live");

  // The build runs again elsewhere (a network split); its log takes over.
  await uploadLog(f.receiver.port, f.drv, "new run\n");
  await waitFor(() => f.completed.has(f.drv));
  // The old worker carries on, then ends: none of it reaches the log.
  await old.write(encoder.encode("old run, more\n".repeat(50)));
  await old.close();
  await waitFor(() => f.lines.some((l) => l.startsWith("info log superseded")));
  assert.equal(wholeGzip(await Deno.readFile(f.file)), "new run\n");
});

Deno.test("startLogReceiver() removes upload files a crash left, not live ones", async () => {
  const root = await Deno.makeTempDir({ prefix: "lorica-logrx-" });
  const cache = `${root}/cache`;
  await Deno.mkdir(cache);
  const stale = `${cache}/${HASH}.log.gz.0123456789abcdef.part`;
  const live = `${cache}/${HASH}.log.gz.fedcba9876543210.part`;
  const other = `${cache}/${HASH}.log.gz.notes`;
  for (const path of [stale, live, other]) await Deno.writeTextFile(path, "x");
  const old = new Date(Date.now() - 3 * 60 * 60 * 1000);
  await Deno.utime(stale, old, old);
  await Deno.utime(other, old, old);
  const lines: string[] = [];
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir: cache,
    storeDir: `${root}/store`,
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
  });
  try {
    const names = [...Deno.readDirSync(cache)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      `${HASH}.log.gz.fedcba9876543210.part`,
      `${HASH}.log.gz.notes`,
    ]);
    assert.ok(lines.includes("info log uploads left over removed count=1"));
  } finally {
    await receiver.close();
    await Deno.remove(root, { recursive: true });
  }
});

/** Opens an upload of `drv` and sends its header, then nothing. */
async function idleUpload(port: number, drv: string): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.read(new Uint8Array(64));
  await conn.write(
    encoder.encode(`(log (version 0) (derivation ${JSON.stringify(drv)}))`),
  );
  return conn;
}

Deno.test("uploads of one derivation sent again and again hold one place, not all", async () => {
  await using f = await fixture({ maxConnections: 4 });
  // A peer allowed to upload one build's log opens upload after upload of
  // it, each with a header and then silence (the idle timeout is 2 h).
  const hog: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      hog.push(await idleUpload(f.receiver.port, f.drv));
      await waitFor(() =>
        f.lines.filter((l) => l.startsWith("info log receiving")).length ===
          i + 1
      );
    }
    const other = `${f.root}/store/${HASH.slice(0, 31)}0-y-1.drv`;
    await uploadLog(f.receiver.port, other, "another build's log\n");
    await waitFor(() => f.completed.has(other));
    assert.equal(f.completed.get(other), "another build's log\n".length);
    assert.ok(
      !f.lines.some((l) => l.includes("log connection refused")),
      f.lines.join("\n"),
    );
    assert.equal(
      f.lines.filter((l) => l.startsWith("info log superseded")).length,
      3,
    );
  } finally {
    for (const conn of hog) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }
});

Deno.test("the header timeout counts the time that passed: a forward step of the wall clock loses no log", async () => {
  let offset = 0;
  await using f = await fixture({
    headerTimeoutMs: 5000,
    clock: { ...systemClock, now: () => Date.now() + offset },
  });
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: f.receiver.port,
  });
  try {
    const greeting = new Uint8Array(64);
    await conn.read(greeting);
    const header = encoder.encode(
      `(log (version 0) (derivation ${JSON.stringify(f.drv)}))`,
    );
    // The header in three parts; NTP steps the wall clock a day ahead
    // between the first two.
    const pause = () => new Promise((resolve) => setTimeout(resolve, 100));
    await conn.write(header.subarray(0, 10));
    await pause();
    offset = 86_400_000;
    await conn.write(header.subarray(10, 20));
    await pause();
    await conn.write(header.subarray(20));
    await conn.write(zlib.gzipSync(encoder.encode("line\n")));
    await conn.closeWrite();
    while (await conn.read(greeting) !== null);
  } finally {
    conn.close();
  }
  await waitFor(() => f.completed.has(f.drv));
  assert.ok(
    !f.lines.some((l) => l.startsWith("warn log header rejected")),
    f.lines.join("\n"),
  );
});
