// Lining store procedures up on PostgreSQL, for tests of their races:
// "gates", transactions of the test's own that hold rows until opened, and
// a watch of which backends wait behind them (pg_blocking_pids).

import assert from "node:assert/strict";
import postgres from "postgres";

/** A transaction of the test's own holding rows. */
export interface Gate {
  pid: number;
  /** Ends the transaction (once), letting the rows go. */
  open(): Promise<void>;
}

/**
 * Opens a transaction on `schema` that runs `lockSql` (a locking SELECT,
 * with `params`) and holds what it locked until the gate opens.
 * @throws {AssertionError} when `lockSql` locks no row
 */
export async function openGate(
  url: string,
  schema: string,
  lockSql: string,
  params: (string | number)[],
): Promise<Gate> {
  const sql = postgres(url, {
    max: 1,
    onnotice: () => {},
    connection: { search_path: schema },
  });
  let release = () => {};
  const released = new Promise<void>((resolve) => release = resolve);
  let locked = (_pid: number) => {};
  const holding = new Promise<number>((resolve) => locked = resolve);
  const transaction = sql.begin(async (tx) => {
    const [{ pid }] = await tx.unsafe("SELECT pg_backend_pid() AS pid");
    const rows = await tx.unsafe(lockSql, params);
    assert.ok(rows.length > 0, `${lockSql} ${JSON.stringify(params)}`);
    locked(Number(pid));
    await released;
  });
  const pid = await Promise.race([holding, transaction.then(() => -1)]);
  let ended: Promise<void> | undefined;
  return {
    pid,
    open() {
      ended ??= (async () => {
        release();
        try {
          await transaction;
        } finally {
          await sql.end({ timeout: 1 });
        }
      })();
      return ended;
    },
  };
}

/** A gate holding the build of `derivation` as a change of it would. */
export function openBuildGate(
  url: string,
  schema: string,
  derivation: string,
): Promise<Gate> {
  return openGate(
    url,
    schema,
    "SELECT id FROM Builds WHERE derivation = $1 FOR NO KEY UPDATE",
    [derivation],
  );
}

/**
 * Waits until `count` backends wait, directly or through one another, for
 * the backends `roots`; returns their pids, in no particular order.
 * @throws {Error} when fewer do after some 5 s
 */
export async function eventuallyWaiting(
  watcher: postgres.Sql,
  roots: number[],
  count: number,
): Promise<number[]> {
  for (let i = 0; i < 250; i++) {
    const rows = await watcher.unsafe(
      `SELECT pid, pg_blocking_pids(pid) AS blockers FROM pg_stat_activity
       WHERE cardinality(pg_blocking_pids(pid)) > 0`,
    );
    const waiting = new Set<number>();
    for (let grown = true; grown;) {
      grown = false;
      for (const row of rows) {
        const pid = Number(row.pid);
        if (waiting.has(pid)) continue;
        const blockers = (row.blockers as number[]).map(Number);
        if (blockers.some((b) => roots.includes(b) || waiting.has(b))) {
          waiting.add(pid);
          grown = true;
        }
      }
    }
    if (waiting.size >= count) return [...waiting];
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(
    `Cannot line up the procedures: fewer than ${count} wait for backends ${
      JSON.stringify(roots)
    }`,
  );
}
