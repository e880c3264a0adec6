import assert from "node:assert/strict";
import { chunksInDependencyOrder } from "../../../lib/store/dependency_order.ts";
import { drv, job } from "./store_contract.ts";
import type { NewJob } from "../../../lib/store/types.ts";

const names = (chunks: NewJob[][]) =>
  chunks.map((chunk) => chunk.map((j) => j.name));

/** Asserts that no job's input comes in a later chunk than the job. */
function assertInputsFirst(chunks: NewJob[][]): void {
  const chunkOf = new Map<string, number>();
  chunks.forEach((chunk, index) => {
    for (const j of chunk) chunkOf.set(j.derivation, index);
  });
  chunks.forEach((chunk, index) => {
    for (const j of chunk) {
      for (const input of j.inputs) {
        assert.ok(
          (chunkOf.get(input) ?? -1) <= index,
          `${j.name} in chunk ${index} before its input ${input}`,
        );
      }
    }
  });
}

Deno.test("chunksInDependencyOrder() keeps jobs that fit one chunk as given", () => {
  const jobs = [job("b", { inputs: ["a"] }), job("a")];
  const chunks = chunksInDependencyOrder(jobs, 2);
  assert.deepEqual(chunks, [jobs]);
  assert.deepEqual(chunksInDependencyOrder([], 2), []);
});

Deno.test("chunksInDependencyOrder() cuts a list whose inputs come first as given", () => {
  const jobs = ["a", "b", "c", "d", "e"].map((name, i, all) =>
    job(name, { inputs: i === 0 ? [] : [all[i - 1]] })
  );
  assert.deepEqual(names(chunksInDependencyOrder(jobs, 2)), [
    ["a", "b"],
    ["c", "d"],
    ["e"],
  ]);
});

Deno.test("chunksInDependencyOrder() puts each job after the jobs its inputs are", () => {
  // Dependents first, as an evaluator may list them; "x" is an input that
  // is no job of the list, which does not hold anything back.
  const jobs = [
    job("top", { inputs: ["mid", "x"] }),
    job("mid", { inputs: ["base"] }),
    job("other"),
    job("base"),
    job("leaf", { inputs: ["top", "base"] }),
  ];
  const chunks = chunksInDependencyOrder(jobs, 2);
  assertInputsFirst(chunks);
  assert.deepEqual(names(chunks), [
    ["base", "mid"],
    ["top", "other"],
    ["leaf"],
  ]);
});

Deno.test("chunksInDependencyOrder() keeps the jobs of one derivation together", () => {
  const jobs = [
    job("a"),
    job("hello", { drv: "hello" }),
    job("b"),
    job("hello-again", { drv: "hello" }),
    job("c", { inputs: ["hello"] }),
  ];
  const chunks = chunksInDependencyOrder(jobs, 2);
  assertInputsFirst(chunks);
  assert.deepEqual(names(chunks), [
    ["a"],
    ["hello", "hello-again"],
    ["b", "c"],
  ]);
});

Deno.test("chunksInDependencyOrder() keeps a cycle in one chunk, however large", () => {
  const jobs = [
    job("a"),
    job("p", { inputs: ["r"] }),
    job("q", { inputs: ["p"] }),
    job("r", { inputs: ["q"] }),
    job("z", { inputs: ["p"] }),
  ];
  assert.deepEqual(names(chunksInDependencyOrder(jobs, 2)), [
    ["a"],
    ["p", "q", "r"],
    ["z"],
  ]);
});

Deno.test("chunksInDependencyOrder() orders a chain of 100,000 given backwards", () => {
  const count = 100_000;
  const jobs = Array.from(
    { length: count },
    (_, i) =>
      job(`j${count - 1 - i}`, {
        inputs: i === count - 1 ? [] : [`j${count - 2 - i}`],
      }),
  );
  const chunks = chunksInDependencyOrder(jobs, 1000);
  assert.equal(chunks.length, 100);
  assert.equal(chunks[0][0].derivation, drv("j0"));
  assert.equal(chunks[99][999].derivation, drv(`j${count - 1}`));
  assertInputsFirst(chunks);
});

Deno.test("chunksInDependencyOrder() refuses a chunk size that is no positive integer", () => {
  for (const size of [0, -1, 1.5, NaN]) {
    assert.throws(
      () => chunksInDependencyOrder([job("a")], size),
      (error: Error) =>
        error instanceof RangeError &&
        error.message.includes(JSON.stringify(size)),
    );
  }
});
