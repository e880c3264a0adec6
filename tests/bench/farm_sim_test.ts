// The bench's farm: a real dispatcher over ZMTP and its simulated workers.
// Not timed (figures belong to `deno task bench`): what is checked is that
// the bench still runs against the dispatcher as it is, so that a change of
// the dispatcher's needs (a new fetcher method, say) breaks a test, not the
// next benchmark run.

import assert from "node:assert/strict";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { BuildStatus } from "../../lib/store/types.ts";
import { serveDispatcher, simulateWorkers } from "../../bench/farm_sim.ts";
import { makeJobs } from "../../bench/dag.ts";
import { benchSpecification } from "../../bench/bench_spec.ts";

Deno.test("the bench's simulated workers build a small evaluation through the real dispatcher, every build succeeded once and no fetch left owed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-farm-sim-" });
  const store = openSqliteStore(`${dir}/farm.sqlite`);
  const served = await serveDispatcher(store);
  try {
    await store.upsertSpecification(benchSpecification());
    const evaluation = await store.addEvaluation("bench", [], 1);
    const jobs = makeJobs(40, { salt: 7 });
    await store.registerBuilds(evaluation, jobs, { priority: 9, now: 1 });
    const stats = await simulateWorkers(served.port, 4, {
      stop: AbortSignal.timeout(60_000),
      total: jobs.length,
      idleMs: 2,
    });
    assert.equal(stats.builds, jobs.length);
    // The stand-in fetcher records each success as it is reported, a
    // moment after the worker's next request may have gone.
    const unfinished = async () =>
      (await Promise.all(
        jobs.map(async (job) => ({
          job: job.name,
          status: (await store.getBuildByDerivation(job.derivation))?.status,
        })),
      )).filter((build) => build.status !== BuildStatus.succeeded);
    for (let tries = 0; tries < 100; tries++) {
      if ((await unfinished()).length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(await unfinished(), []);
    // As the real fetcher, the stand-in forgets each fetch it ended: the
    // saved ones do not pile up and slow every turn's save down.
    for (let tries = 0; tries < 100; tries++) {
      if ((await store.owedFetches()).length === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(await store.owedFetches(), []);
  } finally {
    await served.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the bench's dispatcher waits for the successes it is recording when closed, and fails when one could not be recorded", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-farm-sim-" });
  const store = openSqliteStore(`${dir}/farm.sqlite`);
  let recording = 0;
  const served = await serveDispatcher({
    ...store,
    async completeBuild(...args) {
      recording++;
      // Slow enough that the close comes first.
      await new Promise((resolve) => setTimeout(resolve, 200));
      await store.completeBuild(...args);
      recording--;
      throw new Error("database gone");
    },
  });
  try {
    await store.upsertSpecification(benchSpecification());
    const evaluation = await store.addEvaluation("bench", [], 1);
    const jobs = makeJobs(3, { salt: 7 });
    await store.registerBuilds(evaluation, jobs, { priority: 9, now: 1 });
    await simulateWorkers(served.port, 1, {
      stop: AbortSignal.timeout(60_000),
      total: 1,
    });
    // The success reaches the server after the worker's last request.
    while (recording === 0) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  } finally {
    await assert.rejects(
      served.close(),
      /successes not recorded: 1 \(first: Error: database gone\)/,
    );
    assert.equal(recording, 0);
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
