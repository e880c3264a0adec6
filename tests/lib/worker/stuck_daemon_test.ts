// A worker session on the fake guix, whose daemon hangs once the build
// starts, against a real dispatcher over loopback: the session gives the
// daemon up and hands the build back.

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

/** The derivation of the scenario's one job, evaluated by `daemon`. */
async function evaluatedDrv(
  daemon: Awaited<ReturnType<typeof makeDaemon>>,
): Promise<string> {
  const run = await evaluate(
    daemon,
    await writeChannels(daemon.root),
    "all",
    "x86_64-linux",
  );
  assert.equal(run.code, 0, run.stderr);
  const [line] = run.stdout.trimEnd().split("\n");
  const fields = readSexp(line) as [unknown, ...[unknown, string][]];
  return fields[2][1];
}

Deno.test({
  ...opts,
  name:
    "a worker whose guix-daemon hangs kills guix build, logs daemon silent and hands the build back to the Lorica server",
  async fn() {
    const root = await makeRoot();
    const daemon = await makeDaemon(root, "worker", {
      FAKE_GUIX_SCENARIO: await writeScenario(root, {
        packages: [{
          name: "stuck",
          version: "1",
          behaviour: { seconds: 0, daemonHangs: true },
        }],
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
      const drv = await evaluatedDrv(daemon);
      await f.addJobs([{ ...job("stuck", 1), derivation: drv, maxSilent: 1 }]);
      const running = runSession({
        server: { hostname: "127.0.0.1", port: f.port },
        name: "STUCK001",
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
        // A request period of 3 s, the jitter at its least: the session asks
        // again 1.5 s after handing the build back.
        requestPeriodMs: 3000,
        random: () => 0,
        pingIntervalMs: 200,
        replyTimeoutMs: 5000,
        daemonSilenceGraceSeconds: 0.5,
      }, abort.signal);

      await eventually(
        () => lines.some((l) => l.startsWith("error daemon silent ")),
        "daemon silent",
      );
      await eventually(async () => {
        const build = await f.store.getBuildByDerivation(drv);
        return build?.status === BuildStatus.scheduled && build.worker === null;
      }, "build requeued with no worker");
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
    } finally {
      abort.abort();
      await f.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
