// Turns a specification into an evaluation and its builds.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { type EvaluateResult, evaluateSystem } from "../guix/evaluation.ts";
import type { Guix } from "../guix/guix_command.ts";
import {
  EvaluationStatus,
  type NewJob,
  type Specification,
  type Store,
} from "../store/types.ts";

export interface EvaluationRunnerOptions {
  store: Store;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Evaluation logs go to `<stateDir>/evaluations/<id>.log`. */
  stateDir: string;
  /** Systems evaluated at once; default 2. */
  parallelism?: number;
  /** The Guile evaluator script; default the one shipped with Lorica. */
  evaluator?: string;
}

export interface EvaluationOutcome {
  id: number;
  status: EvaluationStatus;
  jobs: number;
  created: number;
}

/** Path of an evaluation's log. */
export function evaluationLogPath(stateDir: string, id: number): string {
  return `${stateDir}/evaluations/${id}.log`;
}

/**
 * Evaluates `spec` for each of its systems and registers the jobs. Builds
 * are registered only when every system evaluated, so a failed evaluation
 * leaves no half-registered work; it always ends succeeded or failed.
 */
export async function runEvaluation(
  spec: Specification,
  options: EvaluationRunnerOptions,
): Promise<EvaluationOutcome> {
  const { store, guix, clock, logger, stateDir } = options;
  const checkouts = spec.channels
    .filter((channel) => channel.commit !== null)
    .map((channel) => ({
      channel: channel.name,
      revision: channel.commit!,
      directory: "",
    }));
  const id = await store.addEvaluation(
    spec.name,
    checkouts,
    epochSeconds(clock),
  );
  const log = evaluationLogPath(stateDir, id);
  await Deno.mkdir(`${stateDir}/evaluations`, { recursive: true });
  const workDir = await Deno.makeTempDir({ prefix: `lorica-eval-${id}-` });
  logger.info("evaluation started", { evaluation: id, spec: spec.name });
  try {
    const results = await mapBounded(
      spec.systems,
      options.parallelism ?? 2,
      (system) =>
        evaluateSystem(guix, {
          channels: spec.channels,
          build: spec.build,
          system,
          workDir,
          evaluator: options.evaluator,
        }).catch((error): EvaluateResult => ({
          ok: false,
          jobs: [],
          log: `lorica: ${(error as Error).message}\n`,
          exitCode: -1,
        })),
    );
    await Deno.writeTextFile(
      log,
      results.map((result, i) =>
        `;; system ${
          spec.systems[i]
        }: exit ${result.exitCode}, ${result.jobs.length} jobs\n${result.log}`
      ).join("\n"),
    );
    if (!results.every((result) => result.ok)) {
      await store.setEvaluationStatus(
        id,
        EvaluationStatus.failed,
        epochSeconds(clock),
      );
      logger.warn("evaluation failed", {
        evaluation: id,
        spec: spec.name,
        log,
      });
      return { id, status: EvaluationStatus.failed, jobs: 0, created: 0 };
    }
    const jobs: NewJob[] = results.flatMap((result) => result.jobs);
    const registered = await store.registerBuilds(id, jobs, {
      priority: spec.priority,
      now: epochSeconds(clock),
    });
    await store.setEvaluationStatus(
      id,
      EvaluationStatus.succeeded,
      epochSeconds(clock),
    );
    logger.info("evaluation succeeded", {
      evaluation: id,
      spec: spec.name,
      jobs: jobs.length,
      created: registered.created,
      known: registered.known,
    });
    return {
      id,
      status: EvaluationStatus.succeeded,
      jobs: jobs.length,
      created: registered.created,
    };
  } catch (error) {
    // Whatever went wrong, the evaluation must not stay "in progress".
    await store.setEvaluationStatus(
      id,
      EvaluationStatus.failed,
      epochSeconds(clock),
    ).catch(() => {});
    logger.error("evaluation failed", { evaluation: id, error });
    return { id, status: EvaluationStatus.failed, jobs: 0, created: 0 };
  } finally {
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  }
}

async function mapBounded<T, R>(
  items: T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  async function lane() {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]);
    }
  }
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, lane),
  );
  return results;
}
