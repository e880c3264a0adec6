// Registering an evaluation's jobs: set-based, in chunks, so that a
// 50,000-job evaluation costs a few hundred statements, not 250,000.

import { StoreError } from "./types.ts";
import { all, chunks, get, run } from "./sql_query.ts";
import { checkJob, integer, truncate } from "./rows.ts";
import { failDependents } from "./sql_builds.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { NewJob, RegisterResult } from "./types.ts";

/**
 * One build per new derivation (dedup by derivation, then by output path,
 * in job order), a Jobs row per job, dependencies from the jobs' inputs,
 * each new build's count of pending dependencies, and failed-dependency
 * at once for a new build with a failed input (case C05).
 */
export function* registerBuilds(
  d: Dialect,
  evaluation: number,
  jobs: NewJob[],
  options: { priority: number; now: number },
): Step<RegisterResult> {
  const evaluationRow = yield* get(
    "SELECT specification FROM Evaluations WHERE id = ?",
    [evaluation],
  );
  if (evaluationRow === undefined) {
    const what = jobs.length > 0
      ? `build ${JSON.stringify(truncate(jobs[0].derivation))}`
      : "builds";
    throw new StoreError(
      `Cannot register ${what}: evaluation ${evaluation} does not exist`,
      "not-found",
      evaluation,
    );
  }
  const specification = String(evaluationRow.specification);
  const priority = integer("register builds", "priority", options.priority);
  const now = integer("register builds", "now", options.now);
  for (const job of jobs) checkJob(job);

  // What the database knows already: derivations, and owners of outputs.
  const ids = new Map<string, number>();
  for (const part of chunks([...new Set(jobs.map((job) => job.derivation))])) {
    for (
      const row of yield* all(
        `SELECT id, derivation FROM Builds WHERE derivation IN ${d.textList}`,
        [JSON.stringify(part)],
      )
    ) {
      ids.set(String(row.derivation), Number(row.id));
    }
  }
  const seen = new Set(ids.keys());
  const paths = new Set<string>();
  for (const job of jobs) {
    if (!ids.has(job.derivation)) {
      for (const output of job.outputs) paths.add(output.path);
    }
  }
  // Output path to the derivation of the build that owns it.
  const owners = new Map<string, string>();
  for (const part of chunks([...paths])) {
    for (
      const row of yield* all(
        `SELECT o.path, o.derivation, b.id FROM Outputs o
         JOIN Builds b ON b.derivation = o.derivation
         WHERE o.path IN ${d.textList}`,
        [JSON.stringify(part)],
      )
    ) {
      owners.set(String(row.path), String(row.derivation));
      ids.set(String(row.derivation), Number(row.id));
    }
  }

  // Decide in job order, as if each job were registered one at a time.
  const fresh: NewJob[] = [];
  const freshOutputs: [string, string, string][] = [];
  const jobBuild: [NewJob, string][] = [];
  let known = 0;
  for (const job of jobs) {
    let derivation = job.derivation;
    if (seen.has(derivation)) {
      known++;
    } else if (
      job.outputs.length > 0 &&
      job.outputs.every((output) => owners.has(output.path))
    ) {
      derivation = owners.get(job.outputs[0].path)!;
      known++;
    } else {
      seen.add(derivation);
      fresh.push(job);
      for (const output of job.outputs) {
        if (!owners.has(output.path)) {
          owners.set(output.path, derivation);
          freshOutputs.push([output.path, derivation, output.name]);
        }
      }
    }
    jobBuild.push([job, derivation]);
  }

  for (const part of chunks(fresh)) {
    const rows = yield* all(
      `INSERT INTO Builds (derivation, evaluation, specification, job_name,
         system, nix_name, log, status, weather, priority, max_silent,
         timeout, timestamp, starttime, stoptime, pending_deps)
       SELECT r.derivation, CAST(? AS integer), CAST(? AS text), r.job_name,
         r.system, r.nix_name, '', -2, -1, CAST(? AS integer), r.max_silent,
         r.timeout, CAST(? AS bigint), 0, 0, 0
       FROM ${
        d.records([
          ["derivation", "text"],
          ["job_name", "text"],
          ["system", "text"],
          ["nix_name", "text"],
          ["max_silent", "int"],
          ["timeout", "int"],
        ])
      } r
       RETURNING id, derivation`,
      [
        evaluation,
        specification,
        priority,
        now,
        JSON.stringify(part.map((job) => [
          job.derivation,
          job.name,
          job.system,
          job.nixName,
          job.maxSilent,
          job.timeout,
        ])),
      ],
    );
    for (const row of rows) ids.set(String(row.derivation), Number(row.id));
  }
  // `WHERE true` below: SQLite would read ON CONFLICT as a join's ON.
  for (const part of chunks(freshOutputs)) {
    yield* run(
      `INSERT INTO Outputs (path, derivation, name)
       SELECT r.path, r.derivation, r.name FROM ${
        d.records([["path", "text"], ["derivation", "text"], ["name", "text"]])
      } r
       WHERE true ON CONFLICT (path) DO NOTHING`,
      [JSON.stringify(part)],
    );
  }
  for (const part of chunks(jobBuild)) {
    yield* run(
      `INSERT INTO Jobs (evaluation, name, build, system)
       SELECT CAST(? AS integer), r.name, r.build, r.system FROM ${
        d.records([["name", "text"], ["build", "int"], ["system", "text"]])
      } r
       WHERE true ON CONFLICT DO NOTHING`,
      [
        evaluation,
        JSON.stringify(part.map(([job, derivation]) => [
          job.name,
          ids.get(derivation),
          job.system,
        ])),
      ],
    );
  }

  // After every build of the batch exists, so that inputs among the batch
  // resolve as well as those of earlier evaluations.
  const edges: [number, string][] = [];
  for (const job of fresh) {
    const source = ids.get(job.derivation)!;
    for (const input of job.inputs) edges.push([source, input]);
  }
  for (const part of chunks(edges)) {
    yield* run(
      `INSERT INTO BuildDependencies (source, target)
       SELECT r.source, b.id FROM ${
        d.records([["source", "int"], ["input", "text"]])
      } r
       JOIN Builds b ON b.derivation = r.input
       WHERE b.id <> r.source
       ON CONFLICT DO NOTHING`,
      [JSON.stringify(part)],
    );
  }
  const freshIds = fresh.map((job) => ids.get(job.derivation)!);
  const withInputs = fresh.filter((job) => job.inputs.length > 0).map((job) =>
    ids.get(job.derivation)!
  );
  for (const part of chunks(withInputs)) {
    yield* run(
      `UPDATE Builds SET pending_deps = c.n
       FROM (SELECT d.source, count(*) AS n FROM BuildDependencies d
             JOIN Builds t ON t.id = d.target
             WHERE d.source IN ${d.intList} AND t.status <> 0
             GROUP BY d.source) c
       WHERE Builds.id = c.source`,
      [JSON.stringify(part)],
    );
  }
  // A new build with a failed input cannot succeed (case C05).
  const failed = new Set<number>();
  for (const part of chunks(withInputs)) {
    for (
      const row of yield* all(
        `SELECT DISTINCT d.target FROM BuildDependencies d
         JOIN Builds t ON t.id = d.target
         WHERE d.source IN ${d.intList} AND t.status > 0`,
        [JSON.stringify(part)],
      )
    ) {
      failed.add(Number(row.target));
    }
  }
  for (const target of failed) yield* failDependents(d, target, now);
  if (freshIds.length > 0 && d.notifyQueue !== "") yield* all(d.notifyQueue);
  return { created: fresh.length, known };
}
