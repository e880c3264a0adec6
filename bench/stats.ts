// Measuring helpers: percentiles, memory, CPU, timing.

import process from "node:process";

/** The `p`-th percentile (0-100) of `samples`, in their unit; NaN if none. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const index = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil((p / 100) * sorted.length) - 1),
  );
  return sorted[index];
}

/** Resident memory of this process, in MB. */
export function rssMb(): number {
  return Deno.memoryUsage().rss / (1024 * 1024);
}

/** The CPU time this process (all its threads) has used so far, in ms. */
export function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

/** Runs `fn` and returns its result with the elapsed milliseconds. */
export async function timed<T>(
  fn: () => Promise<T>,
): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - start };
}

/** `value` with `digits` decimals, or "n/a" when not finite. */
export function fixed(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "n/a";
}

/** One row of the results table. */
export interface ResultRow {
  backend: string;
  measure: string;
  value: string;
  target: string;
  /** True (met), false (missed) or null (no target). */
  met: boolean | null;
}

/** A Markdown table of `rows`. */
export function markdownTable(rows: ResultRow[]): string {
  const lines = [
    "| Backend | Measure | Result | Target | Met |",
    "|---|---|---|---|---|",
  ];
  for (const row of rows) {
    const met = row.met === null ? "" : row.met ? "yes" : "**no**";
    lines.push(
      `| ${row.backend} | ${row.measure} | ${row.value} | ${row.target} | ${met} |`,
    );
  }
  return lines.join("\n");
}
