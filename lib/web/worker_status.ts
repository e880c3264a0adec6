// What each worker is doing, for `/workers` and `/api/workers` (cuirass.md §7.4).

import type { Build, Store, Worker } from "../store/types.ts";

/** A worker with its current build and whether it still answers. */
export interface WorkerStatus {
  worker: Worker;
  /** The build it is busy with, or null when idle. */
  currentBuild: Build | null;
  /** Every started or submitted build it holds. */
  builds: Build[];
  /** Seconds since its last message, by the server clock. */
  silentSeconds: number;
  /**
   * True when it has been silent for most of the worker timeout (see
   * {@link unresponsiveAfter}).
   */
  unresponsive: boolean;
  /** True while it asks for no work, short of disk space (C09). */
  diskLow: boolean;
}

/** Builds one worker can hold at once, far above any real parallelism. */
const MAX_BUILDS_PER_WORKER = 100;

/**
 * Lists the workers by name with their current builds. Each is judged by
 * its own timeout ({@link workerTimeout}); `timeoutSeconds`, this server's,
 * judges the rows that record none.
 */
export async function listWorkerStatuses(
  store: Store,
  now: number,
  timeoutSeconds: number,
  diskLow: (name: string) => boolean = () => false,
): Promise<WorkerStatus[]> {
  const workers = await store.listWorkers();
  workers.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const statuses: WorkerStatus[] = [];
  for (const worker of workers) {
    const builds = (await store.queue(
      { worker: worker.name },
      MAX_BUILDS_PER_WORKER,
    )).filter((build) =>
      build.worker === worker.name && (build.status === -1 ||
        build.status === -3)
    );
    const silentSeconds = Math.max(0, now - worker.lastSeen);
    statuses.push({
      worker,
      currentBuild: pickCurrentBuild(builds),
      builds,
      silentSeconds,
      unresponsive: silentSeconds >
        unresponsiveAfter(workerTimeout(worker, timeoutSeconds)),
      diskLow: diskLow(worker.name),
    });
  }
  return statuses;
}

/**
 * Seconds of silence after which `worker` is gone: the timeout its row
 * records (that of the server that heard it, which every server's sweep
 * applies), else `timeoutSeconds`, this server's own.
 */
export function workerTimeout(worker: Worker, timeoutSeconds: number): number {
  return worker.timeoutSeconds ?? timeoutSeconds;
}

/**
 * Seconds of silence after which a worker shows as unresponsive: three
 * quarters of the timeout. At the timeout itself the server forgets the
 * worker, so a page waiting for it would never show one; a worker that
 * pings every minute stays well below it with the default 120 s.
 */
export function unresponsiveAfter(timeoutSeconds: number): number {
  return timeoutSeconds * 0.75;
}

/**
 * The started build with the latest start (then highest id), as Cuirass
 * shows it; failing that, the newest submitted one.
 */
export function pickCurrentBuild(builds: Build[]): Build | null {
  let best: Build | null = null;
  for (const build of builds) {
    if (best === null || rank(build, best) > 0) best = build;
  }
  return best;
}

function rank(a: Build, b: Build): number {
  const aStarted = a.status === -1 ? 1 : 0;
  const bStarted = b.status === -1 ? 1 : 0;
  return (aStarted - bStarted) || (a.starttime - b.starttime) || (a.id - b.id);
}
