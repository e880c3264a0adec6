// A worker stopped cleanly right after its last success: the server
// acknowledges the result as "fetching" and then reads the outputs from the
// worker's publish server. With "outputs-fetched" the draining worker keeps
// that server up until the server says the fetch ended, so the build
// succeeds once and is not built again. A real dispatcher whose fetch finds
// no narinfo until the test releases it, and a real worker.

import assert from "node:assert/strict";
import { type RunningWorker, startWorker } from "../../../lib/worker/worker.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { quietPort } from "../../_ports.ts";
import {
  eventually,
  fakeSpawner,
  type Fixture,
  job,
  settlesWithin,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { lingeringChild, PUBLISH_SAYS } from "./_lingering_child.ts";
import { workerConfig } from "./_session_helpers.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

/**
 * The worker's publish server as the fixture's fetch sees it: no narinfo
 * (404) until `release()`.
 */
class HeldPublish {
  released = false;
  fetch = () =>
    Promise.resolve(
      this.released ? new Response("ok") : new Response("", { status: 404 }),
    );
  release() {
    this.released = true;
  }
}

/**
 * A one-session worker against `f` whose builds succeed at once and whose
 * guix publish runs until stopped; `publishStopped` resolves when it is,
 * with whether the fetch was released by then.
 */
async function startBuildingWorker(
  f: Fixture,
  publish: HeldPublish,
  lines: string[],
  calls: string[][],
): Promise<{ worker: RunningWorker; publishStopped: Promise<boolean> }> {
  const stopped = Promise.withResolvers<boolean>();
  const building = fakeSpawner(undefined, calls);
  const spawn: Spawner = (argv, options) => {
    if (!argv.includes("publish")) return building(argv, options);
    const child = lingeringChild(options, PUBLISH_SAYS);
    child.status.then(() => stopped.resolve(publish.released));
    return child;
  };
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const worker = await startWorker(
    workerConfig(f.port, {
      requestPeriodMs: 60_000,
      replyTimeoutMs: 60_000,
      storeDir: "/gnu/store",
    }),
    {
      guix: new Guix({ logger, spawn }),
      logger,
      freeBytes: () => Promise.resolve(1024 ** 4),
    },
  );
  return { worker, publishStopped: stopped.promise };
}

/**
 * A dispatcher whose fetch of outputs finds none until `publish.release()`,
 * and a worker building for it (see startBuildingWorker). Leaving the
 * `await using` scope that holds it stops the worker, then the dispatcher.
 */
async function heldFetchFarm(lines: string[], calls: string[][]) {
  const publish = new HeldPublish();
  const f = await startFixture({ logPort: quietPort(), fetch: publish.fetch });
  try {
    const { worker, publishStopped } = await startBuildingWorker(
      f,
      publish,
      lines,
      calls,
    );
    return {
      publish,
      f,
      worker,
      publishStopped,
      async [Symbol.asyncDispose]() {
        await worker.stop();
        await f.close();
      },
    };
  } catch (error) {
    await f.close();
    throw error;
  }
}

/** Waits until the server's fetch of the worker's result is retrying. */
async function fetchWaiting(f: Fixture, drv: string, lines: string[]) {
  await eventually(
    () =>
      f.lines.some((l) =>
        l.startsWith("warn output fetch retried") && l.includes(drv)
      ),
    `the fetch waiting\nserver:\n${f.lines.join("\n")}\nworker:\n${
      lines.join("\n")
    }`,
  );
}

Deno.test({
  ...opts,
  name:
    "a draining worker keeps its guix publish up until the server's fetch of its last success ends: succeeded once, never requeued, built once",
  async fn() {
    const lines: string[] = [];
    const calls: string[][] = [];
    await using farm = await heldFetchFarm(lines, calls);
    const { publish, f, worker, publishStopped } = farm;
    const [drv] = await f.addJobs([job("last-before-upgrade", 1)]);
    await fetchWaiting(f, drv, lines);
    const draining = worker.stop({ drain: true, drainMs: 240_000 });
    assert.equal(
      await settlesWithin(draining, 500),
      false,
      `the drain waits for the fetch\n${lines.join("\n")}`,
    );
    assert.equal(await settlesWithin(publishStopped, 0), false);

    publish.release();
    await f.clock.advance(1000);
    assert.ok(
      await settlesWithin(draining, 5000),
      `the drain ends with the fetch\nserver:\n${
        f.lines.join("\n")
      }\nworker:\n${lines.join("\n")}`,
    );
    assert.equal(
      await publishStopped,
      true,
      "guix publish stopped only after the fetch",
    );
    assert.equal(await f.status(drv), BuildStatus.succeeded);
    assert.equal(
      f.lines.filter((l) => l.startsWith("info build succeeded")).length,
      1,
      f.lines.join("\n"),
    );
    assert.deepEqual(
      f.lines.filter((l) =>
        /^(warn|info) build requeued|^error outputs unavailable/.test(l)
      ),
      [],
    );
    assert.equal(
      calls.filter((argv) => argv.includes("build") && argv.includes(drv))
        .length,
      1,
      "built once",
    );
    assert.ok(
      !lines.some((l) =>
        / (drain timeout|outputs still being fetched)/.test(l)
      ),
      lines.join("\n"),
    );
  },
});

Deno.test({
  ...opts,
  name:
    "a drain whose timeout expires while the server still fetches a success names that derivation as the worker stops",
  async fn() {
    const lines: string[] = [];
    await using farm = await heldFetchFarm(lines, []);
    const { f, worker, publishStopped } = farm;
    const [drv] = await f.addJobs([job("fetched-too-long", 1)]);
    await fetchWaiting(f, drv, lines);
    const draining = worker.stop({ drain: true, drainMs: 500 });
    assert.ok(await settlesWithin(draining, 5000), "the drain ends");
    assert.equal(await publishStopped, false);
    assert.deepEqual(
      lines.filter((l) =>
        / (drain timeout|results unacknowledged|outputs still)/.test(l)
      ),
      [
        "warn drain timeout over builds=0 timeout=0.5",
        `warn outputs still being fetched drvs=${drv} reason="the worker stopped before the server fetched them"`,
      ],
    );
  },
});
