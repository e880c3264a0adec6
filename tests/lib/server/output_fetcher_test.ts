import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  OutputFetcher,
  type OutputFetcherOptions,
} from "../../../lib/server/output_fetcher.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import {
  eventually,
  fakeSpawner,
  type Fixture,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";
import { withFixture } from "./_with_fixture.ts";
import {
  connectionRefused,
  failingStore,
  readOnly,
} from "../store/_failing_store.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import { openBuildGate } from "../store/_postgres_gates.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";
import postgres from "postgres";

const URL_ = "http://127.0.0.1:5558";

/** A build of `name` started on worker "W". */
async function startedBuild(f: Fixture, name: string, i: number) {
  const [drv] = await f.addJobs([job(name, i)]);
  await f.store.upsertWorker({
    name: "W",
    address: "127.0.0.1",
    machine: "m",
    systems: ["x86_64-linux"],
    lastSeen: 0,
    timeoutSeconds: 120,
  });
  await f.store.popBuild("W", ["x86_64-linux"], 1);
  assert.ok(await f.store.markStarted(drv, "W", "/log", 1));
  return drv;
}

/** The fetch of `drv`'s outputs from worker "W", published at {@link URL_}. */
function fromW(drv: string) {
  return { drv, url: URL_, worker: "W" };
}

/**
 * A build of `name` started on worker "W" whose fetch is owed: saved in
 * the store, as a server does before it fetches, to resume it after a
 * restart.
 */
async function owedFetch(f: Fixture, name: string) {
  const drv = await startedBuild(f, name, 1);
  const request = fromW(drv);
  await f.store.saveOwedFetches([request]);
  return { drv, request };
}

/** Runs the fake clock until the fetcher is idle. */
async function settle(f: Fixture, fetcher: OutputFetcher) {
  let idle = false;
  fetcher.idle().then(() => (idle = true));
  for (let i = 0; i < 2000 && !idle; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1));
    await f.clock.advance(250);
  }
  assert.ok(idle, "fetcher never finished");
}

function fetcherFor(
  f: Fixture,
  narinfo: (url: string) => number,
  substitute: () => number,
  calls: string[][],
  probes: string[],
) {
  return new OutputFetcher({
    store: f.store,
    guix: new Guix({
      logger: f.logger,
      spawn: fakeSpawner(
        () => ({ code: substitute(), stderr: "no luck\n" }),
        calls,
      ),
    }),
    clock: f.clock,
    logger: f.logger,
    retryDelayMs: 1000,
    maxRetryDelayMs: 8000,
    deadlineMs: 60_000,
    fetch: (input) => {
      probes.push(String(input));
      return Promise.resolve(
        new Response("", { status: narinfo(String(input)) }),
      );
    },
  });
}

/**
 * A fetcher whose daemon substitutes at once and whose narinfo probes,
 * recorded in `probes`, get `status()`.
 */
function substitutingFetcher(
  f: Fixture,
  probes: string[],
  status: () => number,
  extra: Partial<OutputFetcherOptions> = {},
) {
  return new OutputFetcher({
    store: f.store,
    guix: new Guix({
      logger: f.logger,
      spawn: fakeSpawner(() => ({ code: 0, stderr: "" }), []),
    }),
    clock: f.clock,
    logger: f.logger,
    fetch: (input) => {
      probes.push(String(input));
      return Promise.resolve(new Response("", { status: status() }));
    },
    ...extra,
  });
}

Deno.test({
  name:
    "C12: 404 narinfos right after the build are retried with back-off; the daemon is asked only once they exist",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "baking", 1);
      const calls: string[][] = [];
      const probes: string[] = [];
      let published = false;
      const fetcher = fetcherFor(
        f,
        () => published ? 200 : 404,
        () => 0,
        calls,
        probes,
      );
      fetcher.enqueue(fromW(drv));
      assert.ok(fetcher.has(drv));
      for (let i = 0; i < 50 && probes.length < 4; i++) {
        await f.clock.advance(1000);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      assert.ok(probes.length >= 4, `${probes.length} probes`);
      assert.equal(calls.length, 0, "no substitution while 404");
      assert.equal(await f.status(drv), BuildStatus.started);
      assert.match(
        probes[0],
        /^http:\/\/127\.0\.0\.1:5558\/[0-9a-z]{32}\.narinfo$/,
      );
      published = true;
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      assert.equal(calls.length, 1);
      assert.ok(calls[0].includes("--max-jobs=0"));
      assert.ok(calls[0].includes(`--substitute-urls=${URL_}`));
      const retries = f.lines.filter((l) =>
        l.startsWith("warn output fetch retried")
      );
      assert.ok(retries.length >= 4);
      assert.ok(!fetcher.has(drv));
    }),
});

Deno.test({
  name:
    "C12: outputs never published fail the build as failed-other with a reason, never succeeded",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "never", 1);
      const calls: string[][] = [];
      const probes: string[] = [];
      const fetcher = fetcherFor(f, () => 404, () => 0, calls, probes);
      fetcher.enqueue(fromW(drv));
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.failedOther);
      assert.equal(calls.length, 0);
      const line = f.lines.find((l) =>
        l.startsWith("error outputs unavailable")
      );
      assert.ok(line && line.includes("not published yet"), line);
      // Back-off: the probes thin out (1, 2, 4, 8, 8, ... s), not one a tick.
      assert.ok(probes.length <= 12, `${probes.length} probes in 60 s`);
    }),
});

Deno.test({
  name:
    "C12: a daemon that cannot substitute (unauthorized key) ends failed-other after the deadline",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "unsigned", 1);
      const calls: string[][] = [];
      const fetcher = fetcherFor(f, () => 200, () => 1, calls, []);
      fetcher.enqueue(fromW(drv));
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.failedOther);
      assert.ok(calls.length > 1, "retried");
    }),
});

Deno.test({
  name: "a fetch stops quietly when its build is canceled meanwhile",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "cancel", 1);
      const fetcher = fetcherFor(f, () => 404, () => 0, [], []);
      fetcher.enqueue(fromW(drv));
      await f.clock.advance(1000);
      const id = (await f.store.getBuildByDerivation(drv))!.id;
      await f.store.cancelBuild(id, 2);
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.canceled);
      assert.ok(
        !f.lines.some((l) => l.startsWith("error outputs unavailable")),
      );
    }),
});

Deno.test({
  name: "a result for a build the worker does not run is ignored",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("nobody", 1)]);
      const calls: string[][] = [];
      const fetcher = fetcherFor(f, () => 200, () => 0, calls, []);
      fetcher.enqueue(fromW(drv));
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.scheduled);
      assert.equal(calls.length, 0);
    }),
});

Deno.test({
  name:
    "a trigger substitute URL is asked for each output's narinfo once the build succeeded",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "triggered", 7);
      const probes: string[] = [];
      const fetcher = substitutingFetcher(f, probes, () => 200, {
        triggerUrl: "http://127.0.0.1:5999/",
      });
      fetcher.enqueue(fromW(drv));
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      const build = await f.store.getBuildByDerivation(drv);
      const hash = build!.outputs[0].path.split("/").pop()!.slice(0, 32);
      // First the worker's publish (is it there?), then the trigger.
      assert.deepEqual(probes, [
        `${URL_}/${hash}.narinfo`,
        `http://127.0.0.1:5999/${hash}.narinfo`,
      ]);
      await fetcher.close();
    }),
});

Deno.test({
  name:
    "close() returns the fetches it stopped, queued and running, but none that recorded a result",
  fn: () =>
    withFixture(async (f) => {
      const done = await startedBuild(f, "done", 1);
      const running = await startedBuild(f, "running", 2);
      const queued = await startedBuild(f, "queued", 3);
      const probes: string[] = [];
      // Only the first build's outputs are published.
      const fetcher = substitutingFetcher(
        f,
        probes,
        () => probes.length === 1 ? 200 : 404,
        { concurrency: 1 },
      );
      fetcher.enqueue({ drv: done, url: URL_, worker: "W" });
      fetcher.enqueue({ drv: running, url: URL_, worker: "W" });
      fetcher.enqueue({ drv: queued, url: URL_, worker: "W" });
      // The second fetch found nothing published and waits to retry.
      for (let i = 0; i < 1000 && probes.length < 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      assert.equal(probes.length, 2);
      assert.deepEqual(await fetcher.close(), [
        { drv: queued, url: URL_, worker: "W" },
        { drv: running, url: URL_, worker: "W" },
      ]);
      assert.equal(await f.status(done), BuildStatus.succeeded);
      assert.equal(await f.status(running), BuildStatus.started);
      assert.deepEqual(await fetcher.close(), [], "returned once");
    }),
});

Deno.test({
  name:
    "a stale worker's result of a build drops nothing: the holder's queued fetch still records the success",
  fn: () =>
    withFixture(async (f) => {
      const first = await startedBuild(f, "first", 1);
      const handedAgain = await startedBuild(f, "again", 2);
      const fetcher = substitutingFetcher(f, [], () => 200, {
        concurrency: 1,
      });
      // The first fetch runs; the holder's (W's) waits behind it when a
      // worker the build was taken from reports it too.
      fetcher.enqueue({ drv: first, url: URL_, worker: "W" });
      fetcher.enqueue({ drv: handedAgain, url: URL_, worker: "W" });
      assert.equal(
        fetcher.enqueue({ drv: handedAgain, url: URL_, worker: "EXPIRED" }),
        true,
      );
      assert.ok(fetcher.has(handedAgain, "W") && fetcher.has(handedAgain));
      await settle(f, fetcher);
      assert.equal(await f.status(first), BuildStatus.succeeded);
      assert.equal(await f.status(handedAgain), BuildStatus.succeeded);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn result ignored") && l.includes("worker=EXPIRED")
        ),
      );
      await fetcher.close();
    }),
});

Deno.test({
  name:
    "the fetch deadline counts the time that passed: a forward step of the wall clock does not fail the build",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "stepped", 1);
      const probes: string[] = [];
      // Published from the third probe on.
      const fetcher = fetcherFor(
        f,
        () => (probes.length > 2 ? 200 : 404),
        () => 0,
        [],
        probes,
      );
      fetcher.enqueue(fromW(drv));
      await eventually(() => probes.length === 1, "first probe");
      await f.clock.step(86_400_000);
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
    }),
});

Deno.test({
  name:
    "a database down while a result is fetched: the fetch waits for it and records the success, the build never stays started",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "dbdown", 1);
      // The store as a server sees PostgreSQL restarting: every call fails
      // while `down`, as npm:postgres fails a query it cannot connect for.
      let down = true;
      const store = failingStore(
        f.store,
        () => down ? connectionRefused() : null,
      );
      const probes: string[] = [];
      const fetcher = substitutingFetcher(f, probes, () => 200, { store });
      fetcher.enqueue(fromW(drv));
      for (let i = 0; i < 40; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        await f.clock.advance(1000);
      }
      assert.ok(fetcher.has(drv), "the fetch goes on while the store is down");
      const failures = f.lines.filter((l) =>
        l.startsWith("error output fetch store failed")
      );
      assert.ok(failures.length >= 2, f.lines.join("\n"));
      assert.match(failures[0], /step=owner/);
      assert.match(failures[0], /ECONNREFUSED 127\.0\.0\.1:54471/);
      down = false;
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      assert.ok(
        !f.lines.some((l) => l.startsWith("error output fetch crashed")),
      );
    }),
});

Deno.test({
  name:
    "the fetch deadline counts the time that passed: a step of the wall clock back an hour does not stretch it",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "stepped-back", 1);
      const probes: string[] = [];
      const fetcher = fetcherFor(f, () => 404, () => 0, [], probes);
      fetcher.enqueue(fromW(drv));
      await eventually(() => probes.length === 1, "first probe");
      await f.clock.step(-3_600_000);
      const start = f.clock.monotonic();
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.failedOther);
      assert.ok(f.clock.monotonic() - start <= 60_000);
    }),
});

Deno.test({
  name:
    "a database that fails the success record: the record is tried again once it answers, not dropped",
  fn: () =>
    withFixture(async (f) => {
      const drv = await startedBuild(f, "dbwrite", 1);
      let failWrites = 3;
      const store = failingStore(
        f.store,
        (method) =>
          method === "completeBuild" && failWrites-- > 0 ? readOnly() : null,
      );
      const fetcher = substitutingFetcher(f, [], () => 200, { store });
      fetcher.enqueue(fromW(drv));
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      const failures = f.lines.filter((l) =>
        l.startsWith("error output fetch store failed")
      );
      assert.equal(failures.length, 3, f.lines.join("\n"));
      assert.match(failures[0], /step=success/);
    }),
});

Deno.test({
  name:
    "a store step failing otherwise than by the database being unavailable (a bug) stops the fetch after one error line, its saved record kept for the next start",
  fn: () =>
    withFixture(async (f) => {
      const { drv, request } = await owedFetch(f, "buggy");
      const store = failingStore(
        f.store,
        (method) =>
          method === "completeBuild"
            ? new TypeError(
              "Cannot read properties of undefined (reading 'changes')",
            )
            : null,
      );
      const fetcher = substitutingFetcher(f, [], () => 200, { store });
      fetcher.enqueue(request);
      await settle(f, fetcher);
      assert.equal(fetcher.has(drv), false);
      // Time passes: nothing more is tried, nor logged.
      for (let i = 0; i < 20; i++) await f.clock.advance(30_000);
      const stopped = f.lines.filter((l) =>
        l.startsWith("error output fetch stopped ")
      );
      assert.equal(stopped.length, 1, f.lines.join("\n"));
      assert.ok(
        stopped[0].startsWith(
          `error output fetch stopped drv=${drv} worker=W step=success error="Cannot read properties of undefined (reading 'changes')" `,
        ),
        stopped[0],
      );
      assert.ok(
        !f.lines.some((l) =>
          l.startsWith("error output fetch store failed") ||
          l.startsWith("error output fetch crashed") ||
          l.startsWith("warn output fetch retried")
        ),
        f.lines.join("\n"),
      );
      assert.equal(await f.status(drv), BuildStatus.started);
      assert.deepEqual(await f.store.owedFetches(), [request]);
      assert.deepEqual(await fetcher.close(), [request]);

      // The next start resumes it, and records the success.
      const next = substitutingFetcher(f, [], () => 200);
      assert.equal(await next.resumeOwed(), 1);
      await settle(f, next);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      assert.deepEqual(await f.store.owedFetches(), []);
    }),
});

/**
 * A logger writing to `f`'s lines, whose write of the first `failures`
 * "output fetch retried" lines throws, as a write to a standard error whose
 * reader is gone does: an exception out of the fetch's own code, not a
 * failure to get the outputs.
 */
function failingLogger(f: Fixture, failures: number): Logger {
  return createLogger({
    level: "debug",
    timestamps: false,
    sink(line) {
      if (line.startsWith("warn output fetch retried") && failures > 0) {
        failures--;
        throw new Error("Broken pipe (os error 32) (injected)");
      }
      f.lines.push(line);
    },
  });
}

Deno.test({
  name:
    "a fetch that crashes (an exception of its own) is run again after a back-off while the server runs: still active meanwhile, the build succeeds, its saved record forgotten",
  fn: () =>
    withFixture(async (f) => {
      const { drv, request } = await owedFetch(f, "crashed");
      const probes: string[] = [];
      // Published from the second probe on: the first is retried, and the
      // retry's log line crashes the fetch.
      const fetcher = substitutingFetcher(
        f,
        probes,
        () => probes.length > 1 ? 200 : 404,
        { logger: failingLogger(f, 1), retryDelayMs: 1000 },
      );
      fetcher.enqueue(request);
      await eventually(
        () => f.lines.some((l) => l.startsWith("error output fetch crashed")),
        "the fetch crashed",
      );
      assert.ok(fetcher.has(drv, "W"), "active while it waits to run again");
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      assert.deepEqual(await f.store.owedFetches(), []);
      const crashed = f.lines.filter((l) =>
        l.startsWith("error output fetch crashed")
      );
      assert.equal(crashed.length, 1, f.lines.join("\n"));
      assert.ok(
        crashed[0].startsWith(
          `error output fetch crashed drv=${drv} worker=W crash=1 retryMs=1000 error="Broken pipe (os error 32) (injected)" `,
        ),
        crashed[0],
      );
    }),
});

Deno.test({
  name:
    "a fetch that crashes again and again ends at its deadline, counted from its first try: failed-other, its saved record forgotten",
  fn: () =>
    withFixture(async (f) => {
      const { drv, request } = await owedFetch(f, "crashing");
      const fetcher = substitutingFetcher(f, [], () => 404, {
        logger: failingLogger(f, Infinity),
        retryDelayMs: 1000,
        maxRetryDelayMs: 8000,
        deadlineMs: 60_000,
      });
      fetcher.enqueue(request);
      await settle(f, fetcher);
      assert.equal(await f.status(drv), BuildStatus.failedOther);
      assert.deepEqual(await f.store.owedFetches(), []);
      assert.ok(
        f.lines.filter((l) => l.startsWith("error output fetch crashed"))
          .length > 1,
      );
    }),
});

Deno.test({
  name:
    "a fetch that records its build leaves its saved record to the store's completion, one write fewer; one whose build is no longer its worker's forgets it itself",
  fn: () =>
    withFixture(async (f) => {
      const recorded = await startedBuild(f, "recorded", 1);
      const elsewhere = await startedBuild(f, "elsewhere", 2);
      // Taken back and handed to another worker before its fetch runs.
      assert.ok(await f.store.requeueBuild(elsewhere, 2, { worker: "W" }));
      const forgotten: string[] = [];
      const store = Object.create(f.store);
      store.forgetOwedFetch = (fetch: { drv: string; worker: string }) => {
        forgotten.push(fetch.drv);
        return f.store.forgetOwedFetch(fetch);
      };
      const requests = [recorded, elsewhere].map((drv) => ({
        drv,
        worker: "W",
        url: URL_,
      }));
      await f.store.saveOwedFetches(requests);
      const fetcher = substitutingFetcher(f, [], () => 200, { store });
      for (const request of requests) fetcher.enqueue(request);
      await settle(f, fetcher);
      assert.equal(await f.status(recorded), BuildStatus.succeeded);
      assert.equal(await f.status(elsewhere), BuildStatus.scheduled);
      assert.deepEqual(forgotten, [elsewhere]);
      assert.deepEqual(await f.store.owedFetches(), []);
    }),
});

Deno.test({
  name:
    `a store step whose PostgreSQL query runs past its deadline (a lock held long by another transaction) is tried again, not taken for a bug: the success is recorded once the lock goes${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    const schema = `lorica_fetch_slow_${Date.now().toString(36)}_${Deno.pid}`;
    // A deadline of 1 s, as --database-timeout=1 sets.
    const store = await openPostgresStore(TEST_POSTGRES_URL!, {
      schema,
      queryTimeoutSeconds: 1,
    });
    const f = await startFixture({ store });
    try {
      const drv = await startedBuild(f, "slow", 1);
      // Another transaction holds the build's row, as a long one would.
      const gate = await openBuildGate(TEST_POSTGRES_URL!, schema, drv);
      const fetcher = substitutingFetcher(f, [], () => 200);
      try {
        fetcher.enqueue(fromW(drv));
        await eventually(
          () =>
            f.lines.some((l) =>
              l.startsWith(`error output fetch store failed drv=${drv} `) ||
              l.startsWith(`error output fetch stopped drv=${drv} `)
            ),
          "the step timed out",
        );
      } finally {
        await gate.open();
      }
      await settle(f, fetcher);
      assert.deepEqual(
        f.lines.filter((l) => l.startsWith("error output fetch stopped ")),
        [],
      );
      assert.match(
        f.lines.find((l) => l.startsWith("error output fetch store failed "))!,
        /step=success attempt=1 .*past its deadline/,
      );
      assert.equal(await f.status(drv), BuildStatus.succeeded);
      assert.deepEqual(await store.owedFetches(), []);
      await fetcher.close();
    } finally {
      await f.close();
      const sql = postgres(TEST_POSTGRES_URL!, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await sql.end({ timeout: 1 });
    }
  },
});
