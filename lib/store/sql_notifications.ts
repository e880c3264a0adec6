// Store procedures of the notification queue: one notification queued per
// sink of a build's specification when its job's result changes, taken by
// a sender under a lease, and deleted once sent (or given up).

import { checkLimit } from "./rows.ts";
import { buildById } from "./sql_catalog.ts";
import { all, get, run } from "./sql_query.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { QueuedNotification } from "./types.ts";

/** Queues one notification per sink of the build's specification. */
export function* queueNotifications(build: number, specification: string) {
  const row = yield* get(
    "SELECT notifications FROM Specifications WHERE name = ?",
    [specification],
  );
  if (row === undefined) return;
  const raw = row.notifications;
  const sinks = (typeof raw === "string" ? JSON.parse(raw) : raw) as unknown[];
  for (const sink of sinks) {
    yield* run("INSERT INTO Notifications (type, build) VALUES (?, ?)", [
      JSON.stringify(sink),
      build,
    ]);
  }
}

/**
 * How long a notification taken from the queue stays the taker's: a
 * sender that died with it (a crash) leaves it to be taken again after
 * this, longer than a sender's retries of one notification (15 minutes).
 */
export const NOTIFICATION_LEASE_SECONDS = 3600;

export function* returnNotifications(
  _d: Dialect,
  items: QueuedNotification[],
): Step<number> {
  let count = 0;
  for (const item of items) {
    // Gone with its build meanwhile, or given back already: not counted.
    const rows = yield* all(
      `UPDATE Notifications SET claimed_at = NULL
       WHERE id = ? AND build = ? AND claimed_at IS NOT NULL
       RETURNING id`,
      [item.id, item.build.id],
    );
    count += rows.length;
  }
  return count;
}

export function* popNotifications(
  d: Dialect,
  limit: number,
  now: number,
): Step<QueuedNotification[]> {
  // Claimed, not deleted: a notification leaves the queue only once it is
  // sent (or given up), so that a sender's crash loses none.
  const rows = yield* all(
    `UPDATE Notifications SET claimed_at = ? WHERE id IN
       (SELECT id FROM Notifications
        WHERE claimed_at IS NULL OR claimed_at <= ?
        ORDER BY id LIMIT ?${d.skipLocked})
     RETURNING id, type, build`,
    [
      now,
      now - NOTIFICATION_LEASE_SECONDS,
      checkLimit("take notifications", limit),
    ],
  );
  rows.sort((a, b) => Number(a.id) - Number(b.id));
  const result: QueuedNotification[] = [];
  for (const row of rows) {
    const build = yield* buildById(d, Number(row.build));
    if (build === null) continue;
    result.push({
      id: Number(row.id),
      sink: JSON.parse(String(row.type)),
      build,
    });
  }
  return result;
}

export function* finishNotifications(
  _d: Dialect,
  ids: number[],
): Step<void> {
  for (const id of ids) {
    yield* run("DELETE FROM Notifications WHERE id = ?", [id]);
  }
}
