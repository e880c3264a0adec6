// An evaluation's jobs cut into chunks that can be registered one after
// the other, each in a transaction of its own: a job never comes before a
// job whose derivation it takes as input. Registered in an earlier chunk,
// that input is a build already, and the later job's dependency on it is
// recorded and counted; registered in a later chunk, it would be neither,
// and the job could be dispatched before its input was built.

import type { NewJob } from "./types.ts";

/**
 * `jobs` cut into chunks of about `size` jobs, in dependency order: each
 * job after the jobs whose derivation is one of its inputs, the jobs of
 * one derivation together, and those of a dependency cycle (which real
 * derivations cannot form) in one chunk, however large. Otherwise the
 * order is the given one: a list in which every input comes first keeps
 * its order. All of `jobs` in one chunk, in their given order, when they
 * fit.
 * @throws {RangeError} when `size` is not a positive integer.
 */
export function chunksInDependencyOrder(
  jobs: readonly NewJob[],
  size: number,
): NewJob[][] {
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(
      `Cannot cut jobs into chunks of ${
        JSON.stringify(size)
      }: not a positive integer`,
    );
  }
  if (jobs.length <= size) return jobs.length === 0 ? [] : [[...jobs]];

  // The jobs of each derivation, derivations numbered in order of first
  // appearance.
  const numberOf = new Map<string, number>();
  const jobsOf: NewJob[][] = [];
  for (const job of jobs) {
    const number = numberOf.get(job.derivation);
    if (number === undefined) {
      numberOf.set(job.derivation, jobsOf.length);
      jobsOf.push([job]);
    } else jobsOf[number].push(job);
  }
  const inputsOf = jobsOf.map((same, number) => {
    const inputs = new Set<number>();
    for (const job of same) {
      for (const input of job.inputs) {
        const target = numberOf.get(input);
        if (target !== undefined && target !== number) inputs.add(target);
      }
    }
    return [...inputs];
  });

  const chunks: NewJob[][] = [];
  let chunk: NewJob[] = [];
  for (const group of groupsInDependencyOrder(inputsOf)) {
    let groupSize = 0;
    for (const number of group) groupSize += jobsOf[number].length;
    if (chunk.length > 0 && chunk.length + groupSize > size) {
      chunks.push(chunk);
      chunk = [];
    }
    for (const number of group) {
      for (const job of jobsOf[number]) chunk.push(job);
    }
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

/**
 * The nodes 0..n-1 of the graph `inputsOf` (node to the nodes it depends
 * on) in groups, each group after those it depends on: the strongly
 * connected components, by Tarjan's algorithm, each in ascending order.
 * Iterative, on typed arrays: a chain of thousands would overflow the
 * call stack, and 50,000 derivations must not hold the event loop long.
 */
function groupsInDependencyOrder(inputsOf: readonly number[][]): number[][] {
  const count = inputsOf.length;
  const UNSEEN = -1;
  const index = new Int32Array(count).fill(UNSEEN);
  const low = new Int32Array(count);
  const onStack = new Uint8Array(count);
  const stack = new Int32Array(count);
  let stackSize = 0;
  // The depth-first path: each node, and how many of its inputs were seen.
  const pathNode = new Int32Array(count);
  const pathNext = new Int32Array(count);
  let seen = 0;
  const groups: number[][] = [];
  for (let root = 0; root < count; root++) {
    if (index[root] !== UNSEEN) continue;
    let depth = 0;
    const enter = (node: number) => {
      index[node] = low[node] = seen++;
      stack[stackSize++] = node;
      onStack[node] = 1;
      pathNode[depth] = node;
      pathNext[depth] = 0;
      depth++;
    };
    enter(root);
    while (depth > 0) {
      const node = pathNode[depth - 1];
      const inputs = inputsOf[node];
      if (pathNext[depth - 1] < inputs.length) {
        const input = inputs[pathNext[depth - 1]++];
        if (index[input] === UNSEEN) enter(input);
        else if (onStack[input]) low[node] = Math.min(low[node], index[input]);
        continue;
      }
      depth--;
      if (depth > 0) {
        const parent = pathNode[depth - 1];
        low[parent] = Math.min(low[parent], low[node]);
      }
      if (low[node] !== index[node]) continue;
      const group: number[] = [];
      let member: number;
      do {
        member = stack[--stackSize];
        onStack[member] = 0;
        group.push(member);
      } while (member !== node);
      // In order of first appearance, as the jobs were given.
      groups.push(group.length === 1 ? group : group.sort((a, b) => a - b));
    }
  }
  return groups;
}
