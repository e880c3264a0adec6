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
// earlier build does). A registration cut short (the server killed, the
// database failing; a clean stop waits for its end) leaves its evaluation
// with the builds of its first chunks, consistent as they are: the
// evaluation is aborted, by the runner or at the next start, its builds
// stay pending and are built, and the next evaluation of its commits
// registers every job again, the builds already there as known ones. An
// evaluation canceled meanwhile refuses the next chunk, and is not
// evaluated again (cancelEvaluation).

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
   * Awaited between two chunks, given how long the last one took in ms
   * and whether batches (dispatcher turns) were begun while it ran
   * [{@link restAfterChunk}].
   */
  betweenChunks?: (chunkMs: number, contended: boolean) => Promise<void>;
}

/**
 * Registers `jobs` of `evaluation` as Store.registerBuilds does, in chunks
 * of about `chunkJobs`, each committed before the next begins; returns
 * the sum of the chunks' results.
 * @throws what Store.registerBuilds throws for a chunk, or what
 * `betweenChunks` throws; the chunks before stay registered.
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
  } = options;
  const chunks = chunksInDependencyOrder(jobs, chunkJobs);
  // No jobs: still one registration, which checks the evaluation.
  if (chunks.length === 0) chunks.push([]);
  const total: RegisterResult = { created: 0, known: 0, blocked: 0 };
  let chunkMs = 0;
  let contended = false;
  for (const [index, chunk] of chunks.entries()) {
    if (index > 0) await betweenChunks(chunkMs, contended);
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
 * is already waiting runs. (The monotonic clock only paces the
 * registration, as in sqlite_steps.ts; nothing it measures is kept.)
 */
export function restAfterChunk(
  chunkMs: number,
  contended: boolean,
): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, contended ? chunkMs : 0));
}
