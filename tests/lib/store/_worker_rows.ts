// Worker rows that both backends' tests write the same way: rows from
// before workers' own timeouts were recorded (schema version 14), with
// what an upgraded store must make of them, and a crowd of workers for a
// sweep's query plan. Written once so that the backends are held to the
// same rows.

import assert from "node:assert/strict";
import type { Store } from "../../../lib/store/types.ts";

/**
 * VALUES for a version 1 `Workers` table (no timeout column): "old" and
 * "heard", both last seen at 100.
 */
export const UNTIMED_WORKER_ROWS = `
  ('old', '127.0.0.1', 'm', '["x86_64-linux"]', 100),
  ('heard', '127.0.0.1', 'm', '["x86_64-linux"]', 100)`;

/**
 * Asserts that the rows of {@link UNTIMED_WORKER_ROWS}, upgraded, record
 * no timeout and are judged by the sweeper's own (120 s), until a contact
 * records the timeout of the server hearing it (600 s for "heard").
 */
export async function assertUntimedWorkersUpgraded(
  store: Store,
): Promise<void> {
  assert.equal((await store.getWorker("old"))?.timeoutSeconds, null);
  assert.equal(await store.touchWorker("heard", 100, 600), true);
  assert.deepEqual(
    await store.expireWorkers(220, { timeoutSeconds: 120 }),
    [],
  );
  assert.deepEqual(
    await store.expireWorkers(221, { timeoutSeconds: 120 }),
    [{ name: "old", timeoutSeconds: null, requeued: 0 }],
  );
  assert.deepEqual(
    await store.expireWorkers(701, { timeoutSeconds: 120 }),
    [{ name: "heard", timeoutSeconds: 600, requeued: 0 }],
  );
}

/**
 * Adds 200 workers "w0" to "w199", last seen at 1000 + i: every tenth
 * recording no timeout, every tenth but five another server's 600 s, and
 * the others 120 s: enough rows that a sweep's plan reads indexes rather
 * than the table.
 */
export async function addSweptWorkers(store: Store): Promise<void> {
  for (let i = 0; i < 200; i++) {
    await store.upsertWorker({
      name: `w${i}`,
      address: "127.0.0.1",
      machine: "m",
      systems: ["x86_64-linux"],
      lastSeen: 1000 + i,
      timeoutSeconds: i % 10 === 0 ? null : i % 10 === 5 ? 600 : 120,
    });
  }
}

/** The sweep whose plan the tests read: at 1130, by a 120-s server. */
export const SWEEP_OF_SWEPT_WORKERS = {
  now: 1130,
  sweep: { timeoutSeconds: 120 },
} as const;

/**
 * Asserts that {@link SWEEP_OF_SWEPT_WORKERS} expires, of the rows of
 * {@link addSweptWorkers}, those silent past their own timeout: w0 (none
 * recorded: the sweep's 120 s) and w1 to w9, but w5, whose 600 s are not
 * over. A sweep giving its own timeout to every row would take w5 too.
 */
export async function assertSweptWorkersExpired(store: Store): Promise<void> {
  const { now, sweep } = SWEEP_OF_SWEPT_WORKERS;
  assert.deepEqual(
    (await store.expireWorkers(now, sweep)).map((worker) => worker.name),
    ["w0", "w1", "w2", "w3", "w4", "w6", "w7", "w8", "w9"],
  );
}
