// C11 (parts 1-2): a huge build log streamed to the server while its live
// view is open and five clients download the raw log: memory stays bounded,
// every reader gets consistent bytes. Scaled down from 2 GB to 192 MiB of
// base64 noise so that CI stays fast; the bound does not depend on the size.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startLogReceiver } from "../../lib/protocol/log_receiver.ts";
import { openLogUpload } from "../../lib/protocol/log_upload.ts";
import { createWebApp } from "../../lib/web/app.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { systemClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { logFileName } from "../../lib/protocol/log_header.ts";

const LOG_BYTES = 192 * 1024 * 1024;
const CHUNK = 48 * 1024; // base64 of 36 KiB of noise
// The process holds the server side and all its clients (uploader, five
// downloads, live view); measured growth levels off near 270 MiB whatever
// the log size, while keeping the log (or five copies) in memory would
// cost several times the log.
const RSS_GROWTH_LIMIT = 400 * 1024 * 1024;
const STORE_DIR = "/gnu/store";

Deno.test({
  name:
    "C11: a huge log with the live view open and five raw downloads keeps memory bounded",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "lorica-c11-" });
    const store = openSqliteStore(`${root}/db.sqlite`);
    const receiver = await startLogReceiver({
      hostname: "127.0.0.1",
      port: 0,
      cacheDir: `${root}/logs`,
      storeDir: STORE_DIR,
      logger: silentLogger,
    });
    const app = createWebApp({
      store,
      logCacheDir: `${root}/logs`,
      storeDir: STORE_DIR,
      clock: systemClock,
      logger: silentLogger,
      livePollMs: 200,
    });
    const web = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      app,
    );
    const base = `http://127.0.0.1:${web.addr.port}`;
    try {
      const drv = `${STORE_DIR}/${"c".repeat(32)}-noise-1.drv`;
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

      const baseline = Deno.memoryUsage().rss;
      let peak = baseline;
      const sampler = setInterval(() => {
        peak = Math.max(peak, Deno.memoryUsage().rss);
      }, 50);

      // The live view, open from the start.
      const closeLive = new AbortController();
      const live = await fetch(`${base}/build/${build.id}/log/events`, {
        signal: closeLive.signal,
      });
      assert.equal(live.status, 200);
      let liveBytes = 0;
      const liveReading = (async () => {
        for await (const chunk of live.body!) liveBytes += chunk.length;
      })().catch(() => {});

      const upload = await openLogUpload({
        hostname: "127.0.0.1",
        port: receiver.port,
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
            () => download(base, build.id, { partial: true }),
          );
        }
      }
      await upload.close();
      const sizes = await Promise.all(downloads);
      clearInterval(sampler);
      closeLive.abort();
      await liveReading;

      const total = Math.ceil(LOG_BYTES / CHUNK) * CHUNK;
      for (const size of sizes) assert.ok(size > 0 && size <= total, `${size}`);
      assert.ok(liveBytes > 0, "the live view received the log as it grew");
      // deno-lint-ignore no-console
      console.log(
        `C11: ${total >> 20} MiB log, RSS grew by ${
          Math.round((peak - baseline) / 2 ** 20)
        } MiB`,
      );
      assert.ok(
        peak - baseline < RSS_GROWTH_LIMIT,
        `RSS grew by ${Math.round((peak - baseline) / 2 ** 20)} MiB`,
      );
      // The whole log, downloaded afterwards, is every byte the build wrote.
      assert.equal(await download(base, build.id), total);
    } finally {
      await web.shutdown();
      await receiver.close();
      await store.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});

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
