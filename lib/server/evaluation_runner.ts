// Turns a specification into an evaluation and its builds.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { isDiskFull } from "../disk_full.ts";
import { type EvaluateResult, evaluateSystem } from "../guix/evaluation.ts";
import type { Guix } from "../guix/guix_command.ts";
import type { GcRoots } from "../guix/gc_roots.ts";
import {
  makeEvaluationWorkDir,
  runByAnotherProcess,
} from "./evaluation_work.ts";
import {
  keepHeartbeat,
  sameProcess,
  stillRunning,
  thisProcess,
} from "./evaluation_owner.ts";
import {
  registerInChunks,
  RegistrationStoppedError,
} from "../store/chunked_registration.ts";
import {
  type Checkout,
  EvaluationStatus,
  type NewJob,
  type Specification,
  type Store,
  StoreError,
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
  /** Roots for the derivations of successful evaluations. */
  gcRoots?: GcRoots;
  /**
   * A clean stop of the server: kills running evaluators, or ends the
   * registration of the builds at the next chunk boundary; either way the
   * evaluation ends aborted, and the next poll evaluates its commits again.
   */
  signal?: AbortSignal;
  /**
   * Seconds one system's evaluator may run before it is killed and the
   * evaluation ends failed [0: no limit].
   */
  timeoutSeconds?: number;
}

/** What channel polling knows about the evaluation it asks for. */
export interface EvaluationRequest {
  /** Checkouts to record; default the channels' pinned commits. */
  checkouts?: Checkout[];
  /** Text the log starts with, e.g. channel fetch warnings. */
  prelude?: string;
}

export interface EvaluationOutcome {
  id: number;
  status: EvaluationStatus;
  jobs: number;
  created: number;
  /** Derivations of the evaluation's jobs (empty unless succeeded). */
  derivations: string[];
  /** Failed because an evaluator ran past `timeoutSeconds` [false]. */
  timedOut?: boolean;
}

/** Path of an evaluation's log (plain text). */
export function evaluationLogPath(stateDir: string, id: number): string {
  return `${stateDir}/evaluations/${id}.log`;
}

/**
 * Evaluates `spec` for each of its systems and registers the jobs. Builds
 * are registered only when every system evaluated and their derivations
 * are rooted, so a failed evaluation leaves no half-registered work (a
 * registration cut short, the database failing or the server stopping
 * between two of its chunks, leaves the builds of the chunks before, each
 * with its dependencies: see chunked_registration.ts; a clean stop does
 * not wait for the chunks after the one under way). It always ends
 * succeeded, failed (also when Lorica killed an evaluator at
 * `timeoutSeconds` or for too much output, the reason in the log), or
 * aborted (evaluator killed by another signal, or shutdown).
 *
 * While it runs, its heartbeat is renewed (evaluation_owner.ts). Another
 * server sharing the database may still abort it, if this one stopped
 * renewing for long (paused, cut off from the database). Then the
 * evaluation stays aborted: an aborted evaluation is final (its commits
 * are evaluated again at the next poll), so this one must neither turn it
 * back to succeeded nor register builds under it, which would leave
 * builds of an evaluation the pages call aborted. The evaluators are
 * stopped as soon as a renewal finds it aborted; the registration and
 * every status written at the end are conditional on its being still
 * started, and refused builds are not lost: the next evaluation of the
 * same commits registers them.
 */
export async function runEvaluation(
  spec: Specification,
  options: EvaluationRunnerOptions,
  request: EvaluationRequest = {},
): Promise<EvaluationOutcome> {
  const { store, guix, clock, logger, stateDir } = options;
  const checkouts = request.checkouts ?? pinnedCheckouts(spec);
  const id = await store.addEvaluation(
    spec.name,
    checkouts,
    epochSeconds(clock),
    { owner: await thisProcess() },
  );
  // Aborted when a heartbeat renewal finds the evaluation aborted
  // elsewhere: its evaluators are stopped, their result is not wanted.
  const endedElsewhere = new AbortController();
  const heartbeatStop = new AbortController();
  // Set as this server writes the evaluation's end: a renewal landing
  // after that write finds it ended by this very server, and the write's
  // own answer tells whether another server had aborted it first.
  let ending = false;
  // Why it ended elsewhere, logged once: an administrator's cancel (here or
  // through another server), or another server taking it for abandoned.
  let endLogged: Promise<void> | undefined;
  const logEndedElsewhere = () =>
    endLogged ??= store.evaluationCanceled(id).catch(() => false).then(
      (canceled) =>
        canceled
          ? logger.info("evaluation canceled", {
            evaluation: id,
            spec: spec.name,
          })
          : logger.warn("evaluation aborted elsewhere", {
            evaluation: id,
            spec: spec.name,
          }),
    );
  const heartbeat = keepHeartbeat(id, {
    store,
    clock,
    logger,
    signal: heartbeatStop.signal,
    onEnded: () => {
      if (ending) return;
      endedElsewhere.abort();
      logEndedElsewhere();
    },
  });
  const signal = options.signal
    ? AbortSignal.any([options.signal, endedElsewhere.signal])
    : endedElsewhere.signal;
  const log = evaluationLogPath(stateDir, id);
  const failed = (
    status: EvaluationStatus,
    timedOut = false,
  ): EvaluationOutcome => ({
    id,
    status,
    jobs: 0,
    created: 0,
    derivations: [],
    timedOut,
  });
  const timeoutSeconds = options.timeoutSeconds ?? 0;
  let workDir: string | null = null;
  logger.info("evaluation started", { evaluation: id, spec: spec.name });
  try {
    await Deno.mkdir(`${stateDir}/evaluations`, { recursive: true });
    await Deno.writeTextFile(log, request.prelude ?? "");
    workDir = await makeEvaluationWorkDir(stateDir, id);
    const dir = workDir;
    const results = await mapBounded(
      spec.systems,
      options.parallelism ?? 2,
      (system) =>
        evaluateSystem(guix, {
          channels: spec.channels,
          build: spec.build,
          system,
          workDir: dir,
          evaluator: options.evaluator,
          signal,
          timeoutMs: timeoutSeconds > 0 ? timeoutSeconds * 1000 : undefined,
        }).catch((error): EvaluateResult => ({
          ok: false,
          jobs: [],
          log: `lorica: ${(error as Error).message}\n`,
          exitCode: -1,
          limit: null,
        })),
    );
    await Deno.writeTextFile(
      log,
      results.map((result, i) =>
        `;; system ${
          spec.systems[i]
        }: exit ${result.exitCode}, ${result.jobs.length} jobs\n${result.log}`
      ).join("\n"),
      { append: true },
    );
    if (!results.every((result) => result.ok)) {
      // A signal (code > 128) or our own shutdown means it was cut short;
      // our own kill at a limit is a failure, whose reason is logged.
      const timedOut = results.some((result) => result.limit === "timeout");
      const limited = results.some((result) => result.limit !== null);
      const status = signal.aborted ||
          (!limited && results.some((result) => result.exitCode > 128))
        ? EvaluationStatus.aborted
        : EvaluationStatus.failed;
      if (endedElsewhere.signal.aborted) {
        await logEndedElsewhere();
        return failed(status);
      }
      ending = true;
      await recordStatus(id, status, options);
      logger.warn("evaluation failed", {
        evaluation: id,
        spec: spec.name,
        status,
        reason: timedOut ? "timeout" : undefined,
        timeout: timedOut ? timeoutSeconds : undefined,
        log,
      });
      return failed(status, timedOut && status === EvaluationStatus.failed);
    }
    const jobs: NewJob[] = results.flatMap((result) => result.jobs);
    const derivations = [...new Set(jobs.map((job) => job.derivation))];
    // Rooted before they are registered: a pending build's derivation must
    // not be collected (case C14), and a roots directory that cannot be
    // used fails the evaluation with no build registered, and so does a
    // root that cannot be made (a full disk: the evaluation ends aborted).
    await options.gcRoots?.register(derivations, { strict: true });
    // In chunks, each committed on its own: workers are served between
    // them (issue 8).
    const registered = await databaseStep(
      `register the builds of evaluation ${id}`,
      () =>
        registerInChunks(store, id, jobs, {
          priority: spec.priority,
          now: () => epochSeconds(clock),
          whileStarted: true,
          // A registration of many jobs may outlast STALE_AFTER_MS, during
          // which no renewal lands: it commits a heartbeat read as it ends.
          heartbeatNow: () => epochSeconds(clock),
          // A stop, not a cancel: a cancel ends it through the store, which
          // refuses the next chunk (evaluation-ended, below).
          signal: options.signal,
        }),
    );
    ending = true;
    const recorded = await databaseStep(
      `record evaluation ${id} succeeded`,
      () =>
        store.finishEvaluation(
          id,
          EvaluationStatus.succeeded,
          epochSeconds(clock),
        ),
    );
    if (!recorded) {
      if (await store.evaluationCanceled(id).catch(() => false)) {
        // Canceled by an administrator as its registration ended.
        logger.info("evaluation canceled", { evaluation: id, spec: spec.name });
        return failed(EvaluationStatus.aborted);
      }
      // Aborted elsewhere after the registration renewed the heartbeat as
      // it ended: this server was silent for STALE_AFTER_MS in between.
      // The builds stay (pending, they are built), their evaluation
      // aborted.
      logger.error("evaluation aborted elsewhere after its builds", {
        evaluation: id,
        spec: spec.name,
        created: registered.created,
      });
      return failed(EvaluationStatus.aborted);
    }
    logger.info("evaluation succeeded", {
      evaluation: id,
      spec: spec.name,
      jobs: jobs.length,
      created: registered.created,
      known: registered.known,
      blocked: registered.blocked,
    });
    return {
      id,
      status: EvaluationStatus.succeeded,
      jobs: jobs.length,
      created: registered.created,
      derivations,
      timedOut: false,
    };
  } catch (error) {
    if (error instanceof RegistrationStoppedError) {
      // A clean stop of the server: the outcome of a stop during the
      // evaluators, the chunks committed kept (pending, they are built),
      // and the next poll registers the rest as it evaluates the commits
      // again. Not waiting for the rest of a large registration is what
      // lets the stop end before systemd's timeout kills the server.
      const status = EvaluationStatus.aborted;
      if (endedElsewhere.signal.aborted) {
        await logEndedElsewhere();
        return failed(status);
      }
      await Deno.writeTextFile(log, `\nlorica: ${error.message}\n`, {
        append: true,
      }).catch(() => {});
      ending = true;
      await recordStatus(id, status, options);
      logger.warn("evaluation registration stopped", {
        evaluation: id,
        spec: spec.name,
        status,
        registered: error.jobsRegistered,
        jobs: error.jobs,
        created: error.registered.created,
        log,
      });
      // What was evaluated and what the committed chunks created, as for
      // an evaluation that ran to its end.
      return {
        ...failed(status),
        jobs: error.jobs,
        created: error.registered.created,
      };
    }
    if (
      error instanceof DatabaseStepError &&
      error.cause instanceof StoreError &&
      error.cause.code === "evaluation-ended"
    ) {
      // Aborted elsewhere before the registration, or between two of its
      // chunks: the builds of those before stay, pending, as those of an
      // evaluation aborted after its registration do. Canceled by an
      // administrator (here or elsewhere), those were canceled with it.
      await logEndedElsewhere();
      return failed(EvaluationStatus.aborted);
    }
    // Whatever went wrong, the evaluation must not stay "in progress". A
    // full disk, or a database that failed to take the builds (down,
    // restarting, read-only), is the server's failure, not the commits':
    // the evaluation ends aborted, so that the next poll evaluates them
    // again (once space or the database is back) instead of taking them
    // as evaluated.
    const status = isDiskFull(error) || error instanceof DatabaseStepError
      ? EvaluationStatus.aborted
      : EvaluationStatus.failed;
    await Deno.writeTextFile(
      log,
      `\nlorica: ${(error as Error)?.message ?? error}\n`,
      { append: true },
    ).catch(() => {});
    ending = true;
    await recordStatus(id, status, options);
    logger.error("evaluation failed", { evaluation: id, status, log, error });
    return failed(status);
  } finally {
    heartbeatStop.abort();
    await heartbeat;
    if (workDir) {
      await Deno.remove(workDir, { recursive: true }).catch(() => {});
    }
  }
}

/** A store call of an evaluation failed: the database's fault. */
class DatabaseStepError extends Error {
  constructor(step: string, cause: unknown) {
    super(`Cannot ${step}: ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = "DatabaseStepError";
  }
}

/** `action`, its failure wrapped in a {@link DatabaseStepError}. */
async function databaseStep<T>(
  step: string,
  action: () => Promise<T>,
): Promise<T> {
  try {
    return await action();
  } catch (error) {
    // A stop is no failure of the database.
    if (error instanceof RegistrationStoppedError) throw error;
    throw new DatabaseStepError(step, error);
  }
}

/**
 * Records the end of evaluation `id`, trying again (1 s, doubled up to
 * 30 s) while the database refuses: left "in progress", its commits
 * would never be evaluated again until the next start. Gives up only at
 * shutdown (`options.signal`), when the next start aborts it. An
 * evaluation another server aborted meanwhile stays aborted.
 */
async function recordStatus(
  id: number,
  status: EvaluationStatus,
  options: Pick<
    EvaluationRunnerOptions,
    "store" | "clock" | "logger" | "signal"
  >,
): Promise<void> {
  const { store, clock, logger, signal } = options;
  for (let delay = 1000;; delay = Math.min(delay * 2, 30_000)) {
    try {
      if (!await store.finishEvaluation(id, status, epochSeconds(clock))) {
        logger.warn("evaluation aborted elsewhere", { evaluation: id, status });
      }
      return;
    } catch (error) {
      logger.error("evaluation status not recorded", {
        evaluation: id,
        status,
        retryMs: signal?.aborted ? undefined : delay,
        error,
      });
    }
    if (signal?.aborted) return;
    try {
      await clock.sleep(delay, signal);
    } catch {
      return;
    }
  }
}

/**
 * Records an evaluation that could not start (e.g. a channel could not be
 * fetched): status failed at once, `log` as its log.
 */
export async function recordFailedEvaluation(
  spec: Specification,
  options: Pick<
    EvaluationRunnerOptions,
    "store" | "clock" | "logger" | "stateDir"
  >,
  failure: { checkouts: Checkout[]; log: string },
): Promise<EvaluationOutcome> {
  const { store, clock, logger, stateDir } = options;
  const id = await store.addEvaluation(
    spec.name,
    failure.checkouts,
    epochSeconds(clock),
    { owner: await thisProcess() },
  );
  const log = evaluationLogPath(stateDir, id);
  try {
    await Deno.mkdir(`${stateDir}/evaluations`, { recursive: true });
    await Deno.writeTextFile(log, failure.log);
  } finally {
    await store.finishEvaluation(
      id,
      EvaluationStatus.failed,
      epochSeconds(clock),
    );
  }
  // The reason is in the log, as for an evaluation that ran.
  logger.warn("evaluation failed", { evaluation: id, spec: spec.name, log });
  return {
    id,
    status: EvaluationStatus.failed,
    jobs: 0,
    created: 0,
    derivations: [],
    timedOut: false,
  };
}

/**
 * Marks aborted the evaluations that a dead server left started, as the
 * database tells (evaluation_owner.ts): those another live server runs,
 * on this machine or another, whatever its state directory, are left
 * alone. Evaluations recorded before their rows named their owner are
 * judged by their work directory in `stateDir`, as they were then.
 * With `spareOwn`, those of this very process are left alone whatever
 * their heartbeat. Returns how many were aborted.
 */
export async function abortStaleEvaluations(
  store: Store,
  clock: Clock,
  logger: Logger,
  stateDir: string,
  options: { spareOwn?: boolean } = {},
): Promise<number> {
  const self = await thisProcess();
  const now = epochSeconds(clock);
  let count = 0;
  for (const evaluation of await store.listRunningEvaluations()) {
    const { id, owner, heartbeat } = evaluation;
    if (options.spareOwn && owner !== null && sameProcess(owner, self)) {
      continue;
    }
    const running = owner === null
      ? await runByAnotherProcess(stateDir, id)
      : await stillRunning({ ...evaluation, owner }, { self, now });
    if (running) continue;
    // Conditional on the heartbeat read: a renewal since wins.
    if (!await store.abortStaleEvaluation(id, { heartbeat, now })) continue;
    logger.info("stale evaluation aborted", {
      evaluation: id,
      spec: evaluation.specification,
      owner: owner === null ? undefined : `${owner.host}/${owner.pid}`,
      heartbeatAge: heartbeat === null ? undefined : now - heartbeat,
    });
    count++;
  }
  if (count > 0) logger.info("stale evaluations aborted", { count });
  return count;
}

/** What {@link sweepStaleEvaluations} needs. */
export interface StaleEvaluationSweepOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  stateDir: string;
  /** Time between two sweeps. */
  periodMs: number;
  signal: AbortSignal;
}

/**
 * Runs {@link abortStaleEvaluations} every `periodMs` (the first after one
 * period: the start has just swept) until `signal` aborts. With servers
 * sharing a database, one that dies while evaluating is perhaps never
 * started again (its machine is gone): without this, its evaluation would
 * stay started, shown as in progress, until some server restarts.
 */
export async function sweepStaleEvaluations(
  options: StaleEvaluationSweepOptions,
): Promise<void> {
  const { store, clock, logger, stateDir, periodMs, signal } = options;
  while (!signal.aborted) {
    try {
      await clock.sleep(periodMs, signal);
    } catch {
      return;
    }
    try {
      // This process runs its own: a heartbeat that lapsed while the
      // database was out does not end them.
      await abortStaleEvaluations(store, clock, logger, stateDir, {
        spareOwn: true,
      });
    } catch (error) {
      // The database is down, say: the next sweep tries again.
      logger.warn("stale evaluation sweep failed", { error });
    }
  }
}

/**
 * For GC-root expiry: true while the build of `drv` is still pending, so
 * that its derivation stays in the store (case C14).
 */
export function keepPendingDerivations(
  store: Store,
): (drv: string) => Promise<boolean> {
  return async (drv) => {
    const build = await store.getBuildByDerivation(drv);
    return build !== null && build.status < 0;
  };
}

function pinnedCheckouts(spec: Specification): Checkout[] {
  return spec.channels
    .filter((channel) => channel.commit !== null)
    .map((channel) => ({
      channel: channel.name,
      revision: channel.commit!,
      directory: "",
    }));
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
