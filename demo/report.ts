// Reads a farm's progress through its JSON API and prints it for a person.

import { buildStatusName } from "../lib/store/types.ts";

/** The fields of Cuirass's build object that the demo shows. */
export interface ApiBuild {
  id: number;
  job: string;
  system: string;
  buildstatus: number;
  starttime: number;
  stoptime: number;
  finished: number;
}

export interface Progress {
  finished: ApiBuild[];
  pending: ApiBuild[];
}

/** Fetches finished and pending builds (up to 1000 each). */
export async function readProgress(webUrl: string): Promise<Progress> {
  const [finished, pending] = await Promise.all([
    getJson<ApiBuild[]>(`${webUrl}/api/latestbuilds?nr=1000`),
    getJson<ApiBuild[]>(`${webUrl}/api/queue?nr=1000`),
  ]);
  return { finished, pending };
}

/** One line: counts by status. */
export function progressLine(
  progress: Progress,
  elapsedSeconds: number,
): string {
  const counts = new Map<string, number>();
  for (const build of [...progress.pending, ...progress.finished]) {
    const name = buildStatusName(build.buildstatus);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  const parts = [...counts].sort().map(([name, n]) => `${name} ${n}`);
  return `[${String(elapsedSeconds).padStart(3)} s] ${
    parts.join(", ") || "evaluating..."
  }`;
}

/** The summary table, one row per build. */
export function summaryTable(builds: ApiBuild[]): string {
  const rows = [...builds].sort((a, b) =>
    a.system.localeCompare(b.system) || a.job.localeCompare(b.job)
  ).map((build) => [
    build.job,
    build.system,
    buildStatusName(build.buildstatus),
    build.starttime && build.stoptime
      ? `${build.stoptime - build.starttime} s`
      : "-",
  ]);
  const header = ["job", "system", "status", "time"];
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => row[i].length))
  );
  const format = (cells: string[]) =>
    cells.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd();
  return [
    format(header),
    format(widths.map((w) => "-".repeat(w))),
    ...rows.map(format),
  ].join("\n");
}

/** Differences between the final statuses and the expected ones. */
export function compareOutcome(
  builds: ApiBuild[],
  expected: Record<string, string>,
): string[] {
  const problems: string[] = [];
  const seen = new Map(
    builds.map((b) => [b.job, buildStatusName(b.buildstatus)]),
  );
  for (const [job, status] of Object.entries(expected)) {
    const actual = seen.get(job);
    if (actual !== status) {
      problems.push(`${job}: expected ${status}, got ${actual ?? "no build"}`);
    }
  }
  for (const job of seen.keys()) {
    if (!(job in expected)) problems.push(`${job}: not in the scenario`);
  }
  return problems;
}

async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url);
  if (!response.ok) {
    const body = await response.text();
    throw new Error(
      `Cannot read ${JSON.stringify(url)}: ${response.status} ${body}`,
    );
  }
  return await response.json() as T;
}
