// Screenshots of every page over realistic data: `deno run -A tests/browser/_screenshots.ts OUTDIR`.

import zlib from "node:zlib";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { createWebApp } from "../../lib/web/app.ts";
import { createLiveLogHub } from "../../lib/web/live_logs.ts";
import { createFarmMetrics } from "../../lib/web/metrics.ts";
import { logFilePath } from "../../lib/web/build_log.ts";
import { silentLogger } from "../../lib/log.ts";
import { systemClock } from "../../lib/clock.ts";
import { populateFarm, STORE_DIR } from "./_farm_data.ts";
import { launchChromium } from "./_chromium.ts";

const out = Deno.args[0] ?? "/tmp/lorica-screens";
await Deno.mkdir(out, { recursive: true });
const store = openSqliteStore(":memory:");
const logDir = await Deno.makeTempDir({ prefix: "lorica-shots-" });
const now = Math.floor(Date.now() / 1000);
const farm = await populateFarm(store, { logDir, now });
const hub = createLiveLogHub();
const metrics = createFarmMetrics();
const app = createWebApp({
  store,
  logCacheDir: logDir,
  storeDir: STORE_DIR,
  clock: systemClock,
  logger: silentLogger,
  adminToken: "screenshot-token",
  liveLogs: hub,
  metrics,
});
const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  app,
);
const base = `http://127.0.0.1:${server.addr.port}`;

// The running build's log grows while we look at it.
const path = logFilePath(logDir, farm.running.derivation)!;
const gzip = zlib.createGzip();
gzip.on("data", (chunk: Uint8Array) => {
  Deno.writeFileSync(path, chunk, { append: true });
  hub.chunk(farm.running.derivation, chunk);
});
let line = 0;
const grow = setInterval(() => {
  gzip.write(`  CC       src/file${line++}.o <ok> & done\n`);
  gzip.flush(zlib.constants.Z_SYNC_FLUSH);
}, 50);

const failed = farm.builds.find((b) => b.status === 1)!;
const shots: [string, string][] = [
  ["dashboard", "/"],
  ["jobset", "/jobset/demo"],
  ["evaluation", "/eval/2"],
  ["jobs-grid", "/eval/2/dashboard"],
  ["build-failed", `/build/${failed.id}/details`],
  ["build-running", `/build/${farm.running.id}/details`],
  ["workers", "/workers"],
  ["queue", "/queue"],
  ["search", "/search?query=perl"],
  ["spec-form", "/specification/edit/demo"],
  ["error", "/build/99999/details"],
];
await using chromium = await launchChromium();
const page = await chromium.context.newPage();
for (const [name, url] of shots) {
  await page.goto(base + url, { waitUntil: "load" });
  if (name === "build-running") await page.waitForTimeout(1500);
  await page.screenshot({ path: `${out}/${name}.png`, fullPage: true });
}
await page.setViewportSize({ width: 420, height: 800 });
await page.goto(base + "/queue");
await page.screenshot({ path: `${out}/queue-narrow.png`, fullPage: false });
clearInterval(grow);
gzip.end();
await server.shutdown();
await store.close();
await Deno.remove(logDir, { recursive: true });
// deno-lint-ignore no-console -- a command-line tool reporting where its files went
console.log(`screenshots in ${out}`);
