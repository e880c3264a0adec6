// A worker session on the fake guix against a real dispatcher over
// loopback, whose guix build is killed by a signal the worker did not send
// (a service manager signalling the whole process group at a stop, the OOM
// killer): the build's outcome is unknown, not the package's failure.

import assert from "node:assert/strict";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger } from "../../../lib/log.ts";
import { spawnProcess } from "../../../lib/process.ts";
import { readSexp } from "../../../lib/sexp/read.ts";
import { systemClock } from "../../../lib/clock.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { runSession } from "../../../lib/worker/session.ts";
import {
  evaluate,
  GUIX,
  makeDaemon,
  makeRoot,
  writeChannels,
  writeScenario,
} from "../../fake-guix/test_env.ts";
import {
  eventually,
  job,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import { processExists as alive } from "../../_processes.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  ...opts,
  name:
    "a worker whose guix build a signal it did not send kills hands the build back to the Lorica server the first time, and reports it failed the next",
  async fn() {
    const root = await makeRoot();
    const daemon = await makeDaemon(root, "worker", {
      FAKE_GUIX_SCENARIO: await writeScenario(root, {
        packages: [{ name: "long", version: "1", behaviour: { seconds: 60 } }],
      }),
    });
    const f = await startFixture({ storeDir: daemon.storeDir });
    const abort = new AbortController();
    const pids: number[] = [];
    const lines: string[] = [];
    const logger = createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    });
    try {
      const run = await evaluate(
        daemon,
        await writeChannels(daemon.root),
        "all",
        "x86_64-linux",
      );
      assert.equal(run.code, 0, run.stderr);
      const fields = readSexp(run.stdout.trimEnd().split("\n")[0]) as [
        unknown,
        ...[unknown, string][],
      ];
      const drv = fields[2][1];
      await f.addJobs([{ ...job("long", 1), derivation: drv }]);
      const running = runSession({
        server: { hostname: "127.0.0.1", port: f.port },
        name: "KILLED01",
        machine: "test",
        systems: ["x86_64-linux"],
        publishPort: 5558,
        substituteUrls: [],
        storeDir: daemon.storeDir,
        guix: new Guix({
          command: GUIX,
          env: daemon.env,
          logger,
          spawn: (argv, options) => {
            const child = spawnProcess(argv, options);
            pids.push(child.pid);
            return child;
          },
        }),
        clock: systemClock,
        logger,
        // The session asks again 1.5 s after handing the build back.
        requestPeriodMs: 3000,
        random: () => 0,
        pingIntervalMs: 200,
        replyTimeoutMs: 5000,
      }, abort.signal);

      const started = async () =>
        (await f.store.getBuildByDerivation(drv))?.status ===
          BuildStatus.started;
      await eventually(started, "build started");
      Deno.kill(pids[0], "SIGTERM");
      await eventually(async () => {
        const build = await f.store.getBuildByDerivation(drv);
        return build?.status === BuildStatus.scheduled && build.worker === null;
      }, "build handed back");
      assert.ok(
        lines.some((l) =>
          l.startsWith(`warn guix build killed worker=KILLED01 drv=${drv} `) &&
          l.includes(" signal=SIGTERM ")
        ),
        lines.join("\n"),
      );
      assert.ok(
        lines.some((l) =>
          l.startsWith(`warn build interrupted worker=KILLED01 drv=${drv} `) &&
          l.endsWith(' action="handed back"')
        ),
        lines.join("\n"),
      );
      assert.ok(!lines.some((l) => l.startsWith("info build failed locally")));

      // Handed to this worker again and killed again: reported failed, so
      // that a worker whose guix build is always killed cannot keep the
      // build from every other worker.
      await eventually(() => pids.length === 2, "asked for work again");
      await eventually(started, "build started again");
      Deno.kill(pids[1], "SIGTERM");
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.failed,
        "build reported failed",
      );
      assert.ok(
        lines.some((l) =>
          l.startsWith(`warn build interrupted worker=KILLED01 drv=${drv} `) &&
          l.endsWith(' action="reported failed"')
        ),
        lines.join("\n"),
      );
      abort.abort();
      await within(running, 10_000, "session end");
      for (const pid of pids) assert.equal(alive(pid), false);
    } finally {
      abort.abort();
      for (const pid of pids) if (alive(pid)) Deno.kill(pid, "SIGKILL");
      await f.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
