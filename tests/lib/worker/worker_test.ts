import assert from "node:assert/strict";
import { startWorker, type WorkerConfig } from "../../../lib/worker/worker.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { bindAgain, quietPort } from "../../_ports.ts";
import {
  buildRequest,
  GOOD_DRV,
  handingOutServer,
} from "./_handing_out_server.ts";
import {
  eventually,
  fakeSpawner,
  job,
  settlesWithin,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { ResultTurnFailure } from "./_failing_result_turns.ts";
import { scriptedLogServer } from "../protocol/_scripted_log_server.ts";
import { lingeringChild, PUBLISH_SAYS } from "./_lingering_child.ts";
import {
  closing,
  stopping,
  untilStatus,
  watchedResultTurns,
  workerConfig,
} from "./_session_helpers.ts";

/**
 * A spawner whose children (`guix publish`, `guix build`) run until killed;
 * `argvs` records what was started.
 */
function lingeringSpawner(argvs: string[][]): Spawner {
  return (argv, options) => {
    argvs.push(argv);
    return lingeringChild(
      options,
      argv.includes("publish") ? PUBLISH_SAYS : undefined,
    );
  };
}

/**
 * A spawner whose `guix build` succeeds at once, while its other children
 * (`guix publish`) run until killed; `argvs` records what was started.
 */
function quickBuildSpawner(argvs: string[][]): Spawner {
  const building = fakeSpawner(undefined, argvs);
  const lingering = lingeringSpawner(argvs);
  return (argv, options) =>
    argv.includes("build") ? building(argv, options) : lingering(argv, options);
}

/**
 * A worker of two sessions against `port`; its log lines go to `lines`, and
 * its children are those of `spawner(argvs)` (by default they run until
 * killed). Leaving the `await using` scope that holds it stops it.
 */
async function startTestWorker(
  port: number,
  extra: Partial<WorkerConfig> = {},
  spawner: (argvs: string[][]) => Spawner = lingeringSpawner,
) {
  const lines: string[] = [];
  const argvs: string[][] = [];
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const worker = await startWorker(
    workerConfig(port, {
      workers: 2,
      // Far longer than the tests: only a stop can end these waits.
      requestPeriodMs: 60_000,
      replyTimeoutMs: 60_000,
      storeDir: "/gnu/store",
      ...extra,
    }),
    {
      guix: new Guix({ logger, spawn: spawner(argvs) }),
      logger,
      freeBytes: () => Promise.resolve(1024 ** 4),
    },
  );
  return Object.assign(stopping(worker), { lines, argvs });
}

Deno.test({
  name:
    "a worker whose server is unreachable stops at once on a draining stop, and says so once",
  async fn() {
    await using worker = await startTestWorker(quietPort());
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopping = worker.stop({ drain: true, drainMs: 240_000 });
    assert.ok(
      await settlesWithin(stopping, 3000),
      "still draining 3 s after the stop, with no build under way",
    );
    // What a second SIGTERM does: nothing more to stop.
    await worker.stop();
    assert.deepEqual(
      worker.lines.filter((l) => /^info worker (draining|stopped)/.test(l)),
      ["info worker draining timeout=240", "info worker stopped"],
    );
  },
});

Deno.test({
  name:
    "a worker of three sessions whose server is away says so once, not once a session, and once that it is back",
  async fn() {
    const port = quietPort();
    await using worker = await startTestWorker(port, { workers: 3 });
    const { lines } = worker;
    const away = () =>
      lines.filter((l) => l.startsWith("warn server unreachable "));
    await eventually(() => away().length > 0, "the server said away");
    // Each session's socket tries again every few hundred ms by now.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(away().length, 1, lines.join("\n"));
    assert.match(
      away()[0],
      new RegExp(
        `^warn server unreachable server=127\\.0\\.0\\.1:${port} silent=\\d+ error=`,
      ),
    );
    await using _f = closing(
      await bindAgain(() => startFixture({ port, logPort: quietPort() })),
    );
    const back = () =>
      lines.filter((l) => l.startsWith("info server reachable again "));
    // Each socket's next attempt may be seconds away, after its back-off.
    for (let i = 0; i < 150; i++) {
      if (lines.filter((l) => / worker registered /.test(l)).length === 3) {
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(
      lines.filter((l) => / worker registered /.test(l)).length,
      3,
      `every session registered\n${lines.join("\n")}`,
    );
    assert.equal(back().length, 1, lines.join("\n"));
    assert.equal(away().length, 1, lines.join("\n"));
  },
});

Deno.test({
  name:
    "a stop without drain cuts a drain short: the build is abandoned, and the worker stops once",
  async fn() {
    await using f = closing(await startFixture({ logPort: quietPort() }));
    await using worker = await startTestWorker(f.port, { workers: 1 });
    const { lines, argvs } = worker;
    const [drv] = await f.addJobs([job("long", 1)]);
    await untilStatus(f, drv, BuildStatus.started, "build started");
    const draining = worker.stop({ drain: true, drainMs: 240_000 });
    assert.equal(await settlesWithin(draining, 300), false, "drain waits");
    const forced = worker.stop({ signal: "SIGTERM" });
    assert.ok(await settlesWithin(forced, 3000), "the second stop is quick");
    assert.ok(await settlesWithin(draining, 100), "and ends the first");
    assert.equal(
      lines.filter((l) => l.startsWith("info worker stopped")).length,
      1,
    );
    // The build it abandons is said, not only its guix build's kill.
    assert.deepEqual(
      lines.filter((l) => / (stop without drain|drain timeout)/.test(l)),
      ["warn stop without drain signal=SIGTERM builds=1"],
    );
    assert.ok(argvs.some((argv) => argv.includes(drv)));
  },
});

Deno.test({
  name:
    "a drain whose timeout expires says so, with the builds it abandons, and the worker stops",
  async fn() {
    await using f = closing(await startFixture({ logPort: quietPort() }));
    await using worker = await startTestWorker(f.port, { workers: 1 });
    const { lines } = worker;
    const [drv] = await f.addJobs([job("long", 1)]);
    await untilStatus(f, drv, BuildStatus.started, "build started");
    const draining = worker.stop({ drain: true, drainMs: 500 });
    assert.ok(await settlesWithin(draining, 5000), "the drain ends");
    assert.deepEqual(
      lines.filter((l) => / (stop without drain|drain timeout)/.test(l)),
      ["warn drain timeout over builds=1 timeout=0.5 grace=30"],
    );
    assert.equal(
      lines.filter((l) => l.startsWith("info worker stopped")).length,
      1,
    );
    // A later stop, the drain over, has nothing to cut short.
    await worker.stop({ signal: "SIGTERM" });
    assert.ok(!lines.some((l) => l.includes("stop without drain")));
  },
});

Deno.test({
  name:
    "a drain whose timeout and grace expire while a result awaits its ack names that result as it stops",
  async fn() {
    // Every turn carrying a result fails: no ack ever comes.
    const failure = new ResultTurnFailure(Infinity);
    await using f = closing(
      await startFixture(watchedResultTurns(failure.watch, failure.failing)),
    );
    await using worker = await startTestWorker(
      f.port,
      { workers: 1 },
      quickBuildSpawner,
    );
    const [drv] = await f.addJobs([job("unacknowledged", 1)]);
    await eventually(() => failure.failed === 1, "the result's turn failed");
    const draining = worker.stop({
      drain: true,
      drainMs: 500,
      graceMs: 300,
    });
    assert.ok(await settlesWithin(draining, 5000), "the drain ends");
    assert.deepEqual(
      worker.lines.filter((l) =>
        / (drain timeout|drain grace|results unacknowledged)/.test(l)
      ),
      [
        "warn drain timeout over builds=0 timeout=0.5 grace=0.3",
        "warn drain grace over grace=0.3",
        `warn results unacknowledged drvs=${drv} reason="the worker stopped before the server acknowledged them"`,
      ],
    );
    assert.equal(await f.status(drv), BuildStatus.started);
  },
});

Deno.test({
  name:
    "a drain whose timeout expires while a finished build's log is still being sent reports that build: recorded as succeeded, never handed back nor requeued",
  async fn() {
    // A log server that never says it stored a log: the worker sends the
    // log again, pausing between tries, its build long over.
    const logs = scriptedLogServer(["", "", "", ""]);
    try {
      await using f = closing(await startFixture({ logPort: logs.port }));
      await using worker = await startTestWorker(
        f.port,
        { workers: 1 },
        quickBuildSpawner,
      );
      const { lines, argvs } = worker;
      const [drv] = await f.addJobs([job("log-unacknowledged", 1)]);
      await eventually(
        () => lines.some((l) => l.startsWith("warn log resend retried")),
        `the log sent again\n${lines.join("\n")}`,
      );
      const draining = worker.stop({ drain: true, drainMs: 300 });
      assert.ok(await settlesWithin(draining, 5000), "the drain ends");
      await untilStatus(
        f,
        drv,
        BuildStatus.succeeded,
        `build recorded as succeeded\nserver:\n${
          f.lines.join("\n")
        }\nworker:\n${lines.join("\n")}`,
      );
      assert.deepEqual(
        lines.filter((l) => / build (handed back|not handed back)/.test(l)),
        [],
      );
      assert.ok(
        lines.some((l) => l.startsWith(`info build done worker=`)),
        lines.join("\n"),
      );
      assert.deepEqual(
        f.lines.filter((l) => /^(warn|info) build requeued/.test(l)),
        [],
      );
      assert.equal(
        argvs.filter((argv) => argv.includes("build")).length,
        1,
        "built once",
      );
    } finally {
      logs.close();
    }
  },
});

/**
 * A worker of two sessions both building GOOD_DRV, which a server hands out
 * twice (after its restart, say): two builds all the same. Leaving the
 * `await using` scope that holds it stops the worker, then closes the server.
 */
async function buildingOneDrvTwice() {
  await using both = new AsyncDisposableStack();
  const server = both.use(
    closing(await handingOutServer([buildRequest({}), buildRequest({})])),
  );
  const worker = both.use(await startTestWorker(server.port));
  await eventually(
    () => worker.argvs.filter((argv) => argv.includes(GOOD_DRV)).length === 2,
    "both sessions building",
  );
  return Object.assign(both.move(), { worker });
}

Deno.test({
  name:
    "a drain whose timeout expires counts the builds under way, two sessions building one derivation as two",
  async fn() {
    await using building = await buildingOneDrvTwice();
    const { worker } = building;
    await worker.stop({ drain: true, drainMs: 500 });
    assert.deepEqual(
      worker.lines.filter((l) => / (stop without drain|drain timeout)/.test(l)),
      ["warn drain timeout over builds=2 timeout=0.5 grace=30"],
    );
  },
});

Deno.test({
  name:
    "a stop without drain counts the builds it abandons, two sessions building one derivation as two",
  async fn() {
    await using building = await buildingOneDrvTwice();
    const { worker } = building;
    // The drain is cut short: the same stop.
    worker.stop({ drain: true, drainMs: 240_000 });
    await worker.stop({ signal: "SIGTERM" });
    assert.deepEqual(
      worker.lines.filter((l) => / (stop without drain|drain timeout)/.test(l)),
      ["warn stop without drain signal=SIGTERM builds=2"],
    );
  },
});
