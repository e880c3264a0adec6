import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  recoverLeftUploads,
  SERVER_DIED_REASON,
} from "../../../lib/protocol/left_uploads.ts";
import { UploadFile } from "../../../lib/protocol/log_file.ts";
import { endedEarlyMarker } from "../../../lib/protocol/log_sink.ts";
import { startLogReceiver } from "../../../lib/protocol/log_receiver.ts";
import { openLogUpload } from "../../../lib/protocol/log_upload.ts";
import { silentLogger } from "../../../lib/log.ts";
import { createFixture, STORE_DIR } from "../web/_fixture.ts";

const encoder = new TextEncoder();
const HASH = "0123456789abcdfghijklmnpqrsvwxyz";
const CUT_LINE =
  "[lorica: log cut: the server died while writing it; the rest of the build log is missing]\n";

/** The real log receiver in a child process, on `cacheDir`. */
async function receiverProcess(cacheDir: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      "--allow-read",
      "--allow-write",
      new URL("./_log_receiver_process.ts", import.meta.url).pathname,
      cacheDir,
      STORE_DIR,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let out = "";
  while (!out.includes("\n")) {
    const { done, value } = await reader.read();
    if (done) break;
    out += value;
  }
  reader.releaseLock();
  const port = Number(out.trim());
  if (!(port > 0)) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`Cannot start the log receiver: ${await stderr}`);
  }
  return {
    port,
    /** Kills the process (SIGKILL) and returns what it logged. */
    async kill(): Promise<string> {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      return await stderr;
    },
  };
}

/** The text of `bytes`, which must be one whole gzip stream. */
function wholeGzip(bytes: Uint8Array): string {
  return new TextDecoder().decode(zlib.gunzipSync(bytes));
}

/** The stored log, even a still-open gzip stream. */
async function storedText(file: string): Promise<string> {
  const bytes = await Deno.readFile(file).catch(() => new Uint8Array());
  return new TextDecoder().decode(
    zlib.gunzipSync(bytes, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  );
}

async function waitFor(check: () => Promise<boolean>) {
  for (let i = 0; i < 1000 && !await check(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(await check(), "condition never held");
}

function partFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((entry) => entry.name)
    .filter((name) => name.endsWith(".part"));
}

Deno.test("a log server killed mid-upload leaves, once started again, a log the web reads whole and marked; the worker's resend replaces it with no marker", async () => {
  await using fx = await createFixture();
  const build = fx.builds.started;
  const drv = build.derivation;
  const file = `${fx.logDir}/${
    drv.slice(STORE_DIR.length + 1, STORE_DIR.length + 33)
  }.log.gz`;
  const line = "checking whether the C compiler works... yes\n";

  const first = await receiverProcess(fx.logDir);
  const upload = await openLogUpload({
    hostname: "127.0.0.1",
    port: first.port,
    drv,
    logger: silentLogger,
    flushIntervalMs: 10,
  });
  try {
    await upload.write(encoder.encode(line.repeat(30)));
    // The live log has it before the server dies.
    await waitFor(async () => (await storedText(file)) === line.repeat(30));
  } finally {
    await first.kill();
    await upload.close().catch(() => {});
  }
  assert.throws(() => zlib.gunzipSync(Deno.readFileSync(file)), "cut short");

  const second = await receiverProcess(fx.logDir);
  try {
    const raw = await fx.fetch(`/build/${build.id}/log/raw`);
    assert.equal(raw.status, 200);
    assert.equal(raw.headers.get("content-encoding"), "gzip");
    const repaired = line.repeat(30) + endedEarlyMarker(SERVER_DIED_REASON);
    assert.ok(repaired.endsWith(CUT_LINE));
    assert.equal(wholeGzip(new Uint8Array(await raw.arrayBuffer())), repaired);
    const plain = await fx.fetch(`/build/${build.id}/log/raw`, {
      headers: { "accept-encoding": "identity" },
    });
    assert.equal(await plain.text(), repaired);
    assert.deepEqual(partFiles(fx.logDir), []);

    // The worker sends its whole log again, from its own copy.
    const resend = await openLogUpload({
      hostname: "127.0.0.1",
      port: second.port,
      drv,
      logger: silentLogger,
    });
    await resend.write(encoder.encode(line.repeat(40) + "done\n"));
    await resend.close();
    assert.equal(resend.error, undefined);
    const again = await fx.fetch(`/build/${build.id}/log/raw`);
    assert.equal(
      wholeGzip(new Uint8Array(await again.arrayBuffer())),
      line.repeat(40) + "done\n",
    );
  } finally {
    const logged = await second.kill();
    assert.match(
      logged,
      /^warn log repaired path=.* reason="the server died while writing it"$/m,
    );
  }
});

Deno.test("recoverLeftUploads() leaves alone the log a live upload is writing", async () => {
  const root = await Deno.makeTempDir({ prefix: "lorica-left-" });
  const cache = `${root}/cache`;
  const file = `${cache}/${HASH}.log.gz`;
  const drv = `${root}/store/${HASH}-x-1.drv`;
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir: cache,
    storeDir: `${root}/store`,
    logger: silentLogger,
  });
  try {
    const upload = await openLogUpload({
      hostname: "127.0.0.1",
      port: receiver.port,
      drv,
      logger: silentLogger,
      flushIntervalMs: 10,
    });
    await upload.write(encoder.encode("still building\n"));
    await waitFor(async () => (await storedText(file)) === "still building\n");

    const left = await recoverLeftUploads(cache, {
      idleMs: 0,
      now: Date.now() + 86_400_000,
      logger: silentLogger,
    });
    assert.deepEqual(left, { removed: 0, repaired: 0 });
    assert.equal(partFiles(cache).length, 1, "the upload keeps its name");

    await upload.write(encoder.encode("done\n"));
    await upload.close();
    assert.equal(upload.error, undefined);
    assert.equal(
      wholeGzip(await Deno.readFile(file)),
      "still building\ndone\n",
    );
    assert.deepEqual(partFiles(cache), []);
  } finally {
    await receiver.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("recoverLeftUploads() leaves a whole log unchanged when its upload died before dropping its name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-left-" });
  try {
    const file = `${dir}/${HASH}.log.gz`;
    const whole = zlib.gzipSync(encoder.encode("all of it\n"));
    const target = await UploadFile.create(file);
    await target.file.write(whole);
    await target.publish();
    target.file.close();

    const left = await recoverLeftUploads(dir, {
      idleMs: 7_200_000,
      now: Date.now(),
      logger: silentLogger,
    });
    assert.deepEqual(left, { removed: 0, repaired: 0 });
    assert.deepEqual(await Deno.readFile(file), new Uint8Array(whole));
    assert.deepEqual(partFiles(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recoverLeftUploads() marks a log whose tail a power loss left as garbage", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-left-" });
  try {
    const file = `${dir}/${HASH}.log.gz`;
    const streamed = zlib.deflateRawSync(encoder.encode("kept\n"), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    const header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    const target = await UploadFile.create(file);
    await target.file.write(new Uint8Array([...header, ...streamed]));
    // Blocks the disk never got: zeros.
    await target.file.write(new Uint8Array(512));
    await target.publish();
    target.file.close();

    const left = await recoverLeftUploads(dir, {
      idleMs: 7_200_000,
      now: Date.now(),
      logger: silentLogger,
    });
    assert.deepEqual(left, { removed: 0, repaired: 1 });
    assert.equal(
      wholeGzip(await Deno.readFile(file)),
      "kept\n" + `\n${CUT_LINE}`,
    );
    assert.deepEqual(partFiles(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recoverLeftUploads() does not put its repair over a log a new upload published meanwhile", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-left-" });
  try {
    const file = `${dir}/${HASH}.log.gz`;
    // What a dead server left: a log cut short, its upload name unlocked.
    // Lines that compress little: the repair takes many reads.
    const lines = Array.from(
      { length: 20_000 },
      (_, i) => `old attempt ${crypto.randomUUID()} ${i}\n`,
    ).join("");
    const streamed = zlib.deflateRawSync(encoder.encode(lines), {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
    });
    const header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    const left = await UploadFile.create(file);
    await left.file.write(new Uint8Array([...header, ...streamed]));
    await left.publish();
    left.file.close();
    const leftName = partFiles(dir)[0];

    // The build runs again (local mode starts it while the log expiry's
    // first sweep runs): its new log is in place before the repair ends.
    const sweeping = recoverLeftUploads(dir, {
      idleMs: 7_200_000,
      now: Date.now(),
      logger: silentLogger,
    });
    // The repair has begun writing its copy.
    for (let i = 0; i < 10_000; i++) {
      if (partFiles(dir).some((name) => name !== leftName)) break;
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    assert.equal(partFiles(dir).length, 2, "the repair never began");
    const rebuilt = await UploadFile.create(file);
    await rebuilt.publish();
    const fresh = zlib.gzipSync(encoder.encode("new attempt\n"));
    await rebuilt.file.write(fresh);
    assert.deepEqual(await sweeping, { removed: 0, repaired: 0 });
    rebuilt.file.close();
    await rebuilt.release();

    assert.equal(wholeGzip(await Deno.readFile(file)), "new attempt\n");
    assert.deepEqual(partFiles(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
