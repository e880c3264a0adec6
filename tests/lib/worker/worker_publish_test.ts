// The worker process as a whole, with the fake guix's publish server and a
// real dispatcher: no work without a publish server.

import assert from "node:assert/strict";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { PublishStartError } from "../../../lib/guix/publish_server.ts";
import { createLogger } from "../../../lib/log.ts";
import { type RunningWorker, startWorker } from "../../../lib/worker/worker.ts";
import { type DaemonEnv, GUIX } from "../../fake-guix/test_env.ts";
import {
  eventually,
  type Fixture,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import { closing, workerConfig } from "./_session_helpers.ts";
import {
  heldPort,
  publishPid,
  signingDaemon,
  startError,
} from "../server/_publish_fixture.ts";

/**
 * Starts a worker of one session against the fixture `f` on the fake guix
 * of `daemon`, publishing on `publishPort`, logging to `lines`.
 */
function startPublishingWorker(
  f: Fixture,
  daemon: DaemonEnv,
  publishPort: number,
  lines: string[],
): Promise<RunningWorker> {
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  return startWorker(
    workerConfig(f.port, { publishPort, requestPeriodMs: 20 }),
    { guix: new Guix({ command: GUIX, env: daemon.env, logger }), logger },
  );
}

Deno.test({
  name:
    "startWorker() fails naming the port, before asking for work, when its publish port is in use",
  async fn() {
    using held = heldPort();
    await using f = closing(await startFixture());
    await using farm = await signingDaemon("worker");
    const lines: string[] = [];
    const error = await startError(
      startPublishingWorker(f, farm.daemon, held.port, lines),
    );
    assert.ok(error instanceof PublishStartError, String(error));
    assert.match(
      error.message,
      new RegExp(
        `^Cannot start guix publish on the publish port 127\\.0\\.0\\.1:${held.port}: exit code 1: .*Address already in use`,
      ),
    );
    assert.ok(!f.lines.some((line) => line.includes("worker-ready")));
  },
});

Deno.test({
  name:
    "a worker whose guix publish dies logs an error and asks for no more work",
  async fn() {
    await using f = closing(await startFixture());
    await using farm = await signingDaemon("worker");
    const lines: string[] = [];
    const requests = () =>
      f.lines.filter((line) =>
        line.startsWith("debug message received ") &&
        line.includes(" type=worker-request-work")
      ).length;
    let worker: RunningWorker | null = await startPublishingWorker(
      f,
      farm.daemon,
      0,
      lines,
    );
    try {
      await eventually(() => requests() >= 2, "work requests");
      const pid = publishPid(lines);
      assert.ok(pid > 0, lines.join("\n"));
      Deno.kill(pid, "SIGKILL");

      const error = await within(worker.failed, 30_000, "failure");
      const seen = requests();
      assert.match(
        error.message,
        /^Cannot publish on the publish port 127\.0\.0\.1:0: guix publish was killed by SIGKILL/,
      );
      assert.ok(
        lines.some((line) =>
          line.startsWith(
            'error worker stopping reason="guix publish exited" error=',
          )
        ),
        lines.join("\n"),
      );
      // Already draining: the session ends without waiting for the drain
      // time, having sent at most the request that was under way.
      await within(
        worker.stop({ drain: true, drainMs: 600_000 }),
        30_000,
        "drained stop",
      );
      worker = null;
      assert.ok(requests() <= seen + 1, `${requests()} > ${seen} + 1`);
      assert.ok(
        lines.some((line) => line.startsWith("info session drained ")),
        lines.join("\n"),
      );
    } finally {
      await worker?.stop();
    }
  },
});
