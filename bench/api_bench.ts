// Latency of the JSON API, through the web app's handler (no sockets).

import { createWebApp } from "../lib/web/app.ts";
import { systemClock } from "../lib/clock.ts";
import { silentLogger } from "../lib/log.ts";
import { percentile } from "./stats.ts";
import type { Store } from "../lib/store/types.ts";

/**
 * Runs `work` with the web app's request handler over `store` (no socket),
 * its log directory a temporary one, removed afterwards.
 */
export async function withWebApp<T>(
  store: Store,
  work: (handle: (request: Request) => Promise<Response>) => Promise<T>,
): Promise<T> {
  const logCacheDir = Deno.makeTempDirSync({ prefix: "lorica-bench-web-" });
  try {
    return await work(createWebApp({
      store,
      logCacheDir,
      storeDir: "/gnu/store",
      clock: systemClock,
      logger: silentLogger,
    }));
  } finally {
    Deno.removeSync(logCacheDir, { recursive: true });
  }
}

/** p50 and p99 in ms of each route, over `samples` requests each. */
export function apiLatencies(
  store: Store,
  maxBuildId: number,
  samples: number,
): Promise<Map<string, { p50: number; p99: number; status: number }>> {
  return withWebApp(store, (handle) => sample(handle, maxBuildId, samples));
}

async function sample(
  handle: (request: Request) => Promise<Response>,
  maxBuildId: number,
  samples: number,
): Promise<Map<string, { p50: number; p99: number; status: number }>> {
  let seed = 12345;
  const nextId = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return 1 + (seed % maxBuildId);
  };
  const routes: [string, () => string][] = [
    ["/api/queue?nr=100", () => "/api/queue?nr=100"],
    ["/api/latestbuilds?nr=100", () => "/api/latestbuilds?nr=100"],
    ["/build/<id>", () => `/build/${nextId()}`],
    // Few builds changed their job's result: without an index of them,
    // the feed read every finished build looking for 100.
    ["/events/rss", () => "/events/rss"],
  ];
  const results = new Map<
    string,
    { p50: number; p99: number; status: number }
  >();
  for (const [label, path] of routes) {
    const times: number[] = [];
    let status = 0;
    for (let i = 0; i < samples + 10; i++) {
      const start = performance.now();
      const response = await handle(
        new Request(`http://127.0.0.1${path()}`, {
          headers: { accept: "application/json" },
        }),
      );
      await response.text();
      status = response.status;
      if (i >= 10) times.push(performance.now() - start);
    }
    results.set(label, {
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      status,
    });
  }
  return results;
}
