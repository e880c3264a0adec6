// The pages in a real browser: Debian's headless Chromium driven by playwright-core,
// against createWebApp served by Deno.serve on 127.0.0.1 (port 0).

import assert from "node:assert/strict";
import zlib from "node:zlib";
import type { ConsoleMessage } from "playwright-core";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { createWebApp } from "../../lib/web/app.ts";
import { createLiveLogHub } from "../../lib/web/live_logs.ts";
import { logFilePath } from "../../lib/web/build_log.ts";
import { silentLogger } from "../../lib/log.ts";
import { epochSeconds, systemClock } from "../../lib/clock.ts";
import { populateFarm, STORE_DIR } from "./_farm_data.ts";
import { chromiumUnavailable, launchChromium } from "./_chromium.ts";

/** Why the test is skipped: no Chromium, or playwright-core cannot load. */
async function skipReason(): Promise<string | null> {
  const missing = chromiumUnavailable();
  if (missing !== null) return missing;
  try {
    await import("playwright-core");
  } catch (error) {
    return `playwright-core cannot be loaded: ${(error as Error).message}`;
  }
  return null;
}

const reason = await skipReason();
/** Longest wait for something to show up in the page. */
const WAIT_MS = 20_000;

Deno.test({
  name: `web pages in headless Chromium${
    reason ? ` (skipped: ${reason})` : ""
  }`,
  ignore: reason !== null,
  // Chromium runs as a child process of playwright-core.
  async fn(t) {
    const store = openSqliteStore(":memory:");
    const logDir = await Deno.makeTempDir({ prefix: "lorica-browser-" });
    const hub = createLiveLogHub();
    const farm = await populateFarm(store, {
      logDir,
      now: epochSeconds(systemClock),
    });
    const app = createWebApp({
      store,
      logCacheDir: logDir,
      storeDir: STORE_DIR,
      clock: systemClock,
      logger: silentLogger,
      liveLogs: hub,
      livePollMs: 200,
      // Shows the admin buttons, whose choice depends on the build status.
      adminToken: "browser-test",
    });
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      app,
    );
    const base = `http://127.0.0.1:${server.addr.port}`;
    const chromium = await launchChromium();
    try {
      const page = await chromium.context.newPage();
      page.setDefaultTimeout(WAIT_MS);

      await t.step("the dashboard lists the demo specification", async () => {
        await page.goto(`${base}/`);
        const link = page.locator(`a[href="/jobset/demo"]`);
        assert.equal(await link.textContent(), "demo");
        const row = page.locator("tr", { has: link });
        assert.match(await row.innerText(), /\d+ %/);
        await link.click();
        await page.waitForURL(`${base}/jobset/demo`);
        assert.match(await page.locator("h1").innerText(), /Jobset demo/);
      });

      await t.step(
        "the jobs grid colours each job by status and links its build",
        async () => {
          const finished = farm.builds.find((build) => build.status === 0)!;
          await page.goto(`${base}/eval/${finished.evaluation}`);
          await page.locator(`a[href$="/dashboard"]`).first().click();
          await page.waitForURL(
            new RegExp(`/eval/${finished.evaluation}/dashboard$`),
          );
          const tile = page.locator(".job-grid a").first();
          // Read in the page: the element's window computes its style.
          const colours = await page.locator(".job-grid a").evaluateAll(
            (tiles) =>
              tiles.map((tile) => [
                tile.className,
                tile.ownerDocument.defaultView!.getComputedStyle(tile)
                  .backgroundColor,
              ]),
          );
          // Every tile is filled; a success never looks like a failure.
          const byClass = new Map(colours as [string, string][]);
          const seen = JSON.stringify(colours);
          assert.ok(byClass.has("s-succeeded"), seen);
          assert.ok(
            [...byClass.values()].every((c) => c !== "rgba(0, 0, 0, 0)"),
          );
          for (const [name, colour] of byClass) {
            if (name.startsWith("s-failed")) {
              assert.notEqual(colour, byClass.get("s-succeeded"), seen);
            }
          }
          const href = await tile.getAttribute("href");
          assert.match(href ?? "", /^\/build\/\d+\/details$/);
          await tile.click();
          await page.waitForURL(`${base}${href}`);
        },
      );

      await t.step("no page logs an error in the console", async () => {
        // A browser of its own: Chromium remembers a site's icon (or its
        // absence) per profile, so pages seen before would hide a 404.
        await using own = await launchChromium();
        const fresh = await own.context.newPage();
        const errors: string[] = [];
        fresh.on("console", (message: ConsoleMessage) => {
          if (message.type() !== "error") return;
          errors.push(`${message.text()} (${message.location().url})`);
        });
        fresh.on("pageerror", (error) => errors.push(error.message));
        const finished = farm.builds.find((build) => build.status === 0)!;
        try {
          for (
            const path of [
              "/",
              "/jobset/demo",
              `/eval/${finished.evaluation}`,
              `/build/${finished.id}/details`,
              `/build/${finished.id}/log/raw`,
              "/queue",
              "/workers",
              `/eval/${finished.evaluation}/dashboard`,
              "/search?query=hello",
            ]
          ) {
            await fresh.goto(`${base}${path}`, { waitUntil: "networkidle" });
          }
        } finally {
          await fresh.close();
        }
        assert.deepEqual(errors, []);
      });

      await t.step(
        "another site cannot show the pages in a frame",
        async () => {
          // Another origin (another port): a page laying a decoy over the
          // admin buttons of a framed build page.
          const finished = farm.builds.find((build) => build.status === 0)!;
          const target = `${base}/build/${finished.id}/details`;
          const decoy = Deno.serve(
            { hostname: "127.0.0.1", port: 0, onListen() {} },
            () =>
              new Response(`<!DOCTYPE html><iframe src="${target}"></iframe>`, {
                headers: { "content-type": "text/html" },
              }),
          );
          const framing = await chromium.context.newPage();
          try {
            const loaded = page.context().waitForEvent("response", {
              predicate: (response) => response.url() === target,
            });
            await framing.goto(`http://127.0.0.1:${decoy.addr.port}/`);
            assert.equal((await loaded).status(), 200);
            await framing.waitForLoadState("load");
            const frame = framing.frames().find((f) =>
              f !== framing.mainFrame()
            );
            assert.ok(frame !== undefined, "the page has its frame");
            // Chromium shows its error page in place of a refused frame.
            assert.equal(
              await frame.locator("h1", { hasText: "Build" }).count(),
              0,
            );
            assert.notEqual(frame.url(), target);
          } finally {
            await framing.close();
            await decoy.shutdown();
          }
        },
      );

      await t.step("no page is wider than a phone's screen", async () => {
        const phone = await chromium.context.newPage();
        await phone.setViewportSize({ width: 360, height: 740 });
        const finished = farm.builds.find((build) => build.status === 0)!;
        const tooWide: string[] = [];
        try {
          for (
            const path of [
              "/",
              "/jobset/demo",
              `/eval/${finished.evaluation}`,
              `/build/${finished.id}/details`,
              "/queue",
              "/workers",
              `/eval/${finished.evaluation}/dashboard`,
              "/search?query=hello",
            ]
          ) {
            await phone.goto(`${base}${path}`);
            // A string: the test's type check knows no DOM.
            const width = Number(
              await phone.evaluate("document.documentElement.scrollWidth"),
            );
            if (width > 360) tooWide.push(`${path}: ${width} px`);
          }
        } finally {
          await phone.close();
        }
        assert.deepEqual(tooWide, []);
      });

      await t.step(
        "a build page receives log lines while the build runs",
        async () => {
          const build = farm.running;
          const path = logFilePath(logDir, build.derivation)!;
          const gzip = zlib.createGzip();
          const pending: Uint8Array[] = [];
          gzip.on("data", (chunk: Uint8Array) => pending.push(chunk));
          // What the log receiver does: append compressed bytes, then signal.
          async function append(text: string) {
            gzip.write(text);
            await new Promise<void>((resolve) =>
              gzip.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve())
            );
            for (const chunk of pending.splice(0)) {
              await Deno.writeFile(path, chunk, { append: true });
              hub.chunk(build.derivation, chunk);
            }
          }
          await page.goto(`${base}/build/${build.id}/details`);
          const cancel = page.getByRole("button", { name: "Cancel" });
          assert.equal(await cancel.count(), 1);
          const finishedAt = page.locator("dl.facts dt", {
            hasText: "Finished",
          }).locator("xpath=following-sibling::dd[1]");
          assert.equal(await finishedAt.textContent(), "—");
          // No log file yet: a raw log link would lead to a 404.
          const raw = page.locator("#raw-log");
          assert.equal(await raw.isVisible(), false);
          await append("starting phase `configure'\n");
          const log = page.locator("#live-log");
          await page.locator("#live-log", {
            hasText: "starting phase `configure'",
          }).waitFor();
          await raw.waitFor({ state: "visible" });
          const rawResponse = await fetch(
            new URL((await raw.getAttribute("href"))!, base),
          );
          assert.equal(rawResponse.status, 200);
          await rawResponse.body?.cancel();
          await append("checking for <gcc>... yes\n");
          await page.locator("#live-log", {
            hasText: "checking for <gcc>... yes",
          }).waitFor();
          // Markup in the log stays text.
          assert.equal(await page.locator("#live-log gcc").count(), 0);
          await append("phase `build' succeeded\n");
          await new Promise<void>((resolve) => gzip.end(resolve));
          for (const chunk of pending.splice(0)) {
            await Deno.writeFile(path, chunk, { append: true });
          }
          await store.completeBuild(build.derivation, 0, {
            worker: build.worker!,
            now: epochSeconds(systemClock),
          });
          hub.complete(build.derivation, 0);
          await page.locator("#live-state", { hasText: "ended" }).waitFor();
          // The facts follow the status: a finish time, no Cancel button.
          await finishedAt.filter({ hasNotText: "—" }).waitFor();
          await cancel.waitFor({ state: "detached" });
          assert.equal(
            await log.textContent(),
            "starting phase `configure'\nchecking for <gcc>... yes\nphase `build' succeeded\n",
          );
          assert.equal(
            await page.locator("#build-status .badge").textContent(),
            "succeeded",
          );
        },
      );

      await t.step(
        "the workers page keeps keyboard focus on a link while it refreshes",
        async () => {
          await page.goto(`${base}/workers`);
          const link = page.locator("[data-worker] a[href^='/build/']")
            .first();
          await link.focus();
          const before = await page.locator("#live-stamp").textContent();
          // Two refresh periods (2 s each) and a little more.
          await page.waitForTimeout(4500);
          assert.equal(
            await link.evaluate((element) =>
              element === element.ownerDocument.activeElement
            ),
            true,
            "the focused link was replaced",
          );
          await link.blur();
          await page.locator("#live-stamp", { hasNotText: before! })
            .waitFor();
        },
      );

      await t.step(
        "the workers page changes when a worker joins and leaves",
        async () => {
          await page.goto(`${base}/workers`);
          const card = page.locator(`[data-worker="aarch64-new"]`);
          assert.equal(await card.count(), 0);
          await store.upsertWorker({
            name: "aarch64-new",
            address: "10.0.0.42",
            machine: "arm-box.example.org",
            systems: ["aarch64-linux"],
            lastSeen: epochSeconds(systemClock),
            timeoutSeconds: 120,
          });
          await card.waitFor({ state: "visible" });
          assert.match(await card.innerText(), /arm-box\.example\.org/);
          assert.match(await card.innerText(), /idle/);
          await store.removeWorker("aarch64-new", epochSeconds(systemClock));
          await card.waitFor({ state: "detached" });
          assert.equal(await page.locator("[data-worker]").count(), 2);
        },
      );
    } finally {
      await chromium.close();
      await server.shutdown();
      await store.close();
      await Deno.remove(logDir, { recursive: true });
    }
  },
});
