// Registering an evaluation's jobs: set-based, in chunks, so that a
// 50,000-job evaluation costs a few hundred statements, not 250,000.

import { StoreError } from "./types.ts";
import { all, chunks, get, run } from "./sql_query.ts";
import { checkJob, integer, truncate } from "./rows.ts";
import { failDependentsOfAll } from "./sql_builds.ts";
import {
  holdStartedEvaluation,
  renewEvaluationHeartbeat,
} from "./sql_evaluation_owners.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
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
  options: {
    priority: number;
    now: number;
    whileStarted?: boolean;
    heartbeatNow?: () => number;
  },
): Step<RegisterResult> {
  if (options.whileStarted === true) {
    yield* holdStartedEvaluation(
      d,
      evaluation,
      integer("register builds", "now", options.now),
    );
  }
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

  // The inputs that are builds already, with their status. Locked until
  // the commit (PostgreSQL), so that no completion slips between reading a
  // status here and the new dependency rows that its bookkeeping would
  // have to see: the pending counts computed below stay true. A completion
  // that waits for these locks finds the new rows once it holds its build
  // (each reads them anew then: see succeedPostgresSql in sql_builds.ts).
  const freshDerivations = new Set(fresh.map((job) => job.derivation));
  const wanted = new Set<string>();
  for (const job of fresh) {
    for (const input of job.inputs) {
      if (!freshDerivations.has(input)) wanted.add(input);
    }
  }
  const existing = yield* lockInputs(d, [...wanted]);
  // Each fresh job's dependencies: its distinct inputs that are builds, not
  // itself (an input that is no build, nor becomes one, is no dependency).
  const dependencies = new Map(fresh.map((job) => [
    job,
    [...new Set(job.inputs)].filter((input) =>
      input !== job.derivation &&
      (freshDerivations.has(input) || existing.has(input))
    ),
  ]));
  // Pending: every fresh dependency (scheduled), and the existing ones
  // that have not succeeded.
  const pendingOf = (job: NewJob) =>
    dependencies.get(job)!.filter((input) =>
      freshDerivations.has(input) || existing.get(input)!.status !== 0
    ).length;

  for (const part of chunks(fresh)) {
    const rows = yield* all(
      `INSERT INTO Builds (derivation, evaluation, specification, job_name,
         system, nix_name, log, status, weather, priority, max_silent,
         timeout, timestamp, starttime, stoptime, pending_deps)
       SELECT r.derivation, CAST(? AS integer), CAST(? AS text), r.job_name,
         r.system, r.nix_name, '', -2, -1, CAST(? AS integer), r.max_silent,
         r.timeout, CAST(? AS bigint), 0, 0, r.pending_deps
       FROM ${
        d.records([
          ["derivation", "text"],
          ["job_name", "text"],
          ["system", "text"],
          ["nix_name", "text"],
          ["max_silent", "int"],
          ["timeout", "int"],
          ["pending_deps", "int"],
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
          pendingOf(job),
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

  // Every dependency's id is known by now: fresh ones were just inserted.
  const idOf = (derivation: string) =>
    ids.get(derivation) ?? existing.get(derivation)!.id;
  const edges: [number, number][] = [];
  for (const job of fresh) {
    const source = ids.get(job.derivation)!;
    for (const input of dependencies.get(job)!) {
      edges.push([source, idOf(input)]);
    }
  }
  for (const part of chunks(edges)) {
    yield* run(
      `INSERT INTO BuildDependencies (source, target)
       SELECT r.source, r.target FROM ${
        d.records([["source", "int"], ["target", "int"]])
      } r
       WHERE true ON CONFLICT DO NOTHING`,
      [JSON.stringify(part)],
    );
  }
  // A new build with a failed input cannot succeed (case C05).
  const failed = new Set<number>();
  for (const job of fresh) {
    for (const input of dependencies.get(job)!) {
      const state = existing.get(input);
      if (state !== undefined && state.status > 0) failed.add(state.id);
    }
  }
  const blocked = yield* failDependentsOfAll(d, [...failed], now);
  if (d.name === "postgres") yield* refreshStatistics(fresh.length);
  if (fresh.length > 0 && d.notifyQueue !== "") yield* all(d.notifyQueue);
  if (options.whileStarted === true && options.heartbeatNow !== undefined) {
    // Committed with the builds: the heartbeat written first is as old as
    // the registration by then, minutes for a large one, and no renewal
    // could land meanwhile (the row is held).
    yield* renewEvaluationHeartbeat(
      d,
      evaluation,
      integer("register builds", "heartbeat", options.heartbeatNow()),
    );
  }
  return { created: fresh.length, known, blocked };
}

/**
 * The builds of `derivations` with their status, each locked FOR SHARE
 * until the commit on PostgreSQL, in id order (sql_build_locks.ts).
 */
function* lockInputs(
  d: Dialect,
  derivations: string[],
): Step<Map<string, { id: number; status: number }>> {
  const existing = new Map<string, { id: number; status: number }>();
  const found = (rows: Row[]) => {
    for (const row of rows) {
      existing.set(String(row.derivation), {
        id: Number(row.id),
        status: Number(row.status),
      });
    }
  };
  const parts = chunks(derivations);
  if (d.name !== "postgres" || parts.length <= 1) {
    const order = d.name === "postgres" ? " ORDER BY id" : "";
    for (const part of parts) {
      found(
        yield* all(
          `SELECT id, derivation, status FROM Builds
           WHERE derivation IN ${d.textList}${order}${d.forShare}`,
          [JSON.stringify(part)],
        ),
      );
    }
    return existing;
  }
  // Locked chunk by chunk of derivations, the rows would not be in id
  // order from one chunk to the next: their ids first, unlocked (a
  // derivation's build keeps its id), then the rows by chunks of ids.
  const ids: number[] = [];
  for (const part of parts) {
    const rows = yield* all(
      `SELECT id FROM Builds WHERE derivation IN ${d.textList}`,
      [JSON.stringify(part)],
    );
    for (const row of rows) ids.push(Number(row.id));
  }
  ids.sort((a, b) => a - b);
  for (const part of chunks(ids)) {
    found(
      yield* all(
        `SELECT id, derivation, status FROM Builds
         WHERE id IN ${d.intList} ORDER BY id${d.forShare}`,
        [JSON.stringify(part)],
      ),
    );
  }
  return existing;
}

/** New builds below which statistics are left to autovacuum. */
export const STATISTICS_REFRESH_MIN = 1_000;

/**
 * On PostgreSQL, analyzes the build tables when this registration added
 * more builds than the planner's statistics know of: a first large
 * evaluation into a fresh database, which autovacuum would notice only
 * up to a minute later. Until then every dispatch query is planned for
 * the tiny table it was (measured: 37 instead of 700 dispatches/s at
 * 200,000 builds). About 0.3 s at that size, so only when it is stale.
 */
function* refreshStatistics(added: number): Step<void> {
  if (added < STATISTICS_REFRESH_MIN) return;
  const row = yield* get(
    "SELECT reltuples FROM pg_class WHERE oid = 'builds'::regclass",
  );
  // -1 (PostgreSQL 14 and later): never analyzed.
  if (Number(row?.reltuples ?? -1) >= added) return;
  yield* run("ANALYZE Builds, BuildDependencies");
}
