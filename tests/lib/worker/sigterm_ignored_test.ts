// A worker on the fake guix whose build ignores SIGTERM (a hung daemon
// client, a builder trapping signals), against a real dispatcher over
// loopback: whatever ends the build (a cancel, the daemon watchdog, a stop
// without drain), guix build gets SIGKILL once its grace is over, and the
// worker goes on.

import assert from "node:assert/strict";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import { type Spawner, spawnProcess } from "../../../lib/process.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import type { SessionOptions } from "../../../lib/worker/session.ts";
import { startWorker } from "../../../lib/worker/worker.ts";
import {
  type DaemonEnv,
  evaluatedDerivations,
  GUIX,
  makeRoot,
  makeSigningDaemon,
  writeScenario,
} from "../../fake-guix/test_env.ts";
import type { ScenarioPackage } from "../../fake-guix/evaluate.ts";
import { catchesSigterm, processExists as alive } from "../../_processes.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import {
  runningSession,
  sessionOptions,
  workerConfig,
} from "./_session_helpers.ts";

/** The grace the tests give guix between SIGTERM and SIGKILL. */
const GRACE_MS = 300;

/** A build that runs for an hour and ignores SIGTERM. */
const DEAF: ScenarioPackage = {
  name: "deaf",
  version: "1",
  behaviour: { seconds: 3600, logLines: 1, ignoresSigterm: true },
};

/** The `guix build` processes a test started, by derivation. */
interface Builds {
  pids: Map<string, number[]>;
  spawn: Spawner;
}

function recordingSpawner(): Builds {
  const pids = new Map<string, number[]>();
  return {
    pids,
    spawn(argv, options) {
      const child = spawnProcess(argv, options);
      if (argv[1] === "build") {
        const drv = argv[argv.length - 1];
        pids.set(drv, [...pids.get(drv) ?? [], child.pid]);
      }
      return child;
    },
  };
}

/** A guix on `daemon` with the short grace, its spawns recorded. */
function fakeGuix(daemon: DaemonEnv, builds: Builds, logger: Logger): Guix {
  return new Guix({
    command: GUIX,
    env: daemon.env,
    logger,
    spawn: builds.spawn,
    killGraceMs: GRACE_MS,
  });
}

/** The one `guix build` of `drv`, once it ignores SIGTERM. */
async function deafBuild(builds: Builds, drv: string): Promise<number> {
  await eventually(
    () => catchesSigterm(builds.pids.get(drv)?.[0] ?? 0),
    "guix build ignoring SIGTERM",
  );
  return builds.pids.get(drv)![0];
}

/** A dispatcher and a fake daemon playing `packages`; all removed after. */
async function withFarm(
  packages: ScenarioPackage[],
  body: (f: Fixture, daemon: DaemonEnv, drvs: Map<string, string>) => Promise<
    void
  >,
  workerKeys?: Map<string, string>,
) {
  const root = await makeRoot();
  try {
    const daemon = await makeSigningDaemon(root, "worker", {
      FAKE_GUIX_SCENARIO: await writeScenario(root, { packages }),
    });
    // The server's store is the daemon's, where its derivations are.
    const f = await startFixture({ storeDir: daemon.storeDir, workerKeys });
    try {
      await body(f, daemon, await evaluatedDerivations(daemon));
    } finally {
      await f.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Ends every process of `builds` left running by a failed test. */
function killLeftovers(builds: Builds) {
  for (const pid of [...builds.pids.values()].flat()) {
    if (alive(pid)) Deno.kill(pid, "SIGKILL");
  }
}

/** A whole worker of one session for `f`, its guix builds in `builds`. */
function startTestWorker(
  f: Fixture,
  daemon: DaemonEnv,
  builds: Builds,
  logger: Logger,
  authKey?: { id: string; secret: string },
) {
  return startWorker(
    workerConfig(f.port, { storeDir: daemon.storeDir, authKey }),
    { guix: fakeGuix(daemon, builds, logger), logger },
  );
}

/**
 * A session for `f` on the fake guix of `daemon`, its guix builds recorded
 * in `builds`, logging to `lines`; `extra` names it and sets its request
 * timing. `stop()` aborts it and returns its end; leaving the `await using`
 * scope that holds it also kills the guix builds a failed test left, then
 * awaits the session's end.
 */
function runTestSession(
  f: Fixture,
  daemon: DaemonEnv,
  builds: Builds,
  lines: string[],
  extra: Partial<SessionOptions> & { name: string },
) {
  const logger = sessionLogger(lines);
  const session = runningSession(
    sessionOptions(f.port, extra.name, lines, {
      storeDir: daemon.storeDir,
      guix: fakeGuix(daemon, builds, logger),
      logger,
      pingIntervalMs: 200,
      replyTimeoutMs: 5000,
      ...extra,
    }),
  );
  return {
    stop: session.stop,
    async [Symbol.asyncDispose]() {
      const ending = session.stop();
      killLeftovers(builds);
      await ending;
    },
  };
}

function sessionLogger(lines: string[]): Logger {
  return createLogger({ timestamps: false, sink: (line) => lines.push(line) });
}

/** The line saying SIGTERM was not enough for `pid`. */
function killedLine(lines: string[], pid: number): string | undefined {
  return lines.find((line) =>
    line.startsWith(`warn process killed pid=${pid} signal=SIGKILL grace=0.3`)
  );
}

Deno.test({
  name:
    "a canceled build whose guix build ignores SIGTERM is killed after the grace, and the session takes the next build",
  fn: () =>
    withFarm(
      [DEAF, { name: "next", version: "1" }],
      async (f, daemon, drvs) => {
        const builds = recordingSpawner();
        const lines: string[] = [];
        await using session = runTestSession(f, daemon, builds, lines, {
          name: "DEAFCAN1",
          requestPeriodMs: 100,
        });
        const deaf = drvs.get("deaf")!;
        await f.addJobs([{ ...job("deaf", 1), derivation: deaf }]);
        const pid = await deafBuild(builds, deaf);
        const id = (await f.store.getBuildByDerivation(deaf))!.id;
        await f.dispatcher.cancelBuild(id);
        await eventually(() => !alive(pid), "guix build gone");
        assert.ok(killedLine(lines, pid), lines.join("\n"));
        assert.equal(await f.status(deaf), BuildStatus.canceled);

        const next = drvs.get("next")!;
        await f.addJobs([{ ...job("next", 2), derivation: next }]);
        await eventually(
          async () => (await f.status(next)) === BuildStatus.succeeded,
          "next build done",
        );
        await within(session.stop(), 10_000, "session end");
      },
    ),
});

Deno.test({
  name:
    "a silent daemon whose guix build ignores SIGTERM: guix build is killed after the grace and the build handed back",
  fn: () =>
    withFarm([{
      ...DEAF,
      behaviour: { seconds: 0, daemonHangs: true, ignoresSigterm: true },
    }], async (f, daemon, drvs) => {
      const builds = recordingSpawner();
      const lines: string[] = [];
      const deaf = drvs.get("deaf")!;
      await f.addJobs([{ ...job("deaf", 1), derivation: deaf, maxSilent: 1 }]);
      await using session = runTestSession(f, daemon, builds, lines, {
        name: "DEAFSIL1",
        // Asks again 1.5 s after handing the build back (see
        // stuck_daemon_test.ts).
        requestPeriodMs: 3000,
        random: () => 0,
        daemonSilenceGraceSeconds: 0.5,
      });
      const pid = await deafBuild(builds, deaf);
      await eventually(() => !alive(pid), "guix build gone");
      assert.ok(killedLine(lines, pid), lines.join("\n"));
      await eventually(async () => {
        const build = await f.store.getBuildByDerivation(deaf);
        return build?.status === BuildStatus.scheduled &&
          build.worker === null;
      }, "build requeued with no worker");
      assert.ok(lines.some((l) => l.startsWith("error daemon silent ")));

      // The session goes on: it takes the build again.
      await eventually(
        () => builds.pids.get(deaf)?.length === 2,
        "asked for work again",
      );
      await within(session.stop(), 10_000, "session end");
    }),
});

Deno.test({
  name:
    "a worker stopped without drain kills a guix build that ignores SIGTERM after the grace, and stops",
  fn: () =>
    withFarm([DEAF], async (f, daemon, drvs) => {
      const builds = recordingSpawner();
      const lines: string[] = [];
      const logger = sessionLogger(lines);
      const worker = await startTestWorker(f, daemon, builds, logger);
      let stopped = false;
      try {
        const deaf = drvs.get("deaf")!;
        await f.addJobs([{ ...job("deaf", 1), derivation: deaf }]);
        const pid = await deafBuild(builds, deaf);
        await within(worker.stop(), 10_000, "worker stop");
        stopped = true;
        assert.equal(alive(pid), false, "guix build is gone");
        assert.ok(killedLine(lines, pid), lines.join("\n"));
        assert.ok(lines.includes("info worker stopped"), lines.join("\n"));
      } finally {
        killLeftovers(builds);
        if (!stopped) await worker.stop();
      }
    }),
});

const SECRET = "shared-secret-of-the-farm";

// Keyed: the registration said again to hand the build back carries the
// proof that registered the worker, whose nonce that registration spent.
for (const [drain, keyed] of [[false, false], [true, false], [false, true]]) {
  Deno.test({
    name: `C07: a ${keyed ? "keyed " : ""}worker stopped ${
      drain ? "once its drain timed out" : "without drain"
    } hands the build it killed back: the server requeues it at once, not after the worker timeout`,
    fn: () =>
      withFarm([DEAF], async (f, daemon, drvs) => {
        const builds = recordingSpawner();
        const lines: string[] = [];
        const logger = sessionLogger(lines);
        const worker = await startTestWorker(
          f,
          daemon,
          builds,
          logger,
          keyed ? { id: "farm", secret: SECRET } : undefined,
        );
        let stopped = false;
        try {
          const deaf = drvs.get("deaf")!;
          await f.addJobs([{ ...job("deaf", 1), derivation: deaf }]);
          await deafBuild(builds, deaf);
          const given = await f.store.getBuildByDerivation(deaf);
          assert.ok(given?.worker, "the build is the worker's");
          assert.ok(given.status < 0, `status ${given.status}`);
          await within(
            worker.stop(drain ? { drain: true, drainMs: 200 } : {}),
            10_000,
            "worker stop",
          );
          stopped = true;
          // The dispatcher's worker timeout is minutes away: only the
          // worker's word can requeue the build this soon.
          await eventually(async () => {
            const build = await f.store.getBuildByDerivation(deaf);
            return build?.status === BuildStatus.scheduled &&
              build.worker === null;
          }, "build requeued with no worker");
          assert.ok(
            lines.some((l) => l.startsWith("warn build handed back ")),
            lines.join("\n"),
          );
          assert.deepEqual(
            f.lines.filter((l) => l.startsWith("warn worker refused")),
            [],
          );
        } finally {
          killLeftovers(builds);
          if (!stopped) await worker.stop();
        }
      }, keyed ? new Map([["farm", SECRET]]) : undefined),
  });
}
