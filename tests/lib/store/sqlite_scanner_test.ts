import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { scanError, startScanner } from "../../../lib/store/sqlite_scanner.ts";
import { StoreError } from "../../../lib/store/types.ts";
import { job, specification } from "./store_contract.ts";
import type { Scan } from "../../../lib/store/sql_scans.ts";
import type { Store } from "../../../lib/store/types.ts";
import { capturedLog, sqliteTempFiles } from "./_sqlite_fixture.ts";

const { tempDir, tempFile } = sqliteTempFiles("lorica-scanner-test-");

/** A scan run "here" that answers `answer` and counts its calls. */
function fakeHere(answer: Map<string, number>) {
  const calls: string[] = [];
  const runHere = ((name: string) => {
    calls.push(name);
    return Promise.resolve(answer);
  }) as Scan;
  return { calls, runHere };
}

/**
 * Registers `names` as scheduled x86_64-linux builds of one evaluation,
 * whose id it returns.
 */
async function schedule(store: Store, names: string[]): Promise<number> {
  await store.upsertSpecification(specification("guix"));
  const evaluation = await store.addEvaluation("guix", [], 1000);
  await store.registerBuilds(
    evaluation,
    names.map((name) => job(name)),
    { priority: 9, now: 1000 },
  );
  return evaluation;
}

Deno.test("a store with background scans counts on another connection: a batch's writes count once committed, through the batch at once", async () => {
  const store = openSqliteStore(tempFile(), { backgroundScans: true });
  try {
    const evaluation = await schedule(store, ["hello"]);
    const queued = new Map([["x86_64-linux", 1]]);
    assert.deepEqual(await store.queueLengthBySystem(), queued);
    await store.batch(async (tx) => {
      await tx.popBuild("w1", ["x86_64-linux"], 1001);
      // The writer's connection sees its uncommitted pop; the scan
      // thread's connection does not.
      assert.deepEqual(await tx.queueLengthBySystem(), new Map());
      assert.deepEqual(await store.queueLengthBySystem(), queued);
      assert.deepEqual(await store.countBuildsByStatus(), new Map([[-2, 1]]));
      const statuses = async (from: Store) =>
        (await from.listJobs(evaluation, {})).map((row) => row.status);
      assert.deepEqual(await statuses(tx), [-3]);
      assert.deepEqual(await statuses(store), [-2]);
    });
    assert.deepEqual(await store.queueLengthBySystem(), new Map());
    assert.deepEqual(await store.countBuildsByStatus(), new Map([[-3, 1]]));
  } finally {
    await store.close();
  }
});

Deno.test("a scan asked just before the store closes still gets its answer", async () => {
  const path = tempFile();
  const store = openSqliteStore(path, { backgroundScans: true });
  await schedule(store, ["hello", "world"]);
  const counted = store.countBuildsByStatus();
  await store.close();
  assert.deepEqual(await counted, new Map([[-2, 2]]));
});

Deno.test("a scan that fails on the thread rejects with the thread's error, and is not run again here", async () => {
  const path = tempFile();
  // A SQLite database without Lorica's tables.
  new DatabaseSync(path).close();
  const here = fakeHere(new Map());
  const scanner = startScanner(path, { runHere: here.runHere });
  try {
    await assert.rejects(
      scanner.scan("queueLengthBySystem", []),
      /no such table: Builds/,
    );
  } finally {
    await scanner.stop();
  }
  assert.deepEqual(here.calls, []);
});

Deno.test("an error from the scan thread keeps its class: a StoreError its code and offending value too", () => {
  const error = scanError({
    name: "StoreError",
    message: "Unknown evaluation 7",
    code: "not-found",
    value: 7,
  });
  assert.ok(error instanceof StoreError);
  assert.equal(error.code, "not-found");
  assert.equal(error.value, 7);
  const typeError = scanError({ name: "TypeError", message: "bad value" });
  assert.ok(typeError instanceof TypeError);
  assert.equal(typeError.message, "bad value");
  const other = scanError({ name: "Error", message: "disk I/O error" });
  assert.ok(!(other instanceof StoreError) && !(other instanceof TypeError));
});

Deno.test("a stop overtakes the scans queued for the thread: they run on the caller's connection", async () => {
  const path = tempFile();
  const store = openSqliteStore(path);
  await schedule(store, ["hello"]);
  const answer = new Map([["x86_64-linux", 1]]);
  const here = fakeHere(answer);
  const scanner = startScanner(path, { runHere: here.runHere });
  // Queued before the thread has even loaded: the stop, flagged at once,
  // reaches them first.
  const scans = Array.from(
    { length: 50 },
    () => scanner.scan("queueLengthBySystem", []),
  );
  await scanner.stop();
  for (const counted of await Promise.all(scans)) {
    assert.deepEqual(counted, answer);
  }
  assert.ok(here.calls.length > 0);
  await store.close();
  // The thread's connection was closed: the store's removed the log.
  assert.throws(() => Deno.statSync(`${path}-wal`), Deno.errors.NotFound);
});

Deno.test("an in-memory database named by a URI scans on its own connection", async () => {
  const store = openSqliteStore("file::memory:", { backgroundScans: true });
  try {
    await schedule(store, ["hello"]);
    assert.deepEqual(
      await store.queueLengthBySystem(),
      new Map([["x86_64-linux", 1]]),
    );
  } finally {
    await store.close();
  }
});

Deno.test("a filter that cannot cross threads rejects as on the store's own connection", async () => {
  const store = openSqliteStore(tempFile(), { backgroundScans: true });
  try {
    // A symbol can neither be posted to a thread nor bound to SQL.
    const filter = { specification: Symbol("guix") as unknown as string };
    const counted = store.countBuildsByStatus(filter);
    await assert.rejects(counted, {
      name: "TypeError",
      message: /cannot be bound to SQLite parameter 1/,
    });
  } finally {
    await store.close();
  }
});

Deno.test("scans run on the caller's connection while the thread cannot open the database, logged once", async () => {
  const { lines, logger } = capturedLog();
  const path = `${tempDir}/no-such-directory/farm.sqlite`;
  const answer = new Map([["x86_64-linux", 3]]);
  const here = fakeHere(answer);
  const scanner = startScanner(path, { runHere: here.runHere, logger });
  try {
    assert.equal(await scanner.scan("queueLengthBySystem", []), answer);
    assert.equal(await scanner.scan("queueLengthBySystem", []), answer);
  } finally {
    await scanner.stop();
  }
  assert.deepEqual(here.calls, ["queueLengthBySystem", "queueLengthBySystem"]);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /background scans unavailable/);
  assert.ok(lines[0].includes(path), lines[0]);
});

Deno.test("scans run on the caller's connection when the thread cannot start, logged", async () => {
  const { lines, logger } = capturedLog();
  const answer = new Map([["x86_64-linux", 1]]);
  const here = fakeHere(answer);
  const real = globalThis.Worker;
  // A runtime that refuses threads (as one without the module would).
  globalThis.Worker = class {
    constructor() {
      throw new Error("threads refused");
    }
  } as unknown as typeof Worker;
  let scanner;
  try {
    scanner = startScanner(tempFile(), { runHere: here.runHere, logger });
  } finally {
    globalThis.Worker = real;
  }
  assert.equal(await scanner.scan("queueLengthBySystem", []), answer);
  await scanner.stop();
  assert.deepEqual(here.calls, ["queueLengthBySystem"]);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /background scans unavailable/);
  assert.match(lines[0], /threads refused/);
});
