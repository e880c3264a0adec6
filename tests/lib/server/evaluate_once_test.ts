// Evaluation without channel polling (--no-poll), under repeated triggers.

import assert from "node:assert/strict";
import { evaluateOnce } from "../../../lib/server/server.ts";
import { silentLogger } from "../../../lib/log.ts";
import type { EvaluationOutcome } from "../../../lib/server/evaluation_runner.ts";
import {
  EvaluationStatus,
  type Specification,
} from "../../../lib/store/types.ts";

const SPEC: Specification = {
  name: "hello",
  build: { type: "hello", params: [] },
  channels: [],
  buildOutputs: [],
  notifications: [],
  period: 0,
  priority: 9,
  systems: ["x86_64-linux"],
  isActive: true,
};

Deno.test("triggers during an evaluation make one more, not one each", async () => {
  // Each trigger used to start its own evaluator at once: ten clicks, ten
  // `guix time-machine` processes evaluating the same commits together.
  let active = 0;
  let mostActive = 0;
  let started = 0;
  const finishers: (() => void)[] = [];
  const evaluate = async (): Promise<EvaluationOutcome> => {
    started++;
    active++;
    mostActive = Math.max(mostActive, active);
    await new Promise<void>((resolve) => finishers.push(resolve));
    active--;
    return {
      id: started,
      status: EvaluationStatus.succeeded,
      jobs: 0,
      created: 0,
      derivations: [],
    };
  };
  const watcher = evaluateOnce(
    {
      listSpecifications: () => Promise.resolve([SPEC]),
      listEvaluations: () => Promise.resolve([]),
      evaluationCanceled: () => Promise.resolve(false),
      getSpecification: () => Promise.resolve(SPEC),
    },
    evaluate,
    silentLogger,
  );
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

  for (let i = 0; i < 10; i++) {
    assert.equal(watcher.trigger("hello"), "evaluating");
  }
  await settle();
  assert.equal(started, 1);
  finishers.shift()!();
  await settle();
  assert.equal(started, 2, "the triggers that came meanwhile make one more");
  finishers.shift()!();
  await settle();
  assert.equal(started, 2);
  assert.equal(mostActive, 1);
  await watcher.stop();
});

Deno.test("a specification whose newest evaluation was interrupted (not canceled) is evaluated again at the start; one that ended otherwise is not", async () => {
  // A stop during an evaluation (its evaluators, or its registration
  // between two chunks) ends it aborted: with --no-poll, nothing else
  // would ever evaluate its channels again.
  const newest = [
    { status: EvaluationStatus.aborted, canceled: false, again: true },
    { status: EvaluationStatus.aborted, canceled: true, again: false },
    { status: EvaluationStatus.succeeded, canceled: false, again: false },
    { status: EvaluationStatus.failed, canceled: false, again: false },
  ];
  for (const { status, canceled, again } of newest) {
    const evaluated: string[] = [];
    const watcher = evaluateOnce(
      {
        listSpecifications: () => Promise.resolve([SPEC]),
        listEvaluations: () =>
          Promise.resolve([{
            id: 7,
            specification: SPEC.name,
            status,
            timestamp: 1,
            checkouttime: 1,
            evaltime: 2,
            checkouts: [],
          }]),
        evaluationCanceled: (id) => Promise.resolve(id === 7 && canceled),
        getSpecification: () => Promise.resolve(SPEC),
      },
      (spec) => {
        evaluated.push(spec.name);
        return Promise.resolve({
          id: 8,
          status: EvaluationStatus.succeeded,
          jobs: 0,
          created: 0,
          derivations: [],
        });
      },
      silentLogger,
    );
    await watcher.refresh();
    await watcher.stop();
    assert.deepEqual(
      evaluated,
      again ? [SPEC.name] : [],
      `newest ${status}${canceled ? ", canceled" : ""}`,
    );
  }
});
