// C18: two jobs with the same derivation; an evaluator that dies halfway.

import assert from "node:assert/strict";
import { silentLogger } from "../../lib/log.ts";
import { Guix } from "../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../lib/process.ts";
import { runEvaluation } from "../../lib/server/evaluation_runner.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { EvaluationStatus } from "../../lib/store/types.ts";
import { makeDaemon, makeRoot, writeScenario } from "../fake-guix/test_env.ts";
import {
  evaluationOptions,
  fakeGuix,
  testSpecification,
} from "../lib/server/_guix_fixture.ts";

const SPEC = testSpecification("c18");

const DRV = "/gnu/store/i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv";
const OUT = "/gnu/store/k1fqzbrb4nnlzm1ng6rmkbhkqm8w6z8i-hello-2.12";

/** A `guix` whose evaluator prints `stdout` and exits 0. */
function cannedGuix(stdout: string): Guix {
  const spawn: Spawner = (): Child => {
    const bytes = new TextEncoder().encode(stdout);
    return {
      pid: 0,
      stdout: new Blob([bytes]).stream(),
      stderr: new Blob([]).stream(),
      stdin: null,
      status: Promise.resolve({ code: 0, signal: null }),
      kill() {},
    };
  };
  return new Guix({ logger: silentLogger, spawn });
}

function job(name: string): string {
  return `(job (name "${name}") (derivation "${DRV}") (system "x86_64-linux") (nix-name "hello-2.12") (outputs ("out" "${OUT}")) (inputs) (timeout 100) (max-silent-time 10))\n`;
}

Deno.test("C18: two jobs with one derivation give one build; registering again is a no-op", async () => {
  const root = await makeRoot();
  const store = openSqliteStore(`${root}/lorica.db`);
  try {
    await store.upsertSpecification(SPEC);
    const options = evaluationOptions(
      root,
      store,
      cannedGuix(
        job("hello.x86_64-linux") +
          job("hello-alias.x86_64-linux") + "(done 2)\n",
      ),
    );
    const first = await runEvaluation(SPEC, options);
    assert.equal(first.status, EvaluationStatus.succeeded);
    assert.equal(first.jobs, 2);
    assert.equal(first.created, 1);
    const jobs = await store.listJobs(first.id);
    assert.deepEqual(jobs.map((j) => j.name), [
      "hello-alias.x86_64-linux",
      "hello.x86_64-linux",
    ]);
    assert.equal(jobs[0].build, jobs[1].build);

    // The same evaluation registered again: nothing new, no crash.
    const again = await store.registerBuilds(first.id, [], {
      priority: 9,
      now: 1,
    });
    assert.equal(again.created, 0);
    const second = await runEvaluation(SPEC, options);
    assert.equal(second.status, EvaluationStatus.succeeded);
    assert.equal(second.created, 0);
    assert.equal((await store.queue({}, 10)).length, 1);
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("C18: an evaluator exiting 1 or SIGKILLed halfway ends failed or aborted; the next one runs", async () => {
  const root = await makeRoot();
  const packages = [
    { name: "a", version: "1" },
    { name: "b", version: "1" },
    { name: "c", version: "1" },
  ];
  const store = openSqliteStore(`${root}/lorica.db`);
  try {
    await store.upsertSpecification(SPEC);
    const run = async (scenario: unknown) => {
      const daemon = await makeDaemon(root, "server", {
        FAKE_GUIX_SCENARIO: await writeScenario(root, scenario),
      });
      return await runEvaluation(
        SPEC,
        evaluationOptions(root, store, fakeGuix(daemon)),
      );
    };
    const exited = await run({ packages, evaluationCrash: { afterJobs: 2 } });
    const killed = await run({
      packages,
      evaluationCrash: { afterJobs: 1, signal: "SIGKILL" },
    });
    for (
      const [outcome, status] of [
        [exited, EvaluationStatus.failed],
        [killed, EvaluationStatus.aborted],
      ] as const
    ) {
      const evaluation = await store.getEvaluation(outcome.id);
      assert.equal(evaluation?.status, status);
      assert.ok(evaluation!.evaltime > 0, "stoptime set");
    }
    // Nothing half-registered.
    assert.equal((await store.queue({}, 10)).length, 0);

    const next = await run({ packages });
    assert.equal(next.status, EvaluationStatus.succeeded);
    assert.equal(next.created, 3);
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});
