import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { startCheckpointer } from "../../../lib/store/sqlite_checkpointer.ts";
import { specification } from "./store_contract.ts";
import type { Store } from "../../../lib/store/types.ts";
import { capturedLog, sqliteTempFiles } from "./_sqlite_fixture.ts";

const { tempDir, tempFile } = sqliteTempFiles("lorica-checkpointer-test-");

/** Whether the database file itself (not its log) holds `text`. */
function fileHolds(path: string, text: string): boolean {
  const bytes = Deno.readFileSync(path);
  return new TextDecoder("latin1").decode(bytes).includes(text);
}

/** Commits a marker through `store` and waits until `path` holds it. */
async function commitReachesFile(store: Store, path: string): Promise<void> {
  const name = `marker-${crypto.randomUUID()}`;
  await store.upsertSpecification(specification(name));
  await waitFor(() => fileHolds(path, name), 5000);
}

async function waitFor(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not true after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("a store with background checkpoints gets its commits into the database file while the writer never checkpoints", async () => {
  const path = tempFile();
  const store = openSqliteStore(path, { backgroundCheckpoints: true });
  try {
    // Far below the writer's automatic checkpoint (10,000 pages): only the
    // checkpoint thread copies this commit out of the log.
    await commitReachesFile(store, path);
  } finally {
    await store.close();
  }
});

Deno.test("closing a store stops its checkpoint thread: the log is removed", async () => {
  const path = tempFile();
  const store = openSqliteStore(path, { backgroundCheckpoints: true });
  await store.upsertSpecification(specification("guix"));
  // Give the thread time to open its connection and checkpoint.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(Deno.statSync(`${path}-wal`).isFile);
  await store.close();
  // SQLite removes the log when its last connection closes: the thread's
  // connection was closed before the store's.
  assert.throws(() => Deno.statSync(`${path}-wal`), Deno.errors.NotFound);
});

Deno.test("a checkpointer that cannot open its database logs why and stops", async () => {
  const { lines, logger } = capturedLog();
  const path = `${tempDir}/no-such-directory/farm.sqlite`;
  const checkpointer = startCheckpointer(path, { logger });
  try {
    await waitFor(() => lines.length > 0, 5000);
  } finally {
    await checkpointer.stop();
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /background checkpoint failed/);
  assert.ok(lines[0].includes(path), lines[0]);
});

Deno.test("stopping a checkpointer twice is one stop", async () => {
  const path = tempFile();
  const store = openSqliteStore(path);
  await store.upsertSpecification(specification("guix"));
  const checkpointer = startCheckpointer(path);
  await Promise.all([checkpointer.stop(), checkpointer.stop()]);
  await checkpointer.stop();
  await store.close();
  assert.throws(() => Deno.statSync(`${path}-wal`), Deno.errors.NotFound);
});

Deno.test("a checkpointer whose thread cannot start logs why, and its stop is a no-op", async () => {
  const { lines, logger } = capturedLog();
  const real = globalThis.Worker;
  // A runtime that refuses threads (as one without the module would).
  globalThis.Worker = class {
    constructor() {
      throw new Error("threads refused");
    }
  } as unknown as typeof Worker;
  try {
    const checkpointer = startCheckpointer(tempFile(), { logger });
    await checkpointer.stop();
  } finally {
    globalThis.Worker = real;
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /background checkpoints unavailable/);
  assert.match(lines[0], /threads refused/);
});

Deno.test("a checkpointer that could not open its database tries again, and checkpoints once it can", async () => {
  const { lines, logger } = capturedLog();
  const dir = `${tempDir}/later`;
  const path = `${dir}/farm.sqlite`;
  const checkpointer = startCheckpointer(path, { logger, idleIntervalMs: 50 });
  try {
    await waitFor(() => lines.length > 0, 5000);
    Deno.mkdirSync(dir);
    const store = openSqliteStore(path);
    try {
      await commitReachesFile(store, path);
    } finally {
      await store.close();
    }
  } finally {
    await checkpointer.stop();
  }
  assert.equal(lines.length, 1, lines.join("\n"));
});
