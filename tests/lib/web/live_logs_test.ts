import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  createLiveLogHub,
  GzipLogFollower,
  type LiveLogEvent,
} from "../../../lib/web/live_logs.ts";

/** A gzip stream written to a file piece by piece, flushed like a live upload. */
class GrowingLog {
  readonly #gzip = zlib.createGzip();
  readonly #parts: Uint8Array[] = [];
  constructor(readonly path: string) {
    this.#gzip.on("data", (part: Uint8Array) => this.#parts.push(part));
  }
  async write(text: string | Uint8Array): Promise<void> {
    this.#gzip.write(text);
    await new Promise<void>((resolve) =>
      this.#gzip.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve())
    );
    await this.#drain();
  }
  async end(): Promise<void> {
    await new Promise<void>((resolve) => this.#gzip.end(resolve));
    await this.#drain();
  }
  async #drain() {
    const file = await Deno.open(this.path, { append: true, create: true });
    for (const part of this.#parts.splice(0)) await file.write(part);
    file.close();
  }
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "lorica-live-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("GzipLogFollower reads a gzip log while it grows, before its end is written", () =>
  withDir(async (dir) => {
    const path = `${dir}/log.gz`;
    const follower = new GzipLogFollower(path);
    try {
      assert.equal((await follower.read()).text, "");
      const log = new GrowingLog(path);
      await log.write("phase 1\n");
      assert.equal((await follower.read()).text, "phase 1\n");
      assert.equal((await follower.read()).text, "");
      // A multi-byte character split across two flushes comes out whole.
      const e = new TextEncoder().encode("é\n");
      await log.write(e.subarray(0, 1));
      const half = await follower.read();
      await log.write(e.subarray(1));
      const rest = await follower.read();
      assert.equal(half.text + rest.text, "é\n");
      await log.end();
      const last = await follower.read();
      assert.deepEqual(last, {
        text: "",
        reset: false,
        truncated: false,
        damaged: false,
      });
    } finally {
      follower.close();
    }
  }));

Deno.test("GzipLogFollower starts over when the file is truncated and keeps only the tail at first", () =>
  withDir(async (dir) => {
    const path = `${dir}/log.gz`;
    const lines = Array.from({ length: 100 }, (_, i) => `line ${i}\n`).join("");
    await Deno.writeFile(path, new Uint8Array(zlib.gzipSync(lines)));
    const follower = new GzipLogFollower(path, { tailBytes: 30 });
    try {
      const first = await follower.read();
      assert.equal(first.truncated, true);
      assert.ok(first.text.endsWith("line 99\n"));
      assert.ok(first.text.startsWith("line "), first.text);
      assert.ok(first.text.length <= 30);
      await Deno.writeFile(path, new Uint8Array(zlib.gzipSync("new\n")));
      const again = await follower.read();
      assert.equal(again.reset, true);
      assert.equal(again.text, "new\n");
    } finally {
      follower.close();
    }
  }));

Deno.test("GzipLogFollower that fell behind skips ahead to the tail instead of holding it all (C11)", () =>
  withDir(async (dir) => {
    const path = `${dir}/log.gz`;
    const follower = new GzipLogFollower(path, { tailBytes: 1000 });
    try {
      const log = new GrowingLog(path);
      await log.write("start\n");
      assert.equal((await follower.read()).text, "start\n");
      // 200 KB arrive before the next read.
      for (let i = 0; i < 2000; i++) {
        await log.write(`line ${i} ${"x".repeat(90)}\n`);
      }
      const behind = await follower.read();
      assert.equal(behind.truncated, true);
      assert.ok(behind.text.length <= 1000, `${behind.text.length}`);
      assert.ok(behind.text.startsWith("line "), behind.text.slice(0, 20));
      assert.ok(behind.text.endsWith(`line 1999 ${"x".repeat(90)}\n`));
      // Caught up: small steps come whole again.
      await log.write("done\n");
      assert.deepEqual(await follower.read(), {
        text: "done\n",
        reset: false,
        truncated: false,
        damaged: false,
      });
    } finally {
      follower.close();
    }
  }));

Deno.test("GzipLogFollower reports damaged data instead of throwing", () =>
  withDir(async (dir) => {
    const path = `${dir}/log.gz`;
    await Deno.writeFile(path, new TextEncoder().encode("not gzip at all"));
    const follower = new GzipLogFollower(path);
    try {
      const step = await follower.read();
      assert.equal(step.damaged, true);
      assert.equal((await follower.read()).damaged, true);
    } finally {
      follower.close();
    }
  }));

/** Build log lines that gzip shrinks only so much: they span many chunks. */
function noisyLines(from: number, to: number): string {
  let text = "";
  for (let i = from; i < to; i++) {
    text += `line ${i} ${(i * 2654435761 % 2 ** 32).toString(36)}\n`;
  }
  return text;
}

Deno.test("GzipLogFollower gives every line before garbage after the log's end, then reports the damage", () =>
  withDir(async (dir) => {
    const path = `${dir}/log.gz`;
    const follower = new GzipLogFollower(path);
    try {
      const log = new GrowingLog(path);
      await log.write(noisyLines(0, 100));
      assert.equal((await follower.read()).text, noisyLines(0, 100));
      const followed = (await Deno.stat(path)).size;
      for (let i = 100; i < 3000; i += 100) {
        await log.write(noisyLines(i, i + 100));
      }
      await log.end();
      const junk = new TextEncoder().encode("garbage after the end\n");
      await Deno.writeFile(path, junk, { append: true });
      // The garbage sits in the middle of the follower's last 4 KiB input
      // chunk, after several whole ones.
      const unread = (await Deno.stat(path)).size - followed;
      assert.ok(unread > 3 * 4096, `${unread} bytes unread`);
      const inLastChunk = (unread - junk.length) % 4096;
      assert.ok(inLastChunk > 100 && inLastChunk < 4000, `${inLastChunk}`);

      const rest = await follower.read();
      assert.equal(rest.text, noisyLines(100, 3000));
      assert.equal(rest.damaged, true);
      assert.deepEqual(await follower.read(), {
        text: "",
        reset: false,
        truncated: false,
        damaged: true,
      });
    } finally {
      follower.close();
    }
  }));

Deno.test("createLiveLogHub() signals chunks and completion to a derivation's listeners", () => {
  const hub = createLiveLogHub();
  const seen: LiveLogEvent[] = [];
  const unsubscribe = hub.subscribe("/gnu/store/a.drv", (e) => seen.push(e));
  hub.subscribe("/gnu/store/a.drv", () => {
    throw new Error("a broken listener does not stop the others");
  });
  hub.chunk("/gnu/store/a.drv", new Uint8Array(7));
  hub.chunk("/gnu/store/b.drv", new Uint8Array(1));
  hub.complete("/gnu/store/a.drv", 7);
  assert.deepEqual(seen, [{ type: "chunk", bytes: 7 }, { type: "complete" }]);
  unsubscribe();
  hub.chunk("/gnu/store/a.drv", new Uint8Array(1));
  assert.equal(seen.length, 2);
  assert.equal(hub.watched, 1);
});

/** This process's peak resident memory in bytes (Linux), reset first when `reset`. */
async function peakRss(reset: boolean): Promise<number> {
  if (reset) await Deno.writeTextFile("/proc/self/clear_refs", "5");
  const status = await Deno.readTextFile("/proc/self/status");
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) * 1024;
}

Deno.test({
  name:
    "GzipLogFollower inflates a very repetitive log in small bursts, stopping near its scan limit",
  ignore: Deno.build.os !== "linux",
  fn: () =>
    withDir(async (dir) => {
      // 64 MiB of one character compress to about 64 KiB: a single read
      // of the file, which must not come out of the inflater in one piece,
      // for each of the streams reading it at once.
      const path = `${dir}/log.gz`;
      await Deno.writeFile(
        path,
        zlib.gzipSync(new Uint8Array(64 * 1024 * 1024).fill(0x61), {
          level: 9,
        }),
      );
      const followers = Array.from(
        { length: 8 },
        () =>
          new GzipLogFollower(path, {
            tailBytes: 1000,
            maxScanBytes: 1024 * 1024,
          }),
      );
      try {
        const before = await peakRss(true);
        const steps = await Promise.all(followers.map((f) => f.read()));
        const grown = (await peakRss(false)) - before;
        for (const step of steps) {
          assert.equal(step.truncated, true);
          assert.equal(step.text, "a".repeat(1000));
        }
        // Whole bursts would be 8 × 64 MiB; small ones stop near 8 × 1 MiB.
        assert.ok(
          grown < 128 * 1024 * 1024,
          `peak memory grew by ${Math.round(grown / 1048576)} MiB`,
        );
      } finally {
        for (const follower of followers) follower.close();
      }
    }),
});
