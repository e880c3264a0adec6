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
 * Adds 200 workers "w0" to "w199", last seen at 1000 + i, every tenth
 * recording no timeout and the others 120 s: enough rows that a sweep's
 * plan reads indexes rather than the table.
 */
export async function addSweptWorkers(store: Store): Promise<void> {
  for (let i = 0; i < 200; i++) {
    await store.upsertWorker({
      name: `w${i}`,
      address: "127.0.0.1",
      machine: "m",
      systems: ["x86_64-linux"],
      lastSeen: 1000 + i,
      timeoutSeconds: i % 10 === 0 ? null : 120,
    });
  }
}
