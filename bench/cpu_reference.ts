// How fast this machine runs the server's kind of work right now: one fixed
// piece of JavaScript, timed. The machines these benchmarks run on are
// virtual, and their pace drifts from hour to hour (the same commit's
// figures have differed by a factor of 1.8 between two runs); figures of
// two runs compare only where this reference does.

import { percentile } from "./stats.ts";

/** Timed runs of the workload; the median is reported. */
const RUNS = 5;

/** Milliseconds the fixed workload takes (median of {@link RUNS}). */
export function cpuReferenceMs(): number {
  // Compiled first: its first runs would time the compiler.
  for (let run = 0; run < 3; run++) workload();
  const times: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    workload();
    times.push(performance.now() - start);
  }
  return percentile(times, 50);
}

/**
 * Integer arithmetic, a map filled and read, and text encoded and parsed:
 * some 0.3 s a run on the 2-core machine of these benchmarks.
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
