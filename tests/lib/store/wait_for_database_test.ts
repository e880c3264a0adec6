import assert from "node:assert/strict";
import { waitForDatabase } from "../../../lib/store/wait_for_database.ts";
import { StoreError } from "../../../lib/store/types.ts";
import { createLogger } from "../../../lib/log.ts";
import type { Clock } from "../../../lib/clock.ts";

/** A clock whose sleeps end at once, recording how long they were. */
function recordingClock(slept: number[]): Clock {
  return {
    now: () => 0,
    monotonic: () => 0,
    sleep(ms, signal) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      slept.push(ms);
      return Promise.resolve();
    },
  };
}

/** What a stopped PostgreSQL answers a connection with. */
function refused(): Error {
  return Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
    code: "ECONNREFUSED",
  });
}

function fakeStore() {
  return {
    closed: false,
    close() {
      this.closed = true;
      return Promise.resolve();
    },
  };
}

function fixture() {
  const slept: number[] = [];
  const lines: string[] = [];
  const logger = createLogger({
    sink: (line) => lines.push(line),
    timestamps: false,
  });
  const controller = new AbortController();
  const options = {
    clock: recordingClock(slept),
    logger,
    shown: "postgres://ci:***@db/farm",
    signal: controller.signal,
  };
  return { slept, lines, controller, options };
}

Deno.test("waitForDatabase() tries again, 1 s doubling to 30 s apart, while the database is down, logging each wait", async () => {
  const { slept, lines, options } = fixture();
  const store = fakeStore();
  let attempts = 0;
  const opened = await waitForDatabase(() => {
    attempts++;
    return attempts <= 7 ? Promise.reject(refused()) : Promise.resolve(store);
  }, options);
  assert.equal(opened, store);
  assert.equal(attempts, 8);
  assert.deepEqual(slept, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.equal(lines.length, 7);
  assert.equal(
    lines[0],
    "warn database unavailable database=postgres://ci:***@db/farm " +
      'error="connect ECONNREFUSED 127.0.0.1:5432" retryMs=1000',
  );
});

Deno.test("waitForDatabase() gives up at once on an error that is not the database being down", async () => {
  const cases = [
    Object.assign(new Error("password authentication failed"), {
      code: "28P01",
    }),
    Object.assign(new Error('database "farm" does not exist'), {
      code: "3D000",
    }),
    new StoreError("schema version 99 is newer", "schema-too-new", 99),
  ];
  for (const error of cases) {
    const { slept, lines, options } = fixture();
    await assert.rejects(
      waitForDatabase(() => Promise.reject(error), options),
      (thrown) => thrown === error,
    );
    assert.deepEqual(slept, []);
    assert.deepEqual(lines, []);
  }
});

Deno.test("waitForDatabase() resolves null when stopped between attempts", async () => {
  const { slept, controller, options } = fixture();
  let attempts = 0;
  const opened = await waitForDatabase(() => {
    if (++attempts === 3) controller.abort();
    return Promise.reject(refused());
  }, options);
  assert.equal(opened, null);
  assert.equal(attempts, 3);
  assert.deepEqual(slept, [1000, 2000]);
});

Deno.test("waitForDatabase() resolves null at once when stopped during an attempt, closing what it opens later", async () => {
  const { controller, options } = fixture();
  const store = fakeStore();
  const attempt = Promise.withResolvers<typeof store>();
  const waiting = waitForDatabase(() => attempt.promise, options);
  controller.abort();
  assert.equal(await waiting, null);
  attempt.resolve(store);
  await attempt.promise;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.ok(store.closed);
});
