// Worker rows written before workers' own timeouts were recorded (schema
// version 14), and what an upgraded store must make of them. Both
// backends' upgrade tests insert these rows into a version 1 database
// and check the same promise, so it is written once.

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
