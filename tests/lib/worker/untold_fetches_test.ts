// A worker that speaks plain Cuirass (--no-extensions) to a real Lorica
// dispatcher, stopped cleanly right after its last success: the server
// fetches the outputs from the worker's publish server as the report
// arrives, but never says when that fetch ends. The draining worker keeps
// its publish server up for a fixed while after that report, so the fetch
// made meanwhile succeeds and the build is not done again. The worker's
// clock is a fake one: the wait ends only when the test moves it.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import type { Spawner } from "../../../lib/process.ts";
import {
  eventually,
  FakeClock,
  fakeSpawner,
  job,
  settlesWithin,
  within,
} from "../server/_dispatch_fixture.ts";
import { untilStatus } from "./_session_helpers.ts";
import { lingeringChild } from "./_lingering_child.ts";
import {
  assertSucceededOnce,
  fetchWaiting,
  type HeldFetchFarm,
  heldFetchFarm,
} from "./_held_fetch_farm.ts";

const KEPT_UP = "info publish kept up";
const REASON = 'reason="the server does not say when it fetched the outputs"';

/** Waits until the worker says it keeps guix publish up. */
async function keptUp(lines: string[]) {
  await eventually(
    () => lines.some((l) => l.startsWith(KEPT_UP)),
    `guix publish kept up\n${lines.join("\n")}`,
  );
}

/**
 * Releases the server's fetch of `drv` (waiting already) while guix
 * publish is up, then checks the build succeeded once, built once, never
 * requeued.
 */
async function fetchedOnce(
  farm: HeldFetchFarm,
  drv: string,
  lines: string[],
  calls: string[][],
) {
  const { publish, f } = farm;
  publish.release();
  await f.clock.advance(1000);
  await untilStatus(
    f,
    drv,
    BuildStatus.succeeded,
    `the fetch\nserver:\n${f.lines.join("\n")}\nworker:\n${lines.join("\n")}`,
  );
  await assertSucceededOnce(f, drv, calls);
}

Deno.test({
  name:
    "a draining worker with no extensions keeps guix publish up for 30 s after its last success, which the server fetches meanwhile: succeeded once, built once",
  async fn() {
    const lines: string[] = [];
    const calls: string[][] = [];
    const clock = new FakeClock();
    await using farm = await heldFetchFarm(lines, calls, {
      jobs: [job("untold-fetch", 1)],
      worker: { config: { extensions: false }, clock },
    });
    const [drv] = farm.drvs;
    await fetchWaiting(farm.f, drv, lines);
    // Nothing else holds the drain: no build under way, no ack awaited.
    const draining = farm.worker.stop({ drain: true, drainMs: 240_000 });
    await keptUp(lines);
    assert.deepEqual(lines.filter((l) => l.startsWith(KEPT_UP)), [
      `${KEPT_UP} drv=${drv} wait=30 ${REASON}`,
    ]);
    assert.equal(await settlesWithin(farm.publishStopped, 0), false);

    await fetchedOnce(farm, drv, lines, calls);
    // The worker cannot know the fetch ended: the wait runs its course.
    assert.equal(await settlesWithin(farm.publishStopped, 0), false);
    await clock.advance(29_000);
    assert.equal(await settlesWithin(farm.publishStopped, 0), false);
    await clock.advance(1000);
    await within(draining, 5000, "end of the drain");
    assert.equal(
      await farm.publishStopped,
      true,
      "guix publish stopped only after the fetch",
    );
    assert.ok(
      !lines.some((l) => / (drain timeout|stop without drain)/.test(l)),
      lines.join("\n"),
    );
  },
});

Deno.test({
  name:
    "past a drain's timeout, a worker with no extensions keeps guix publish up until 30 s after its last success, within the grace",
  async fn() {
    const lines: string[] = [];
    const calls: string[][] = [];
    const clock = new FakeClock();
    // The other session's build runs until the drain's timeout kills it.
    const quick = fakeSpawner(undefined, calls);
    const build: Spawner = (argv, options) =>
      argv.some((arg) => arg.includes("untold-slow"))
        ? lingeringChild(options)
        : quick(argv, options);
    await using farm = await heldFetchFarm(lines, calls, {
      jobs: [job("untold-quick", 1), job("untold-slow", 2)],
      worker: { config: { extensions: false, workers: 2 }, clock, build },
    });
    const [drv] = farm.drvs;
    await fetchWaiting(farm.f, drv, lines);
    const draining = farm.worker.stop({
      drain: true,
      drainMs: 10_000,
      graceMs: 30_000,
    });
    await clock.advance(10_000);
    await keptUp(lines);
    assert.deepEqual(
      lines.filter((l) => / (drain timeout|publish kept up)/.test(l)),
      [
        "warn drain timeout over builds=1 timeout=10 grace=30",
        // The success was reported as the drain began, 10 s ago.
        `${KEPT_UP} drv=${drv} wait=20 ${REASON}`,
      ],
    );
    await fetchedOnce(farm, drv, lines, calls);
    assert.equal(await settlesWithin(farm.publishStopped, 0), false);
    await clock.advance(20_000);
    await within(draining, 5000, "end of the drain");
    assert.equal(await farm.publishStopped, true);
  },
});

Deno.test({
  name:
    "a stop without drain cuts short the wait of guix publish for a fetch the server does not say the end of",
  async fn() {
    const lines: string[] = [];
    const clock = new FakeClock();
    await using farm = await heldFetchFarm(lines, [], {
      jobs: [job("untold-cut-short", 1)],
      worker: { config: { extensions: false }, clock },
    });
    const [drv] = farm.drvs;
    await fetchWaiting(farm.f, drv, lines);
    const draining = farm.worker.stop({ drain: true, drainMs: 240_000 });
    await keptUp(lines);
    await within(
      farm.worker.stop({ signal: "SIGTERM" }),
      5000,
      "end of the second stop",
    );
    await within(draining, 5000, "end of the drain");
    assert.equal(await farm.publishStopped, false);
    assert.deepEqual(
      lines.filter((l) => / (stop without drain|publish kept up)/.test(l)),
      [
        `${KEPT_UP} drv=${drv} wait=30 ${REASON}`,
        "warn stop without drain signal=SIGTERM builds=0",
      ],
    );
  },
});
