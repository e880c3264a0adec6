import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import {
  registerInChunks,
  REGISTRATION_CHUNK_JOBS,
} from "../../../lib/store/chunked_registration.ts";
import { STATISTICS_REFRESH_MIN } from "../../../lib/store/sql_register.ts";
import { job, specification } from "./store_contract.ts";
import { sqliteTempFiles } from "./_sqlite_fixture.ts";

const { tempFile } = sqliteTempFiles("lorica-chunked-registration-test-");

// Issue 8: on SQLite a registration holds the one write transaction until
// its commit, and a dispatcher turn (a batch) waited for all of it.
Deno.test("registerInChunks() on SQLite lets a batch issued meanwhile pop a build between two chunks", async () => {
  const store = openSqliteStore(tempFile());
  try {
    await store.upsertSpecification(specification("guix"));
    const id = await store.addEvaluation("guix", [], 1000);
    const jobs = Array.from({ length: 30 }, (_, i) => job(`j${i}`));
    const registering = registerInChunks(store, id, jobs, {
      priority: 9,
      now: () => 1100,
      chunkJobs: 10,
    });
    // As a dispatcher turn: it waits for the transaction, which the first
    // chunk holds by now.
    const turn = store.batch(async (tx) => ({
      registered: (await tx.listJobs(id)).length,
      popped: await tx.popBuild("w", ["x86_64-linux"], 1200),
    }));
    const [{ registered, popped }, result] = await Promise.all([
      turn,
      registering,
    ]);
    assert.ok(
      registered > 0 && registered < jobs.length,
      `the turn ran with ${registered} of ${jobs.length} jobs registered`,
    );
    assert.equal(popped?.evaluation, id);
    assert.equal(result.created, jobs.length);
    assert.equal((await store.listJobs(id)).length, jobs.length);
  } finally {
    await store.close();
  }
});

// An idle farm's registration does not rest between chunks: the rests
// made a 50,000-job registration at a million builds take twice as long.
Deno.test("registerInChunks() on SQLite rests only after a chunk during which a batch was begun", async () => {
  const store = openSqliteStore(tempFile());
  try {
    await store.upsertSpecification(specification("guix"));
    const id = await store.addEvaluation("guix", [], 1000);
    const jobs = Array.from({ length: 30 }, (_, i) => job(`j${i}`));
    const contention: boolean[] = [];
    const registering = registerInChunks(store, id, jobs, {
      priority: 9,
      now: () => 1100,
      chunkJobs: 10,
      betweenChunks: (_chunkMs, contended) => {
        contention.push(contended);
        return Promise.resolve();
      },
    });
    // A dispatcher turn begun while the first chunk runs; none during the
    // second.
    await store.batch((tx) => tx.popBuild("w", ["x86_64-linux"], 1200));
    const result = await registering;
    assert.equal(result.created, jobs.length);
    assert.deepEqual(contention, [true, false]);
  } finally {
    await store.close();
  }
});

Deno.test("registerInChunks() rests after every chunk with a store that cannot count its batches", async () => {
  const contention: boolean[] = [];
  await registerInChunks(
    {
      registerBuilds: (_id, chunk) =>
        Promise.resolve({ created: chunk.length, known: 0, blocked: 0 }),
    },
    1,
    Array.from({ length: 3 }, (_, i) => job(`j${i}`)),
    {
      priority: 9,
      now: () => 1100,
      chunkJobs: 1,
      betweenChunks: (_chunkMs, contended) => {
        contention.push(contended);
        return Promise.resolve();
      },
    },
  );
  assert.deepEqual(contention, [true, true]);
});

// The first chunk of a first large evaluation into a fresh PostgreSQL
// database has its tables analyzed only if it adds that many builds.
Deno.test("REGISTRATION_CHUNK_JOBS is not below STATISTICS_REFRESH_MIN", () => {
  assert.ok(REGISTRATION_CHUNK_JOBS >= STATISTICS_REFRESH_MIN);
});
