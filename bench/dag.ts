// Random evaluations shaped like a package graph: many leaves, most jobs
// with a few inputs, drawn mostly from recent jobs (a deep, narrow DAG) and
// sometimes from far back (the widely used base packages).

import type { NewJob } from "../lib/store/types.ts";

const HASH_CHARS = "0123456789abcdfghijklmnpqrsvwxyz";

/** A seeded generator of numbers in [0, 1) (mulberry32). */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-character store hash derived from `n` and `salt`. */
export function storeHash(n: number, salt: number): string {
  const next = random(n * 7919 + salt * 104729 + 1);
  let hash = "";
  for (let i = 0; i < 32; i++) hash += HASH_CHARS[Math.floor(next() * 32)];
  return hash;
}

/** Options of {@link makeJobs}. */
export interface DagOptions {
  /** Distinguishes evaluations: different salts give disjoint derivations. */
  salt: number;
  systems?: string[];
  /** Share of jobs without inputs; default 0.3. */
  leafShare?: number;
}

/** `count` jobs of one evaluation; inputs always point at earlier jobs. */
export function makeJobs(count: number, options: DagOptions): NewJob[] {
  const { salt, systems = ["x86_64-linux"], leafShare = 0.3 } = options;
  const next = random(salt + 17);
  const jobs: NewJob[] = [];
  for (let i = 0; i < count; i++) {
    const name = `pkg-${salt}-${i}`;
    const hash = storeHash(i, salt);
    const inputs: string[] = [];
    if (i > 0 && next() >= leafShare) {
      const wanted = 1 + Math.floor(next() * 4);
      for (let k = 0; k < wanted; k++) {
        const back = next() < 0.8
          ? 1 + Math.floor(next() * Math.min(i, 50))
          : 1 + Math.floor(next() * i);
        inputs.push(jobs[i - back].derivation);
      }
    }
    jobs.push({
      name: `${name}.${systems[i % systems.length]}`,
      derivation: `/gnu/store/${hash}-${name}.drv`,
      system: systems[i % systems.length],
      nixName: `${name}-1.0`,
      outputs: [{ name: "out", path: `/gnu/store/${hash}-${name}` }],
      inputs: [...new Set(inputs)],
      timeout: 3600,
      maxSilent: 600,
    });
  }
  return jobs;
}
