// C05: a dependency that failed in an earlier evaluation is not forgotten.

import assert from "node:assert/strict";
import { runEvaluation } from "../../lib/server/evaluation_runner.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { BuildStatus } from "../../lib/store/types.ts";
import { makeDaemon, makeRoot, writeScenario } from "../fake-guix/test_env.ts";
import {
  evaluationOptions,
  fakeGuix,
  fakeLocalBuilder,
  testSpecification,
} from "../lib/server/_guix_fixture.ts";

const SPEC = testSpecification("c05", {
  build: { type: "packages", params: ["p", "a"] },
});

function scenario(bBytes: number) {
  return {
    packages: [
      { name: "a", version: "1", behaviour: { seconds: 0, exit: 1 } },
      {
        name: "b",
        version: "1",
        behaviour: { seconds: 0, outputBytes: bBytes },
      },
      {
        name: "p",
        version: "1",
        inputs: ["a", "b"],
        behaviour: { seconds: 0 },
      },
    ],
  };
}

Deno.test("C05: a dependent of an earlier failure fails at once; restarting the failure frees it", async () => {
  const root = await makeRoot();
  const store = openSqliteStore(`${root}/lorica.db`);
  try {
    await store.upsertSpecification(SPEC);
    const evaluate = async (bBytes: number) => {
      const daemon = await makeDaemon(root, "local", {
        FAKE_GUIX_SCENARIO: await writeScenario(root, scenario(bBytes)),
      });
      const outcome = await runEvaluation(
        SPEC,
        evaluationOptions(root, store, fakeGuix(daemon)),
      );
      const builder = fakeLocalBuilder(root, store, daemon);
      const jobs = await store.listJobs(outcome.id);
      const build = async (name: string) =>
        (await store.getBuild(jobs.find((j) => j.name === name)!.build))!;
      return { outcome, builder, build };
    };

    // Evaluation 1: A fails, P is failed-dependency.
    const one = await evaluate(1024);
    for (let batch; (batch = await one.builder.takeBatch()).length > 0;) {
      await one.builder.buildBatch(batch);
    }
    const a1 = await one.build("a.x86_64-linux");
    const p1 = await one.build("p.x86_64-linux");
    assert.equal(a1.status, BuildStatus.failed);
    assert.equal(p1.status, BuildStatus.failedDependency);

    // Evaluation 2: B changed (new P), A's .drv is byte-identical.
    const two = await evaluate(2048);
    const a2 = await two.build("a.x86_64-linux");
    const p2 = await two.build("p.x86_64-linux");
    assert.equal(a2.id, a1.id, "A is the same build, not a new one");
    assert.notEqual(p2.derivation, p1.derivation);
    assert.equal(p2.status, BuildStatus.failedDependency);
    assert.ok((await store.buildDependencies(p2.id)).includes(a1.id));
    // Nothing to dispatch: neither A nor P is rebuilt.
    assert.deepEqual(await two.builder.takeBatch(), []);

    // An operator restarts A and it succeeds: P becomes dispatchable.
    assert.equal((await store.restartBuild(a1.id, 1)).changed, true);
    const taken = await store.popBuild("w", ["x86_64-linux"], 2);
    assert.equal(taken?.id, a1.id);
    await store.completeBuild(a1.derivation, BuildStatus.succeeded, {
      worker: "w",
      now: 3,
    });
    // (P of evaluation 1 was freed as well: both may now be dispatched.)
    const freed = [
      await store.popBuild("w", ["x86_64-linux"], 4),
      await store.popBuild("w", ["x86_64-linux"], 4),
    ].map((build) => build?.id);
    assert.ok(freed.includes(p2.id), `P not dispatchable: ${freed}`);
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});
