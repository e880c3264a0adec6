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
