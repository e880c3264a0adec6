import assert from "node:assert/strict";
import { systemClock } from "../../../lib/clock.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { GcRoots } from "../../../lib/guix/gc_roots.ts";
import { type Spawner, spawnProcess } from "../../../lib/process.ts";
import {
  abortStaleEvaluations,
  evaluationLogPath,
  recordFailedEvaluation,
  runEvaluation,
} from "../../../lib/server/evaluation_runner.ts";
import { EvaluationStatus } from "../../../lib/store/types.ts";
import { fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";

const SPEC = testSpecification("s", { priority: 3 });

function setup(scenario: unknown, spawn: Spawner = spawnProcess) {
  return fakeGuixFarm(SPEC, scenario, { daemonName: "server", spawn });
}

Deno.test("runEvaluation() evaluates several systems in parallel within the bound", async () => {
  let running = 0;
  let peak = 0;
  const counting: Spawner = (argv, options) => {
    const child = spawnProcess(argv, options);
    running++;
    peak = Math.max(peak, running);
    child.status.finally(() => running--);
    return child;
  };
  const farm = await setup({
    evaluationSeconds: 0.5,
    packages: [{ name: "p", version: "1" }],
  }, counting);
  try {
    const systems = [
      "x86_64-linux",
      "i686-linux",
      "aarch64-linux",
      "armhf-linux",
    ];
    const outcome = await runEvaluation(
      { ...SPEC, systems },
      { ...farm.options, parallelism: 2 },
    );
    assert.equal(outcome.status, EvaluationStatus.succeeded);
    assert.equal(outcome.jobs, 4);
    assert.equal(outcome.created, 4);
    assert.equal(peak, 2);
  } finally {
    await farm.close();
  }
});

Deno.test("runEvaluation() keeps the log, records checkouts and roots derivations", async () => {
  const farm = await setup({ packages: [{ name: "p", version: "1" }] });
  try {
    const roots = new GcRoots({
      directory: `${farm.root}/roots`,
      storeDir: farm.daemon.storeDir,
      clock: systemClock,
      logger: silentLogger,
    });
    const outcome = await runEvaluation(SPEC, {
      ...farm.options,
      gcRoots: roots,
    }, {
      checkouts: [{ channel: "guix", revision: "abc", directory: "/d" }],
      prelude: ";; fetched\n",
    });
    assert.equal(outcome.status, EvaluationStatus.succeeded);
    const log = await Deno.readTextFile(
      evaluationLogPath(farm.options.stateDir, outcome.id),
    );
    assert.match(log, /^;; fetched\n;; system x86_64-linux: exit 0, 1 jobs\n/);
    assert.match(log, /Updating channel 'guix'/);
    assert.deepEqual(await farm.store.getEvaluationCheckouts(outcome.id), [
      { channel: "guix", revision: "abc", directory: "/d" },
    ]);
    assert.deepEqual(await roots.list(), outcome.derivations);
  } finally {
    await farm.close();
  }
});

Deno.test("runEvaluation() whose GC roots directory cannot be made ends failed with no build registered", async () => {
  const farm = await setup({ packages: [{ name: "p", version: "1" }] });
  try {
    await Deno.writeTextFile(`${farm.root}/afile`, "");
    const roots = new GcRoots({
      directory: `${farm.root}/afile/roots`,
      storeDir: farm.daemon.storeDir,
      clock: systemClock,
      logger: silentLogger,
    });
    const outcome = await runEvaluation(SPEC, {
      ...farm.options,
      gcRoots: roots,
    });
    assert.equal(outcome.status, EvaluationStatus.failed);
    assert.equal(
      (await farm.store.getEvaluation(outcome.id))?.status,
      EvaluationStatus.failed,
    );
    assert.deepEqual(await farm.store.countBuildsByStatus(), new Map());
    assert.match(
      await Deno.readTextFile(
        evaluationLogPath(farm.options.stateDir, outcome.id),
      ),
      /Cannot create GC roots directory ".*\/afile\/roots"/,
    );
  } finally {
    await farm.close();
  }
});

Deno.test("runEvaluation() ends failed with the evaluator's stderr as log", async () => {
  const farm = await setup({
    evaluationError: "error: package `foo' not found",
    packages: [],
  });
  try {
    const outcome = await runEvaluation(SPEC, farm.options);
    assert.equal(outcome.status, EvaluationStatus.failed);
    const evaluation = await farm.store.getEvaluation(outcome.id);
    assert.equal(evaluation?.status, EvaluationStatus.failed);
    assert.ok(evaluation!.evaltime > 0);
    assert.match(
      await Deno.readTextFile(
        evaluationLogPath(farm.options.stateDir, outcome.id),
      ),
      /package `foo' not found/,
    );
  } finally {
    await farm.close();
  }
});

Deno.test("recordFailedEvaluation() and abortStaleEvaluations() never leave one in progress", async () => {
  const farm = await setup({ packages: [] });
  try {
    const lines: string[] = [];
    const logger = createLogger({ sink: (line) => lines.push(line) });
    const failed = await recordFailedEvaluation(
      SPEC,
      { ...farm.options, logger },
      { checkouts: [], log: "cannot fetch\n" },
    );
    // The log line says where the reason is.
    const logPath = evaluationLogPath(farm.options.stateDir, failed.id);
    assert.ok(
      lines.some((line) =>
        line.includes("evaluation failed") && line.includes(logPath)
      ),
      lines.join("\n"),
    );
    assert.equal(Deno.readTextFileSync(logPath), "cannot fetch\n");
    assert.equal(
      (await farm.store.getEvaluation(failed.id))?.status,
      EvaluationStatus.failed,
    );
    const stale = await farm.store.addEvaluation("s", [], 1);
    assert.equal(
      await abortStaleEvaluations(farm.store, systemClock, silentLogger),
      1,
    );
    assert.equal(
      (await farm.store.getEvaluation(stale))?.status,
      EvaluationStatus.aborted,
    );
  } finally {
    await farm.close();
  }
});
