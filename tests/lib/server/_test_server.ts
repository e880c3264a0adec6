// A whole remote-mode server on loopback, with a SQLite store and a fake
// guix, for the tests of lib/server/server.ts and of what it wires up.

import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import {
  type RunningServer,
  type ServerConfig,
  startServer,
} from "../../../lib/server/server.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger, type Logger, silentLogger } from "../../../lib/log.ts";
import type { Clock } from "../../../lib/clock.ts";
import type { Store } from "../../../lib/store/types.ts";
import { fakeSpawner, STORE_DIR } from "./_dispatch_fixture.ts";

export interface TestServer {
  server: RunningServer;
  store: Store;
  root: string;
  lines: string[];
  web: string;
  /** Stops the server; removes its files unless `keepFiles`. */
  close(keepFiles?: boolean): Promise<void>;
}

/**
 * The configuration of a remote-mode server on loopback (ports chosen by
 * the system, no guix publish), its files below `root`, `extra` applied:
 * every test server starts from it, so that none listens beyond loopback.
 */
export function testServerConfig(
  root: string,
  extra: Partial<ServerConfig> = {},
): ServerConfig {
  return {
    mode: "remote",
    pollChannels: false,
    listen: "127.0.0.1",
    backendPort: 0,
    logPort: 0,
    publishPort: null,
    webListen: "127.0.0.1",
    webPort: 0,
    cacheDir: `${root}/logs`,
    stateDir: `${root}/state`,
    storeDir: STORE_DIR,
    workerTimeoutSeconds: 120,
    publishArgs: [],
    ...extra,
  };
}

/** A logger of info lines and above, without timestamps, kept in `lines`. */
export function linesLogger(lines: string[]): Logger {
  return createLogger({
    level: "info",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
}

/** A remote-mode server; a second one may reuse a stopped one's `root`. */
export async function startTestServer(
  reuse: { root?: string; clock?: Clock; config?: Partial<ServerConfig> } = {},
): Promise<TestServer> {
  const root = reuse.root ??
    await Deno.makeTempDir({ prefix: "lorica-server-" });
  const store = openSqliteStore(`${root}/db.sqlite`);
  const lines: string[] = [];
  const server = await startServer(
    testServerConfig(root, { fetchRetryDelayMs: 50, ...reuse.config }),
    {
      store,
      guix: new Guix({ logger: silentLogger, spawn: fakeSpawner() }),
      logger: linesLogger(lines),
      clock: reuse.clock,
      // The derivations of these builds exist only in the database.
      inStore: () => Promise.resolve(true),
    },
  );
  await store.upsertSpecification({
    name: "spec",
    build: { type: "packages", params: [] },
    channels: [],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 5,
    systems: ["x86_64-linux"],
    isActive: true,
  });
  return {
    server,
    store,
    root,
    lines,
    web: `http://127.0.0.1:${server.webPort}`,
    async close(keepFiles = false) {
      await server.stop();
      await store.close();
      if (!keepFiles) await Deno.remove(root, { recursive: true });
    },
  };
}
