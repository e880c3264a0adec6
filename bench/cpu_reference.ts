// How fast this machine runs the server's kind of work right now: a fixed
// piece of JavaScript, timed, and the latency of a read from memory far
// from the caches. The machines these benchmarks run on are virtual, and
// their pace drifts from hour to hour: within one session the same
// commit's dispatch rate fell from 6,100 to 2,700 builds/s while this
// JavaScript workload slowed by a fifth at most; a read from memory then
// took some 250 ns, where DRAM answers in about 100 (SQLite's B-trees and
// V8's collector wait on memory). Figures of two runs compare only where
// these references do.

import { percentile } from "./stats.ts";

/** Timed runs of each measure; the median is reported. */
const RUNS = 5;

/** The pace of this machine, by two references. */
export interface MachinePace {
  /** Milliseconds a fixed JavaScript workload takes. */
  computeMs: number;
  /** Nanoseconds a dependent read from 64 MiB of memory takes. */
  memoryNs: number;
}

/** Both references, each the median of {@link RUNS}. */
export function machinePace(): MachinePace {
  // Compiled first: its first runs would time the compiler.
  for (let run = 0; run < 3; run++) workload();
  const compute: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    workload();
    compute.push(performance.now() - start);
  }
  const cycle = randomCycle(1 << 24);
  const memory: number[] = [];
  for (let run = 0; run < RUNS; run++) memory.push(chase(cycle, 2_000_000));
  return {
    computeMs: percentile(compute, 50),
    memoryNs: percentile(memory, 50),
  };
}

/**
 * Integer arithmetic, a map filled and read, and text encoded and parsed:
 * some 0.25 s a run on the 2-core machine of these benchmarks.
 */
function workload(): number {
  let hash = 0;
  for (let i = 0; i < 30_000_000; i++) hash = (hash * 31 + i) | 0;
  const map = new Map<string, number>();
  for (let i = 0; i < 200_000; i++) map.set(`drv-${i}`, i);
  for (let i = 0; i < 200_000; i++) hash ^= map.get(`drv-${i}`)!;
  const text = JSON.stringify(
    Array.from({ length: 20_000 }, (_, i) => ({ id: i, name: `job-${i}` })),
  );
  hash ^= (JSON.parse(text) as unknown[]).length;
  return hash;
}

/**
 * One cycle through all of `size` slots in a fixed random order (Sattolo's
 * shuffle, from a fixed seed): following it, each read depends on the one
 * before and lands far from it.
 */
function randomCycle(size: number): Int32Array {
  const next = new Int32Array(size);
  for (let i = 0; i < size; i++) next[i] = i;
  let seed = 12345;
  for (let i = size - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const j = seed % i;
    [next[i], next[j]] = [next[j], next[i]];
  }
  return next;
}

/** Nanoseconds per step of `steps` steps along `cycle`. */
function chase(cycle: Int32Array, steps: number): number {
  const start = performance.now();
  let at = 0;
  for (let i = 0; i < steps; i++) at = cycle[at];
  const elapsed = performance.now() - start;
  // Used, so that the walk is not optimised away.
  if (at < 0) throw new Error("unreachable");
  return elapsed * 1e6 / steps;
}
