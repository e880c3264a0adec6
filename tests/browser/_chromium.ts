// Starts Debian's headless Chromium through playwright-core, or says why it cannot.

import type { BrowserContext } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Why browser tests cannot run here, or null when they can. */
export function chromiumUnavailable(): string | null {
  try {
    const info = Deno.statSync(CHROMIUM);
    if (!info.isFile && !info.isSymlink) return `${CHROMIUM} is not a file`;
  } catch {
    return `${CHROMIUM} is not installed`;
  }
  return null;
}

/** A browser with a fresh profile; `close()` removes the profile. */
export interface Chromium extends AsyncDisposable {
  context: BrowserContext;
  close(): Promise<void>;
}

/**
 * Launches Chromium with a fresh user-data directory.
 * @throws {Error} when playwright-core cannot be loaded or Chromium fails to start.
 */
export async function launchChromium(
  viewport = { width: 1280, height: 860 },
): Promise<Chromium> {
  const { chromium } = await import("playwright-core");
  const profile = await Deno.makeTempDir({ prefix: "lorica-chromium-" });
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport,
      timeout: 60_000,
    });
  } catch (error) {
    await Deno.remove(profile, { recursive: true }).catch(() => {});
    throw error;
  }
  async function close() {
    await context.close().catch(() => {});
    await Deno.remove(profile, { recursive: true }).catch(() => {});
  }
  return { context, close, [Symbol.asyncDispose]: close };
}
