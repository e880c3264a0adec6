import assert from "node:assert/strict";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import {
  registerInChunks,
  REGISTRATION_CHUNK_JOBS,
  RegistrationStoppedError,
  restAfterChunk,
} from "../../../lib/store/chunked_registration.ts";
import { STATISTICS_REFRESH_MIN } from "../../../lib/store/sql_register.ts";
import { job, specification } from "./store_contract.ts";
import { sqliteTempFiles } from "./_sqlite_fixture.ts";
import { stillClock, tasksDueRun } from "./_still_clock.ts";

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

// A clean stop must not wait for a rest: with the server's stop timeout
// over, systemd kills it.
Deno.test("restAfterChunk() ends as soon as the stop comes, however long the rest", async () => {
  const stop = new AbortController();
  let ended = false;
  restAfterChunk(3_600_000, true, stop.signal, stillClock).then(() =>
    ended = true
  );
  await tasksDueRun();
  assert.equal(ended, false, "ended before the stop");
  stop.abort();
  await tasksDueRun();
  assert.equal(ended, true, "rests on after the stop");
  // A stop that came before: no rest at all.
  assert.equal(
    await restAfterChunk(3_600_000, true, stop.signal, stillClock),
    undefined,
  );
});

Deno.test("restAfterChunk() without a stop rests the last chunk's time after a contended chunk, nothing after a quiet one", async () => {
  const rests: number[] = [];
  const clock = {
    sleep(ms: number) {
      rests.push(ms);
      return Promise.resolve();
    },
  };
  const signal = new AbortController().signal;
  await restAfterChunk(250, true, signal, clock);
  await restAfterChunk(250, false, signal, clock);
  await restAfterChunk(70, true, undefined, clock);
  assert.deepEqual(rests, [250, 0, 70]);
});

Deno.test("registerInChunks() stopped before its first chunk registers nothing", async () => {
  let registrations = 0;
  const stop = new AbortController();
  stop.abort();
  const error = await registerInChunks(
    {
      registerBuilds(_id, chunk) {
        registrations++;
        return Promise.resolve({ created: chunk.length, known: 0, blocked: 0 });
      },
    },
    7,
    Array.from({ length: 3 }, (_, i) => job(`j${i}`)),
    { priority: 9, now: () => 1100, chunkJobs: 1, signal: stop.signal },
  ).then(() => null, (error: unknown) => error);
  assert.ok(error instanceof RegistrationStoppedError, String(error));
  assert.equal(registrations, 0);
  assert.equal(
    error.message,
    "Registration of the builds of evaluation 7 stopped by a server stop after 0 of 3 jobs",
  );
});

// The first chunk of a first large evaluation into a fresh PostgreSQL
// database has its tables analyzed only if it adds that many builds.
Deno.test("REGISTRATION_CHUNK_JOBS is not below STATISTICS_REFRESH_MIN", () => {
  assert.ok(REGISTRATION_CHUNK_JOBS >= STATISTICS_REFRESH_MIN);
});
