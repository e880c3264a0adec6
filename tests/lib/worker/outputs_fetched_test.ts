// A worker stopped cleanly right after its last success: the server
// acknowledges the result as "fetching" and then reads the outputs from the
// worker's publish server. With "outputs-fetched" the draining worker keeps
// that server up until the server says the fetch ended, so the build
// succeeds once and is not built again; past the drain's timeout, for its
// grace only. A real dispatcher whose fetch finds
// no narinfo until the test releases it, and a real worker.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  eventually,
  FakeClock,
  fakeSpawner,
  job,
  settlesWithin,
  within,
} from "../server/_dispatch_fixture.ts";
import { lingeringChild } from "./_lingering_child.ts";
import type { Spawner } from "../../../lib/process.ts";
import { scriptedLogServer } from "../protocol/_scripted_log_server.ts";
import {
  assertSucceededOnce,
  fetchWaiting,
  type HeldFetchFarm,
  heldFetchFarm,
} from "./_held_fetch_farm.ts";

Deno.test({
  name:
    "a draining worker keeps its guix publish up until the server's fetch of its last success ends: succeeded once, never requeued, built once",
  async fn() {
    const lines: string[] = [];
    const calls: string[][] = [];
    await using farm = await heldFetchFarm(lines, calls);
    const [drv] = await farm.f.addJobs([job("last-before-upgrade", 1)]);
    await fetchWaiting(farm.f, drv, lines);
    const draining = farm.worker.stop({ drain: true, drainMs: 240_000 });
    await fetchedOnceBeforePublishStopped(farm, drv, draining, lines, calls, {
      waiting: "the drain",
      unsaid: / (drain timeout|outputs still being fetched)/,
    });
  },
});

/**
 * Checks that the farm's build `drv` ended as one fetch after the drain
 * (released before guix publish stopped): succeeded once, built once,
 * never requeued, nothing named unfetched. `waiting` names what waits for
 * the fetch (the drain, or its grace); no worker line matches `unsaid`.
 */
async function fetchedOnceBeforePublishStopped(
  farm: HeldFetchFarm,
  drv: string,
  draining: Promise<void>,
  lines: string[],
  calls: string[][],
  {
    waiting = "the grace",
    unsaid =
      / (drain grace over|outputs still being fetched|build handed back)/,
  }: { waiting?: string; unsaid?: RegExp } = {},
) {
  const { publish, f, publishStopped } = farm;
  assert.equal(
    await settlesWithin(draining, 500),
    false,
    `${waiting} waits for the fetch\n${lines.join("\n")}`,
  );
  assert.equal(await settlesWithin(publishStopped, 0), false);
  publish.release();
  await f.clock.advance(1000);
  assert.ok(
    await settlesWithin(draining, 5000),
    `the drain ends with the fetch\nserver:\n${f.lines.join("\n")}\nworker:\n${
      lines.join("\n")
    }`,
  );
  assert.equal(
    await publishStopped,
    true,
    "guix publish stopped only after the fetch",
  );
  await assertSucceededOnce(f, drv, calls);
  assert.ok(!lines.some((l) => unsaid.test(l)), lines.join("\n"));
}

Deno.test({
  name:
    "a drain whose timeout expires while the server fetches a success keeps guix publish up for its grace until the fetch ends: succeeded once, built once",
  async fn() {
    const lines: string[] = [];
    const calls: string[][] = [];
    await using farm = await heldFetchFarm(lines, calls);
    const [drv] = await farm.f.addJobs([job("fetched-past-timeout", 1)]);
    await fetchWaiting(farm.f, drv, lines);
    const draining = farm.worker.stop({
      drain: true,
      drainMs: 300,
      graceMs: 240_000,
    });
    await eventually(
      () => lines.some((l) => l.startsWith("warn drain timeout over")),
      `the drain's timeout over\n${lines.join("\n")}`,
    );
    assert.ok(
      lines.includes("warn drain timeout over builds=0 timeout=0.3 grace=240"),
      lines.join("\n"),
    );
    await fetchedOnceBeforePublishStopped(farm, drv, draining, lines, calls);
  },
});

Deno.test({
  name:
    "a success whose guix build ended as the drain timeout came (its log still being sent) is reported and fetched within the grace before guix publish stops",
  async fn() {
    // A log server that never says it stored a log: the worker sends the
    // log again, pausing between tries, its build long over.
    const logs = scriptedLogServer(["", "", "", ""]);
    try {
      const lines: string[] = [];
      const calls: string[][] = [];
      await using farm = await heldFetchFarm(lines, calls, {
        logPort: logs.port,
      });
      const [drv] = await farm.f.addJobs([job("done-at-timeout", 1)]);
      await eventually(
        () => lines.some((l) => l.startsWith("warn log resend retried")),
        `the log sent again\n${lines.join("\n")}`,
      );
      const draining = farm.worker.stop({
        drain: true,
        drainMs: 300,
        graceMs: 240_000,
      });
      // Reported at the timeout, and fetched from then on.
      await fetchWaiting(farm.f, drv, lines);
      await fetchedOnceBeforePublishStopped(farm, drv, draining, lines, calls);
    } finally {
      logs.close();
    }
  },
});

Deno.test({
  name:
    "a drain whose grace runs out while the server still fetches a success says so and names that derivation as the worker stops",
  async fn() {
    const lines: string[] = [];
    await using farm = await heldFetchFarm(lines, []);
    const { f, worker, publishStopped } = farm;
    const [drv] = await f.addJobs([job("fetched-too-long", 1)]);
    await fetchWaiting(f, drv, lines);
    const draining = worker.stop({ drain: true, drainMs: 300, graceMs: 300 });
    assert.ok(await settlesWithin(draining, 5000), "the drain ends");
    assert.equal(await publishStopped, false);
    assert.deepEqual(
      lines.filter((l) =>
        / (drain timeout|drain grace|results unacknowledged|outputs still)/
          .test(l)
      ),
      [
        "warn drain timeout over builds=0 timeout=0.3 grace=0.3",
        "warn drain grace over grace=0.3",
        `warn outputs still being fetched drvs=${drv} reason="the worker stopped before the server fetched them"`,
      ],
    );
  },
});

Deno.test({
  name:
    "a stop without drain cuts a drain's grace short: guix publish stops at once, the fetch named",
  async fn() {
    const lines: string[] = [];
    await using farm = await heldFetchFarm(lines, []);
    const { f, worker, publishStopped } = farm;
    const [drv] = await f.addJobs([job("grace-cut-short", 1)]);
    await fetchWaiting(f, drv, lines);
    const draining = worker.stop({
      drain: true,
      drainMs: 300,
      graceMs: 240_000,
    });
    await eventually(
      () => lines.some((l) => l.startsWith("warn drain timeout over")),
      `the drain's timeout over\n${lines.join("\n")}`,
    );
    assert.ok(
      await settlesWithin(worker.stop({ signal: "SIGTERM" }), 3000),
      "the second stop is quick",
    );
    assert.ok(await settlesWithin(draining, 100), "and ends the first");
    assert.equal(await publishStopped, false);
    assert.deepEqual(
      lines.filter((l) =>
        / (stop without drain|drain grace|outputs still)/.test(l)
      ),
      [
        "warn stop without drain signal=SIGTERM builds=0",
        `warn outputs still being fetched drvs=${drv} reason="the worker stopped before the server fetched them"`,
      ],
    );
  },
});

Deno.test({
  name:
    "a draining worker whose guix publish dies stops waiting for the server's fetches at once: none can end well, the drain ends before its timeout",
  async fn() {
    const lines: string[] = [];
    // A fake clock: the drain's timeout cannot come.
    const clock = new FakeClock();
    await using farm = await heldFetchFarm(lines, [], {
      jobs: [job("publish-dies-mid-drain", 1)],
      worker: { clock },
    });
    const { f, worker } = farm;
    const [drv] = farm.drvs;
    await fetchWaiting(f, drv, lines);
    const draining = worker.stop({ drain: true, drainMs: 240_000 });
    await eventually(
      () => lines.includes("info worker draining timeout=240"),
      `the drain under way\n${lines.join("\n")}`,
    );
    farm.publishChild().kill();
    await worker.failed;
    await within(draining, 5000, "end of the drain");
    assert.deepEqual(
      lines.filter((l) =>
        / (fetch end|drain timeout|drain grace|outputs still|session drained)/
          .test(l)
      ),
      [
        `warn fetch end no longer awaited worker=${
          worker.names[0]
        } drv=${drv} reason="guix publish exited"`,
        `info session drained worker=${worker.names[0]}`,
      ],
    );
    // Nothing was said to the server: its fetch goes on failing.
    assert.notEqual(await f.status(drv), BuildStatus.succeeded);
  },
});

/** Spawns a `guix build` that runs until killed; other commands succeed. */
const lingeringBuild: Spawner = (argv, options) =>
  argv.includes("build")
    ? lingeringChild(options)
    : fakeSpawner()(argv, options);

Deno.test({
  name:
    "a worker whose guix publish died gives its drain no grace: a build under way holds the drain until its timeout, then the worker stops",
  async fn() {
    const lines: string[] = [];
    const clock = new FakeClock();
    await using farm = await heldFetchFarm(lines, [], {
      jobs: [job("building-as-publish-died", 1)],
      worker: { clock, build: lingeringBuild },
    });
    const { worker } = farm;
    await eventually(
      () => lines.some((l) => l.startsWith("info build received")),
      `the build started\n${lines.join("\n")}`,
    );
    farm.publishChild().kill();
    await worker.failed;
    const draining = worker.stop({
      drain: true,
      drainMs: 10_000,
      graceMs: 240_000,
    });
    await clock.advance(10_000);
    await within(draining, 5000, "end of the drain at its timeout");
    assert.deepEqual(
      lines.filter((l) => / (drain timeout|drain grace)/.test(l)),
      ["warn drain timeout over builds=1 timeout=10 grace=0"],
    );
  },
});
