// Lorica workers holding builds of the dispatcher fixture, for the tests of
// what the dispatcher makes of those builds and of their results: a
// scenario with some workers registered, a result as one sends it, and the
// answers it should get.

import assert from "node:assert/strict";
import type { Message, ResultOutcome } from "../../../lib/protocol/messages.ts";
import {
  type FakeWorker,
  type Fixture,
  loricaWorker,
  startFixture,
} from "./_dispatch_fixture.ts";

/** A loopback publish URL where nothing listens: nothing to fetch. */
export const NOWHERE = "http://127.0.0.1:1";

/**
 * Runs `scenario` against a fresh fixture (started with `options`) with a
 * registered Lorica worker of each of `names`, in order; closes them all
 * whatever happens.
 */
export async function withLoricaWorkers(
  names: string[],
  scenario: (f: Fixture, workers: FakeWorker[]) => Promise<void>,
  options?: Parameters<typeof startFixture>[0],
): Promise<void> {
  const f = await startFixture(options);
  const workers: FakeWorker[] = [];
  try {
    for (const name of names) workers.push(await loricaWorker(f.port, name));
    await scenario(f, workers);
  } finally {
    await Promise.all(workers.map((worker) => worker.close()));
    await f.close();
  }
}

/** The result `type` of `drv` as a worker sends it, published at `url`. */
export function resultOf(
  type: "build-succeeded" | "build-failed",
  drv: string,
  url = NOWHERE,
): Message {
  return { type, drv, url, log: null };
}

/**
 * Asserts that the next message `worker` gets acknowledges its result of
 * `drv`, saying `outcome`.
 */
export async function assertAcknowledged(
  worker: FakeWorker,
  drv: string,
  outcome: ResultOutcome,
  message?: string,
): Promise<void> {
  assert.deepEqual(
    await worker.next(),
    { type: "result-ack", drv, outcome },
    message,
  );
}

/**
 * Reports `drv` failed by `worker` once the dispatcher should have let go
 * of it: the report is then checked against the store, and ignored.
 */
export async function assertReleased(
  f: Fixture,
  worker: FakeWorker,
  drv: string,
): Promise<void> {
  await worker.send(resultOf("build-failed", drv));
  await assertAcknowledged(worker, drv, "ignored");
  // Still counted as the worker's, the report would be recorded (as
  // "build failed", changing nothing) without a look at the store.
  assert.ok(
    f.lines.some((l) => / result ignored /.test(l) && l.includes(drv)),
    f.lines.join("\n"),
  );
}
