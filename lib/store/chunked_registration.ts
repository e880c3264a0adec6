// Registering a large evaluation in chunks, each a registration and a
// transaction of its own (issue 8). On SQLite one registration holds the
// connection's only write transaction from its first statement to its
// commit: 50,000 jobs held every dispatcher turn (a store batch) for some
// 3 s, and with it every worker asking for work. Between two chunks the
// dispatcher has the database to itself for a while.
//
// What each commit leaves is what a whole registration of the jobs so far
// would: chunks follow the order of the inputs (dependency_order.ts), so
// that every dependency of a job is a build by the time the job is
// registered, and its count of pending dependencies is right (a build of
// an earlier chunk may even have been built meanwhile: it counts as any
// earlier build does). A registration cut short leaves its evaluation
// with the builds of its first chunks, consistent as they are: the
// evaluation is aborted, by the runner or at the next start, its builds
// stay pending and are built, and the next evaluation of its commits
// registers every job again, the builds already there as known ones.
//
// That is why a clean stop of the server (`signal`) does not wait for the
// rest of a registration, which at 250,000 jobs outlasts systemd's stop
// timeout and would end in a SIGKILL anyway: the chunk under way commits,
// the rest between two chunks ends at once, no further chunk starts, and
// the registration throws a RegistrationStoppedError; the runner ends the
// evaluation aborted, as a stop during its evaluators does. Cut short
// otherwise (the server killed, the database failing), it leaves the same.
// An evaluation canceled meanwhile refuses the next chunk, and is not
// evaluated again (cancelEvaluation).

import { type Clock, systemClock } from "../clock.ts";
import { chunksInDependencyOrder } from "./dependency_order.ts";
import type { NewJob, RegisterResult, Store } from "./types.ts";

/**
 * Jobs per chunk: a dispatcher turn waits for at most one chunk, some
 * 70-140 ms for 1,000 jobs at 100,000 builds, up to 200 ms at a million,
 * on two busy cores (bench/registration_pause.ts). Not below
 * STATISTICS_REFRESH_MIN (sql_register.ts): the first chunk of a large
 * evaluation into a fresh PostgreSQL database must be enough to have its
 * tables analyzed.
 */
export const REGISTRATION_CHUNK_JOBS = 1000;

/** Options of {@link registerInChunks}. */
export interface ChunkedRegistrationOptions {
  priority: number;
  /**
   * The time, in epoch seconds, read for each chunk: its builds' creation
   * time, and the heartbeat it renews. (Not the start's for every chunk:
   * a registration longer than STALE_AFTER_MS would set the heartbeat
   * back, and another server would abort the evaluation under it.)
   */
  now: () => number;
  /** See Store.registerBuilds: each chunk refuses an evaluation ended. */
  whileStarted?: boolean;
  /**
   * See Store.registerBuilds: each chunk also renews the heartbeat as it
   * commits (a chunk may wait long for the database).
   */
  heartbeatNow?: () => number;
  /** Jobs per chunk [REGISTRATION_CHUNK_JOBS]. */
  chunkJobs?: number;
  /**
   * Awaited between two chunks, given how long the last one took in ms,
   * whether batches (dispatcher turns) were begun while it ran, and
   * `signal`, on whose abort it should end at once
   * [{@link restAfterChunk}].
   */
  betweenChunks?: (
    chunkMs: number,
    contended: boolean,
    signal?: AbortSignal,
  ) => Promise<void>;
  /**
   * Aborted on a clean stop of the server: the chunk under way commits,
   * and no other starts (see {@link RegistrationStoppedError}).
   */
  signal?: AbortSignal;
}

/**
 * A registration stopped at a chunk boundary by its `signal`: the chunks
 * before are committed, none after was begun.
 */
export class RegistrationStoppedError extends Error {
  constructor(
    readonly evaluation: number,
    /** The sum of the committed chunks' results. */
    readonly registered: RegisterResult,
    /** Jobs in the committed chunks. */
    readonly jobsRegistered: number,
    /** Jobs of the whole registration. */
    readonly jobs: number,
  ) {
    super(
      `Registration of the builds of evaluation ${evaluation} stopped by a server stop after ${jobsRegistered} of ${jobs} jobs`,
    );
    this.name = "RegistrationStoppedError";
  }
}

/**
 * Registers `jobs` of `evaluation` as Store.registerBuilds does, in chunks
 * of about `chunkJobs`, each committed before the next begins; returns
 * the sum of the chunks' results.
 * @throws what Store.registerBuilds throws for a chunk, or what
 * `betweenChunks` throws, or a {@link RegistrationStoppedError} once
 * `signal` is aborted (before a chunk: one under way is completed); the
 * chunks before stay registered.
 */
export async function registerInChunks(
  store: Pick<Store, "registerBuilds" | "batchesBegun">,
  evaluation: number,
  jobs: readonly NewJob[],
  options: ChunkedRegistrationOptions,
): Promise<RegisterResult> {
  const {
    priority,
    now,
    whileStarted = false,
    heartbeatNow,
    chunkJobs = REGISTRATION_CHUNK_JOBS,
    betweenChunks = restAfterChunk,
    signal,
  } = options;
  const chunks = chunksInDependencyOrder(jobs, chunkJobs);
  // No jobs: still one registration, which checks the evaluation.
  if (chunks.length === 0) chunks.push([]);
  const total: RegisterResult = { created: 0, known: 0, blocked: 0 };
  let chunkMs = 0;
  let contended = false;
  let jobsRegistered = 0;
  for (const [index, chunk] of chunks.entries()) {
    if (index > 0) await betweenChunks(chunkMs, contended, signal);
    if (signal?.aborted) {
      throw new RegistrationStoppedError(
        evaluation,
        total,
        jobsRegistered,
        jobs.length,
      );
    }
    const batchesBefore = store.batchesBegun?.();
    const started = performance.now();
    const result = await store.registerBuilds(evaluation, chunk, {
      priority,
      now: now(),
      whileStarted,
      heartbeatNow,
    });
    chunkMs = performance.now() - started;
    // A store that cannot tell is taken as busy: resting costs time only.
    contended = batchesBefore === undefined ||
      store.batchesBegun!() !== batchesBefore;
    total.created += result.created;
    total.known += result.known;
    total.blocked += result.blocked;
    jobsRegistered += chunk.length;
  }
  return total;
}

/**
 * Waits as long as the last chunk took when batches came meanwhile: the
 * dispatcher then gets at least half of the time. Only letting the turns
 * waiting at the end of a chunk run (one turn, of at most 256 messages)
 * fell behind workers asking 1,000 times a second: the backlog grew chunk
 * after chunk, to latencies of 0.5 s and more. With no batch meanwhile
 * (an idle farm) the rest would be pure cost: a 50,000-job registration
 * at a million builds took 13 s instead of about 6.5, so then only what
 * is already waiting runs. Ends at once, without throwing, when `signal`
 * aborts: a stop must not wait for a rest. (The monotonic clock only
 * paces the registration, as in sqlite_steps.ts; nothing it measures is
 * kept.)
 */
export async function restAfterChunk(
  chunkMs: number,
  contended: boolean,
  signal?: AbortSignal,
  clock: Pick<Clock, "sleep"> = systemClock,
): Promise<void> {
  try {
    await clock.sleep(contended ? chunkMs : 0, signal);
  } catch (error) {
    // Only the stop's own rejection ends the rest quietly.
    if (!signal?.aborted) throw error;
  }
}
