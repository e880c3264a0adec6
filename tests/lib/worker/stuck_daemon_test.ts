// A worker session on the fake guix against a real dispatcher over
// loopback, whose guix build ends for the farm's reasons, not the
// package's: its daemon hangs once the build starts (the session gives the
// daemon up), or a signal the worker did not send kills it (a service
// manager signalling the whole process group at a stop, the OOM killer).
// Either way the build's outcome is unknown, and the build is handed back.

import assert from "node:assert/strict";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger } from "../../../lib/log.ts";
import { spawnProcess } from "../../../lib/process.ts";
import { readSexp } from "../../../lib/sexp/read.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  runSession,
  type SessionOptions,
} from "../../../lib/worker/session.ts";
import type { ScenarioPackage } from "../../fake-guix/evaluate.ts";
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
  type Fixture,
  job,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import { processExists as alive } from "../../_processes.ts";
import { sessionOptions } from "./_session_helpers.ts";

/** What a test of this file is given. */
interface Farm {
  f: Fixture;
  /** The derivation of the scenario's one package. */
  drv: string;
  /** Starts a session named `name`; `running` ends once `abort` aborts. */
  session(
    name: string,
    extra?: Partial<SessionOptions>,
  ): { running: Promise<void>; abort: AbortController };
  /** The pids of the guix processes the sessions started. */
  pids: number[];
  lines: string[];
}

/**
 * Runs `test` on a dispatcher and a fake guix building `pkg`, the one job
 * of the fixture's evaluation; stops everything after.
 */
async function withFarm(
  pkg: ScenarioPackage,
  test: (farm: Farm) => Promise<void>,
): Promise<void> {
  const root = await makeRoot();
  const daemon = await makeDaemon(root, "worker", {
    FAKE_GUIX_SCENARIO: await writeScenario(root, { packages: [pkg] }),
  });
  const f = await startFixture({ storeDir: daemon.storeDir });
  const aborts: AbortController[] = [];
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
    const [line] = run.stdout.trimEnd().split("\n");
    const fields = readSexp(line) as [unknown, ...[unknown, string][]];
    const drv = fields[2][1];
    const session = (name: string, extra: Partial<SessionOptions> = {}) => {
      const abort = new AbortController();
      aborts.push(abort);
      const running = runSession(
        sessionOptions(f.port, name, lines, {
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
          logger,
          // A request period of 3 s, the jitter at its least: the session
          // asks again 1.5 s after handing the build back.
          requestPeriodMs: 3000,
          random: () => 0,
          pingIntervalMs: 200,
          replyTimeoutMs: 5000,
          ...extra,
        }),
        abort.signal,
      );
      return { running, abort };
    };
    await test({ f, drv, session, pids, lines });
  } finally {
    for (const abort of aborts) abort.abort();
    for (const pid of pids) if (alive(pid)) Deno.kill(pid, "SIGKILL");
    await f.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** Whether `drv` is back in the queue, held by no worker. */
async function requeued(f: Fixture, drv: string): Promise<boolean> {
  const build = await f.store.getBuildByDerivation(drv);
  return build?.status === BuildStatus.scheduled && build.worker === null;
}

Deno.test({
  name:
    "a worker whose guix-daemon hangs kills guix build, logs daemon silent and hands the build back to the Lorica server",
  fn: () =>
    withFarm({
      name: "stuck",
      version: "1",
      behaviour: { seconds: 0, daemonHangs: true },
    }, async ({ f, drv, session, pids, lines }) => {
      await f.addJobs([{ ...job("stuck", 1), derivation: drv, maxSilent: 1 }]);
      const { running, abort } = session("STUCK001", {
        daemonSilenceGraceSeconds: 0.5,
      });
      await eventually(
        () => lines.some((l) => l.startsWith("error daemon silent ")),
        "daemon silent",
      );
      await eventually(() => requeued(f, drv), "build requeued, no worker");
      assert.equal(pids.length, 1);
      assert.equal(alive(pids[0]), false, "guix build is gone");
      assert.match(
        lines.find((l) => l.startsWith("error daemon silent "))!,
        / seconds=\d+ drv=\S+ max_silent=1 action="guix build killed, build handed back"$/,
      );
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn build requeued") && l.includes(drv) &&
          l.includes("worker=STUCK001")
        ),
        f.lines.join("\n"),
      );

      // The next request gets the build again, on the same stuck daemon.
      await eventually(() => pids.length === 2, "asked for work again");
      abort.abort();
      await within(running, 10_000, "session end");
      await eventually(() => !alive(pids[1]), "second guix build gone");
    }),
});

Deno.test({
  name:
    "a worker whose guix build a signal it did not send kills hands the build back to the Lorica server the first time, and reports it failed the next",
  fn: () =>
    withFarm(
      { name: "long", version: "1", behaviour: { seconds: 60 } },
      async ({ f, drv, session, pids, lines }) => {
        await f.addJobs([{ ...job("long", 1), derivation: drv }]);
        const { running, abort } = session("KILLED01");
        const started = async () =>
          (await f.status(drv)) === BuildStatus.started;
        await eventually(started, "build started");
        Deno.kill(pids[0], "SIGTERM");
        await eventually(() => requeued(f, drv), "build handed back");
        const said = (prefix: string, end: string) =>
          lines.some((l) =>
            l.startsWith(`${prefix} worker=KILLED01 drv=${drv} `) &&
            l.includes(end)
          );
        assert.ok(
          said("warn guix build killed", " signal=SIGTERM "),
          lines.join("\n"),
        );
        assert.ok(
          said("warn build interrupted", ' action="handed back"'),
          lines.join("\n"),
        );
        assert.ok(
          !lines.some((l) => l.startsWith("info build failed locally")),
        );

        // Handed to this worker again and killed again: reported failed,
        // so that a worker whose guix build is always killed cannot keep
        // the build from every other worker.
        await eventually(() => pids.length === 2, "asked for work again");
        await eventually(started, "build started again");
        Deno.kill(pids[1], "SIGTERM");
        await eventually(
          async () => (await f.status(drv)) === BuildStatus.failed,
          "build reported failed",
        );
        assert.ok(
          said("warn build interrupted", ' action="reported failed"'),
          lines.join("\n"),
        );
        abort.abort();
        await within(running, 10_000, "session end");
      },
    ),
});
