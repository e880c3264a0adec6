// A real dispatcher whose fetch of a success's outputs finds none until the
// test releases it, and a real worker building for it whose guix publish
// runs until stopped: what the tests of a draining worker's publish server
// share (outputs_fetched_test.ts, untold_fetches_test.ts).

import {
  type RunningWorker,
  startWorker,
  type WorkerConfig,
} from "../../../lib/worker/worker.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import type { Clock } from "../../../lib/clock.ts";
import { createLogger } from "../../../lib/log.ts";
import { quietPort } from "../../_ports.ts";
import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  eventually,
  fakeSpawner,
  type Fixture,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import type { NewJob } from "../../../lib/store/types.ts";
import { lingeringChild, PUBLISH_SAYS } from "./_lingering_child.ts";
import { workerConfig } from "./_session_helpers.ts";

/**
 * The worker's publish server as the fixture's fetch sees it: no narinfo
 * (404) until `release()`.
 */
export class HeldPublish {
  released = false;
  fetch = () =>
    Promise.resolve(
      this.released ? new Response("ok") : new Response("", { status: 404 }),
    );
  release() {
    this.released = true;
  }
}

/** How a held-fetch farm's worker differs from the default one. */
export interface HeldFetchWorker {
  /** Its configuration, over one session that waits a minute for replies. */
  config?: Partial<WorkerConfig>;
  /** Its clock; default the system's. */
  clock?: Clock;
  /** Its `guix build` children; default ones that succeed at once. */
  build?: Spawner;
}

/**
 * A worker against `f` whose guix publish runs until stopped;
 * `publishStopped` resolves when it is, with whether the fetch was
 * released by then.
 */
async function startBuildingWorker(
  f: Fixture,
  publish: HeldPublish,
  lines: string[],
  calls: string[][],
  options: HeldFetchWorker,
): Promise<
  {
    worker: RunningWorker;
    publishStopped: Promise<boolean>;
    publishChild: () => Child;
  }
> {
  const stopped = Promise.withResolvers<boolean>();
  const building = options.build ?? fakeSpawner(undefined, calls);
  let publishChild: Child | undefined;
  const spawn: Spawner = (argv, spawnOptions) => {
    if (!argv.includes("publish")) return building(argv, spawnOptions);
    const child = lingeringChild(spawnOptions, PUBLISH_SAYS);
    child.status.then(() => stopped.resolve(publish.released));
    publishChild = child;
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
      ...options.config,
    }),
    {
      guix: new Guix({ logger, spawn }),
      logger,
      clock: options.clock,
      freeBytes: () => Promise.resolve(1024 ** 4),
    },
  );
  return {
    worker,
    publishStopped: stopped.promise,
    publishChild: () => publishChild!,
  };
}

/**
 * A dispatcher whose fetch of outputs finds none until `publish.release()`,
 * holding `jobs` before the worker starts (their drvs in `drvs`), and a
 * worker building for it (see startBuildingWorker). Leaving the
 * `await using` scope that holds it stops the worker, then the dispatcher.
 */
export async function heldFetchFarm(
  lines: string[],
  calls: string[][],
  { logPort = quietPort(), jobs = [], worker: workerOptions = {} }: {
    logPort?: number;
    jobs?: NewJob[];
    worker?: HeldFetchWorker;
  } = {},
) {
  const publish = new HeldPublish();
  const f = await startFixture({ logPort, fetch: publish.fetch });
  try {
    const drvs = await f.addJobs(jobs);
    const { worker, publishStopped, publishChild } = await startBuildingWorker(
      f,
      publish,
      lines,
      calls,
      workerOptions,
    );
    return {
      publish,
      f,
      drvs,
      worker,
      publishStopped,
      publishChild,
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

/** A farm of {@link heldFetchFarm}. */
export type HeldFetchFarm = Awaited<ReturnType<typeof heldFetchFarm>>;

/** Waits until the server's fetch of the worker's result is retrying. */
export async function fetchWaiting(f: Fixture, drv: string, lines: string[]) {
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

/**
 * Asserts that the fixture's build `drv` succeeded once, was built once
 * (`calls`: the worker's guix command lines) and was never requeued, nor
 * its outputs found unavailable.
 */
export async function assertSucceededOnce(
  f: Fixture,
  drv: string,
  calls: string[][],
): Promise<void> {
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
}
