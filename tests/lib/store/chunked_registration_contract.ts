// What registering in chunks (lib/store/chunked_registration.ts) must
// keep on every backend, through the Store interface only: each commit
// leaves dependencies right, so that what is dispatched between two
// chunks has its inputs built, and a registration cut short leaves what
// an abort and the next evaluation complete.

import assert from "node:assert/strict";
import {
  type ChunkedRegistrationOptions,
  registerInChunks,
  RegistrationStoppedError,
  restAfterChunk,
} from "../../../lib/store/chunked_registration.ts";
import {
  BuildStatus,
  EvaluationStatus,
  StoreError,
} from "../../../lib/store/types.ts";
import { drv, job, specification } from "./store_contract.ts";
import { stillClock, tasksDueRun } from "./_still_clock.ts";
import type {
  NewJob,
  RegisterResult,
  Store,
} from "../../../lib/store/types.ts";

/**
 * A small graph given dependents first, as an evaluator may list it: in
 * the order given, chunks of two would register "lib" before "base".
 */
const JOBS: NewJob[] = [
  job("app", { inputs: ["lib", "tool"] }),
  job("lib", { inputs: ["base"] }),
  job("tool", { inputs: ["base"] }),
  job("doc"),
  job("base"),
  job("extra", { inputs: ["app"] }),
  job("more", { inputs: ["doc", "base"] }),
];
const CHUNK_JOBS = 2;

/**
 * The options every test's registration shares: chunks of CHUNK_JOBS, at
 * time 1100, refused once the evaluation has ended. Each test adds what it
 * checks (betweenChunks, signal, a clock of its own).
 */
const FIRST_REGISTRATION = {
  priority: 9,
  now: () => 1100,
  whileStarted: true,
  chunkJobs: CHUNK_JOBS,
};

/**
 * Registers Deno tests named `[name] registerInChunks() ...`; `open` must
 * return a fresh, empty store each call (see storeContract).
 */
export function chunkedRegistrationContract(
  name: string,
  open: () => Promise<Store> | Store,
  options: { ignore?: boolean; needs?: string } = {},
): void {
  function test(title: string, fn: (store: Store) => Promise<void>) {
    Deno.test({
      name: `[${name}] registerInChunks() ${title}${options.needs ?? ""}`,
      ignore: options.ignore ?? false,
      async fn() {
        const store = await open();
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      },
    });
  }

  test("dispatches between chunks only builds whose inputs succeeded", async (store) => {
    const id = await startedEvaluation(store);
    let betweenPops = 0;
    const result = await registerInChunks(store, id, JOBS, {
      ...FIRST_REGISTRATION,
      betweenChunks: async () => {
        betweenPops += await buildWhatIsReady(store);
      },
    });
    assert.deepEqual(result, { created: JOBS.length, known: 0, blocked: 0 });
    // "base" and "doc", say: the registration did not hold dispatch.
    assert.ok(betweenPops > 0, "nothing dispatched between chunks");
    await buildWhatIsReady(store);
    await assertAllSucceeded(store, id);
  });

  test("cut short, leaves builds that an abort and the next evaluation complete", async (store) => {
    const id = await startedEvaluation(store);
    const stop = new Error("server stopped");
    await assert.rejects(
      registerInChunks(store, id, JOBS, {
        ...FIRST_REGISTRATION,
        betweenChunks: () => Promise.reject(stop),
      }),
      (error) => error === stop,
    );
    // As the next start finds it: started, by a process now dead.
    const [left] = await store.listRunningEvaluations();
    assert.equal(left.id, id);
    assert.ok(
      await store.abortStaleEvaluation(id, {
        heartbeat: left.heartbeat,
        now: 2000,
      }),
    );
    // What the first chunk registered is built, its inputs first.
    const registered = (await store.listJobs(id)).map((j) => j.name);
    assert.deepEqual(registered, ["base", "lib"]);
    assert.equal(await buildWhatIsReady(store), 2);

    // The next evaluation of the same commits registers every job.
    const { again, result } = await registerInNextEvaluation(store);
    assert.deepEqual(result, {
      created: JOBS.length - 2,
      known: 2,
      blocked: 0,
    });
    await buildWhatIsReady(store);
    await assertAllSucceeded(store, again);
  });

  test("stopped while a chunk is written, commits it and begins no other; the next evaluation registers the rest", async (store) => {
    const id = await startedEvaluation(store);
    const stop = new AbortController();
    let chunks = 0;
    const stopping: Pick<Store, "registerBuilds"> = {
      registerBuilds(evaluation, chunk, options) {
        chunks++;
        const writing = store.registerBuilds(evaluation, chunk, options);
        // systemd's SIGTERM, while the first chunk is being written.
        stop.abort();
        return writing;
      },
    };
    const error = await registerInChunks(stopping, id, JOBS, {
      ...FIRST_REGISTRATION,
      betweenChunks: () => Promise.resolve(),
      signal: stop.signal,
    }).then(() => null, (error: unknown) => error);
    assert.ok(error instanceof RegistrationStoppedError, String(error));
    assert.equal(chunks, 1);
    assert.deepEqual(
      [error.jobsRegistered, error.jobs, error.registered],
      [CHUNK_JOBS, JOBS.length, { created: 2, known: 0, blocked: 0 }],
    );
    // As the runner ends it.
    assert.ok(await store.finishEvaluation(id, EvaluationStatus.aborted, 1200));
    assert.deepEqual((await store.listJobs(id)).map((j) => j.name), [
      "base",
      "lib",
    ]);
    // Pending, with their dependencies counted: "lib" waits for "base".
    assert.equal(await buildWhatIsReady(store), 2);

    // The next evaluation of the same commits (no stop) registers the rest.
    const { again, result } = await registerInNextEvaluation(store, {
      signal: new AbortController().signal,
    });
    assert.deepEqual(result, {
      created: JOBS.length - 2,
      known: 2,
      blocked: 0,
    });
    await buildWhatIsReady(store);
    await assertAllSucceeded(store, again);
  });

  test("stopped during the rest between two chunks, ends the rest at once and begins no other chunk", async (store) => {
    const id = await startedEvaluation(store);
    const stop = new AbortController();
    const resting = Promise.withResolvers<void>();
    let chunks = 0;
    let settled = false;
    const outcome = registerInChunks(
      {
        registerBuilds(evaluation, chunk, options) {
          chunks++;
          return store.registerBuilds(evaluation, chunk, options);
        },
      },
      id,
      JOBS,
      {
        ...FIRST_REGISTRATION,
        // An hour's rest on a clock where no time passes: only the stop can
        // end it.
        betweenChunks: (_chunkMs, _contended, signal) => {
          resting.resolve();
          return restAfterChunk(3_600_000, true, signal, stillClock);
        },
        signal: stop.signal,
      },
    ).then(() => null, (error: unknown) => error);
    outcome.then(() => settled = true);
    await resting.promise;
    stop.abort();
    await tasksDueRun();
    assert.ok(settled, "the registration rests on after the stop");
    const error = await outcome;
    assert.ok(error instanceof RegistrationStoppedError, String(error));
    assert.equal(chunks, 1);
    assert.equal(error.jobsRegistered, CHUNK_JOBS);
    assert.deepEqual((await store.listJobs(id)).map((j) => j.name), [
      "base",
      "lib",
    ]);
  });

  test("renews the heartbeat at each chunk's own time", async (store) => {
    const id = await startedEvaluation(store);
    let now = 1100;
    await registerInChunks(store, id, JOBS, {
      ...FIRST_REGISTRATION,
      now: () => now,
      betweenChunks: () => {
        now += 60;
        return Promise.resolve();
      },
    });
    const [running] = await store.listRunningEvaluations();
    assert.equal(running.heartbeat, 1100 + 3 * 60);
    const times = new Set(
      await Promise.all(
        JOBS.map(async (j) =>
          (await store.getBuildByDerivation(j.derivation))?.timestamp
        ),
      ),
    );
    assert.deepEqual([...times].sort((a, b) => a! - b!), [
      1100,
      1160,
      1220,
      1280,
    ]);
  });

  test("commits with each chunk the heartbeat read as that chunk ends", async (store) => {
    const id = await startedEvaluation(store);
    const reads: number[] = [];
    await registerInChunks(store, id, JOBS, {
      ...FIRST_REGISTRATION,
      heartbeatNow: () => {
        reads.push(1500 + 10 * reads.length);
        return reads.at(-1)!;
      },
    });
    // One read per chunk, later than the chunks' own time (1100).
    assert.deepEqual(reads, [1500, 1510, 1520, 1530]);
    const [running] = await store.listRunningEvaluations();
    assert.equal(running.heartbeat, 1530);
  });

  test("gives the builds of every chunk the priority it is given, not the specification's", async (store) => {
    // The specification's priority is 9, as is FIRST_REGISTRATION's.
    const id = await startedEvaluation(store);
    await registerInChunks(store, id, JOBS, {
      ...FIRST_REGISTRATION,
      priority: 4,
    });
    const priorities = await Promise.all(
      JOBS.map(async (j) =>
        (await store.getBuildByDerivation(j.derivation))?.priority
      ),
    );
    assert.deepEqual(priorities, JOBS.map(() => 4));
  });

  test("stops at the chunk after its evaluation was aborted, keeping those before", async (store) => {
    const id = await startedEvaluation(store);
    await assert.rejects(
      registerInChunks(store, id, JOBS, {
        ...FIRST_REGISTRATION,
        // Another server judged it stale meanwhile.
        betweenChunks: async () =>
          void await store.abortStaleEvaluation(id, {
            heartbeat: 1100,
            now: 1500,
          }),
      }),
      (error: unknown) =>
        error instanceof StoreError && error.code === "evaluation-ended",
    );
    assert.deepEqual((await store.listJobs(id)).map((j) => j.name), [
      "base",
      "lib",
    ]);
    // Pending, with their dependencies: "lib" waits for "base".
    assert.equal(await buildWhatIsReady(store), 2);
  });

  test("canceled between two chunks, stops there and leaves nothing to build", async (store) => {
    const id = await startedEvaluation(store);
    let cancels = 0;
    await assert.rejects(
      registerInChunks(store, id, JOBS, {
        ...FIRST_REGISTRATION,
        // An administrator cancels it (POST /admin/evaluation/ID/cancel)
        // while its builds are being registered.
        betweenChunks: async () => {
          if (cancels++ === 0) await store.cancelEvaluation(id, 1200);
        },
      }),
      (error: unknown) =>
        error instanceof StoreError && error.code === "evaluation-ended",
    );
    assert.equal(cancels, 1);
    assert.equal((await store.getEvaluation(id))?.status, 2, "not aborted");
    assert.deepEqual(
      (await store.listJobs(id)).map((j) => [j.name, j.status]),
      [["base", BuildStatus.canceled], ["lib", BuildStatus.canceled]],
    );
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 3000), null);
  });

  test("a cancel marks the evaluation canceled, and a restart unmarks it", async (store) => {
    const id = await startedEvaluation(store);
    assert.equal(await store.evaluationCanceled(id), false);
    await store.cancelEvaluation(id, 1200);
    assert.equal(await store.evaluationCanceled(id), true);
    assert.equal((await store.getEvaluation(id))?.status, 2);
    await store.restartEvaluation(id, 1300);
    assert.equal(await store.evaluationCanceled(id), false);
    assert.equal(await store.evaluationCanceled(id + 1000), false);
  });
}

async function startedEvaluation(store: Store): Promise<number> {
  if (await store.getSpecification("guix") === null) {
    await store.upsertSpecification(specification("guix"));
  }
  const owner = { host: "gone", pid: 4242, started: "1" };
  return await store.addEvaluation("guix", [], 1000, { owner });
}

/**
 * The next evaluation of the same commits, after one cut short: starts it
 * and registers every job at time 2100, building what is ready between
 * chunks. Returns its id and what the registration reports, for the test
 * to check.
 */
async function registerInNextEvaluation(
  store: Store,
  options: Pick<ChunkedRegistrationOptions, "signal"> = {},
): Promise<{ again: number; result: RegisterResult }> {
  const again = await startedEvaluation(store);
  const result = await registerInChunks(store, again, JOBS, {
    ...FIRST_REGISTRATION,
    now: () => 2100,
    betweenChunks: async () => void await buildWhatIsReady(store),
    ...options,
  });
  return { again, result };
}

/**
 * Builds what is ready, and what that makes ready, until nothing is:
 * asserts that each build handed out has every input of its job
 * succeeded. Returns how many were built.
 */
async function buildWhatIsReady(store: Store): Promise<number> {
  const inputsOf = new Map(JOBS.map((j) => [j.derivation, j.inputs]));
  let built = 0;
  for (;;) {
    const build = await store.popBuild("w", ["x86_64-linux"], 3000);
    if (build === null) return built;
    for (const input of inputsOf.get(build.derivation)!) {
      const status = (await store.getBuildByDerivation(input))?.status;
      assert.equal(
        status,
        BuildStatus.succeeded,
        `${build.jobName} handed out before its input ${input}`,
      );
    }
    await store.completeBuild(build.derivation, BuildStatus.succeeded, {
      worker: "w",
      now: 3000,
    });
    built++;
  }
}

/** Asserts that evaluation `id` holds every job, each build succeeded. */
async function assertAllSucceeded(store: Store, id: number): Promise<void> {
  const jobs = await store.listJobs(id);
  assert.deepEqual(
    jobs.map((j) => j.name),
    JOBS.map((j) => j.name).sort(),
  );
  for (const j of JOBS) {
    assert.equal(
      (await store.getBuildByDerivation(drv(j.name)))?.status,
      BuildStatus.succeeded,
      j.name,
    );
  }
}
