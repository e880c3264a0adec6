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
import { type DaemonEnv, GUIX } from "../../fake-guix/test_env.ts";
import {
  heldPort,
  publishPid,
  signingDaemon,
  startError,
} from "./_publish_fixture.ts";
import { testServerConfig } from "./_test_server.ts";

/** Starts a remote-mode server publishing on `publishPort` with `daemon`. */
function startTestServer(
  root: string,
  daemon: DaemonEnv,
  publishPort: number,
  logger: Logger,
) {
  const store = openSqliteStore(`${root}/db.sqlite`);
  const starting = startServer(
    testServerConfig(root, { publishPort, storeDir: daemon.storeDir }),
    {
      store,
      guix: new Guix({ command: GUIX, env: daemon.env, logger }),
      logger,
    },
  );
  return { store, starting };
}

Deno.test({
  name:
    "startServer() fails naming the publish port when guix publish finds it in use",
  async fn() {
    using held = heldPort();
    await using farm = await signingDaemon("server");
    const logger = createLogger({ sink: () => {} });
    const { store, starting } = startTestServer(
      farm.root,
      farm.daemon,
      held.port,
      logger,
    );
    try {
      const error = await startError(starting);
      assert.ok(error instanceof PublishStartError, String(error));
      assert.match(
        error.message,
        new RegExp(
          `^Cannot start guix publish on the publish port 127\\.0\\.0\\.1:${held.port}: exit code 1: .*Address already in use`,
        ),
      );
    } finally {
      await store.close();
    }
  },
});

Deno.test({
  name: "a server whose guix publish dies logs an error and reports it",
  async fn() {
    await using farm = await signingDaemon("server");
    const lines: string[] = [];
    const logger = createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    });
    const { store, starting } = startTestServer(
      farm.root,
      farm.daemon,
      0,
      logger,
    );
    try {
      const server = await starting;
      try {
        const pid = publishPid(lines);
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
  },
});
