// The server's own guix publish (the fake one): a server that cannot start
// it does not start, and one whose publish dies says so.

import assert from "node:assert/strict";
import { within } from "./_dispatch_fixture.ts";
import { startServer } from "../../../lib/server/server.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import {
  PublishDiedError,
  PublishStartError,
} from "../../../lib/guix/publish_server.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import {
  type DaemonEnv,
  GUIX,
  makeRoot,
  makeSigningDaemon,
} from "../../fake-guix/test_env.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

/** Runs `body` with a fake daemon that has a signing key, under `root`. */
async function withDaemon(
  body: (root: string, daemon: DaemonEnv) => Promise<void>,
) {
  const root = await makeRoot();
  try {
    const daemon = await makeSigningDaemon(root, "server");
    await body(root, daemon);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Starts a remote-mode server publishing on `publishPort` with `daemon`. */
function startTestServer(
  root: string,
  daemon: DaemonEnv,
  publishPort: number,
  logger: Logger,
) {
  const store = openSqliteStore(`${root}/db.sqlite`);
  const starting = startServer({
    mode: "remote",
    pollChannels: false,
    listen: "127.0.0.1",
    backendPort: 0,
    logPort: 0,
    publishPort,
    webListen: "127.0.0.1",
    webPort: 0,
    cacheDir: `${root}/logs`,
    stateDir: `${root}/state`,
    storeDir: daemon.storeDir,
    workerTimeoutSeconds: 120,
    publishArgs: [],
  }, {
    store,
    guix: new Guix({ command: GUIX, env: daemon.env, logger }),
    logger,
  });
  return { store, starting };
}

Deno.test({
  ...opts,
  name:
    "startServer() fails naming the publish port when guix publish finds it in use",
  async fn() {
    const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await withDaemon(async (root, daemon) => {
        const logger = createLogger({ sink: () => {} });
        const { store, starting } = startTestServer(
          root,
          daemon,
          held.addr.port,
          logger,
        );
        try {
          const error = await starting.then(
            async (server) => {
              await server.stop();
              return null;
            },
            (error) => error,
          );
          assert.ok(error instanceof PublishStartError, String(error));
          assert.match(
            error.message,
            new RegExp(
              `^Cannot start guix publish on the publish port 127\\.0\\.0\\.1:${held.addr.port}: exit code 1: .*Address already in use`,
            ),
          );
        } finally {
          await store.close();
        }
      });
    } finally {
      held.close();
    }
  },
});

Deno.test({
  ...opts,
  name: "a server whose guix publish dies logs an error and reports it",
  async fn() {
    await withDaemon(async (root, daemon) => {
      const lines: string[] = [];
      const logger = createLogger({
        timestamps: false,
        sink: (line) => lines.push(line),
      });
      const { store, starting } = startTestServer(root, daemon, 0, logger);
      try {
        const server = await starting;
        try {
          const started = lines.find((line) =>
            line.startsWith("info process started ") &&
            line.includes(" process=publish ")
          );
          const pid = Number(started?.match(/ pid=(\d+)/)?.[1]);
          assert.ok(pid > 0, lines.join("\n"));
          Deno.kill(pid, "SIGKILL");
          const error = await within(server.failed, 30_000, "failure");
          assert.ok(error instanceof PublishDiedError);
          assert.match(error.message, /guix publish was killed by SIGKILL/);
          assert.ok(
            lines.some((line) =>
              line.startsWith(
                'error server stopping reason="guix publish exited" error=',
              )
            ),
            lines.join("\n"),
          );
        } finally {
          await server.stop();
        }
      } finally {
        await store.close();
      }
    });
  },
});
