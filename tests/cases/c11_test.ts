// C11 (parts 1-2): a huge build log streamed to the server while its live
// view is open and five clients download the raw log: the server's memory
// stays bounded, every reader gets consistent bytes. Scaled down from 2 GB
// to 192 MiB of base64 noise so that CI stays fast; the bound does not
// depend on the size. The server half runs in a process of its own
// (_c11_server.ts), so that its peak memory is measured alone.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import { openLogUpload } from "../../lib/protocol/log_upload.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { silentLogger } from "../../lib/log.ts";
import { logFileName } from "../../lib/protocol/log_header.ts";

const LOG_BYTES = 192 * 1024 * 1024;
const CHUNK = 48 * 1024; // base64 of 36 KiB of noise
// The case's example limit for the server process. Measured: a peak near
// 150 MiB whatever the log size; keeping the log in memory even once
// would add its 192 MiB (checked: 371 MiB with the receiver hoarding it).
const SERVER_PEAK_RSS_LIMIT = 200 * 1024 * 1024;
const STORE_DIR = "/gnu/store";
const SERVER_PROGRAM = fileURLToPath(
  new URL("./_c11_server.ts", import.meta.url),
);

Deno.test({
  name:
    "C11: a huge log with the live view open and five raw downloads keeps the server's memory bounded",
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "lorica-c11-" });
    const drv = `${STORE_DIR}/${"c".repeat(32)}-noise-1.drv`;
    const buildId = await startedBuild(root, drv);
    const server = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        SERVER_PROGRAM,
        JSON.stringify({ root, storeDir: STORE_DIR }),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const stdin = server.stdin.getWriter();
    try {
      const ports = await firstLine(server.stdout);
      const base = `http://127.0.0.1:${ports.webPort}`;

      // The live view, open from the start.
      const closeLive = new AbortController();
      const live = await fetch(`${base}/build/${buildId}/log/events`, {
        signal: closeLive.signal,
      });
      assert.equal(live.status, 200);
      let liveBytes = 0;
      const liveReading = (async () => {
        for await (const chunk of live.body!) liveBytes += chunk.length;
      })().catch(() => {});

      const upload = await openLogUpload({
        hostname: "127.0.0.1",
        port: ports.logPort,
        drv,
        logger: silentLogger,
        flushIntervalMs: 200,
      });
      let downloads: Promise<number>[] = [];
      for (let sent = 0; sent < LOG_BYTES; sent += CHUNK) {
        const noise = crypto.getRandomValues(new Uint8Array(CHUNK * 3 / 4));
        await upload.write(
          new TextEncoder().encode(Buffer.from(noise).toString("base64")),
        );
        if (sent === LOG_BYTES / 2) {
          // Halfway: five clients download what is there so far.
          downloads = Array.from(
            { length: 5 },
            () => download(base, buildId, { partial: true }),
          );
        }
      }
      await upload.close();
      const sizes = await Promise.all(downloads);
      closeLive.abort();
      await liveReading;

      const total = Math.ceil(LOG_BYTES / CHUNK) * CHUNK;
      for (const size of sizes) assert.ok(size > 0 && size <= total, `${size}`);
      assert.ok(liveBytes > 0, "the live view received the log as it grew");
      // The whole log, downloaded afterwards, is every byte the build wrote.
      assert.equal(await download(base, buildId), total);

      const peak = await peakRss(server.pid);
      // deno-lint-ignore no-console
      console.log(
        `C11: ${total >> 20} MiB log, server peak RSS ${peak >> 20} MiB`,
      );
      assert.ok(
        peak < SERVER_PEAK_RSS_LIMIT,
        `server peak RSS ${peak >> 20} MiB`,
      );
    } finally {
      await stdin.close().catch(() => {});
      const status = await server.status;
      await Deno.remove(root, { recursive: true });
      assert.equal(status.code, 0, "the server half exits cleanly");
    }
  },
});

/** A database with one build of `drv` handed out and started; its id. */
async function startedBuild(root: string, drv: string): Promise<number> {
  await Deno.mkdir(`${root}/logs`);
  const store = openSqliteStore(`${root}/db.sqlite`);
  try {
    await store.upsertSpecification({
      name: "c11",
      build: { type: "all", params: [] },
      channels: [],
      buildOutputs: [],
      notifications: [],
      period: 0,
      priority: 9,
      systems: ["x86_64-linux"],
      isActive: true,
    });
    const evaluation = await store.addEvaluation("c11", [], 1);
    await store.registerBuilds(evaluation, [{
      name: "noise",
      derivation: drv,
      system: "x86_64-linux",
      nixName: "noise-1",
      outputs: [{
        name: "out",
        path: `${STORE_DIR}/${"d".repeat(32)}-noise-1`,
      }],
      inputs: [],
      timeout: 3600,
      maxSilent: 3600,
    }], { priority: 9, now: 1 });
    const build = (await store.popBuild("W", ["x86_64-linux"], 2))!;
    await store.markStarted(
      drv,
      "W",
      logFileName(`${root}/logs`, STORE_DIR, drv),
      3,
    );
    return build.id;
  } finally {
    await store.close();
  }
}

/** The JSON object on the first line of a child's output. */
async function firstLine(
  stdout: ReadableStream<Uint8Array>,
): Promise<{ logPort: number; webPort: number }> {
  let text = "";
  for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    const newline = text.indexOf("\n");
    if (newline >= 0) return JSON.parse(text.slice(0, newline));
  }
  throw new Error(`the C11 server half exited before listening: ${text}`);
}

/** The peak resident memory of process `pid` (VmHWM), in bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = status.match(/^VmHWM:\s+(\d+) kB$/m);
  if (match === null) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * Downloads the raw log (fetch inflates its gzip), counting bytes without
 * keeping them. A download of a log still being written ends in a gzip
 * stream without its trailer: with `partial`, that end is expected.
 */
async function download(
  base: string,
  id: number,
  { partial = false } = {},
): Promise<number> {
  const response = await fetch(`${base}/build/${id}/log/raw`);
  assert.equal(response.status, 200);
  let bytes = 0;
  try {
    for await (const chunk of response.body!) bytes += chunk.length;
  } catch (error) {
    if (!partial) throw error;
  }
  return bytes;
}
