// Why each waiting build is not running: dependency, no worker for its system, or its place in line.

import { workerTimeout } from "./worker_status.ts";
import type { Build, BuildStatus, Store, Worker } from "../store/types.ts";

/** A dependency holding a build back. */
export interface BlockingDependency {
  id: number;
  nixName: string;
  status: BuildStatus;
}

/** The reason a pending build is where it is. */
export type WaitReason =
  | { kind: "running"; worker: string | null }
  | { kind: "submitted"; worker: string | null }
  | { kind: "dependency"; dependencies: BlockingDependency[]; more: number }
  | { kind: "no-worker"; system: string }
  | { kind: "behind"; ahead: number; system: string }
  | { kind: "next"; system: string };

/** A pending build with its reason. */
export interface QueueEntry {
  build: Build;
  reason: WaitReason;
}

/** Dependencies named per build at most. */
const NAMED_DEPENDENCIES = 3;

/**
 * Explains the first `limit` pending builds in dispatch order. Workers silent
 * for more than their timeout (see {@link servedSystems}) do not count as
 * serving their systems.
 */
export async function explainQueue(
  store: Store,
  options: {
    limit: number;
    now: number;
    timeoutSeconds: number;
    system?: string;
  },
): Promise<QueueEntry[]> {
  const workers = await store.listWorkers();
  const served = servedSystems(workers, options.now, options.timeoutSeconds);
  const filter = options.system === undefined ? {} : { system: options.system };
  const pending = await store.queue(filter, options.limit);
  const ahead = new Map<string, number>();
  const entries: QueueEntry[] = [];
  for (const build of pending) {
    entries.push({ build, reason: await explain(build) });
  }
  return entries;

  async function explain(build: Build): Promise<WaitReason> {
    if (build.status === -1) return { kind: "running", worker: build.worker };
    if (build.status === -3) return { kind: "submitted", worker: build.worker };
    const blocking = await store.pendingDependencies(build.id);
    if (blocking.length > 0) {
      const dependencies: BlockingDependency[] = [];
      for (const dependency of blocking.slice(0, NAMED_DEPENDENCIES)) {
        const found = await store.getBuild(dependency.id);
        dependencies.push({
          id: dependency.id,
          nixName: found?.nixName ?? `build ${dependency.id}`,
          status: dependency.status,
        });
      }
      return {
        kind: "dependency",
        dependencies,
        more: blocking.length - dependencies.length,
      };
    }
    if (!served.has(build.system)) {
      return { kind: "no-worker", system: build.system };
    }
    const before = ahead.get(build.system) ?? 0;
    ahead.set(build.system, before + 1);
    return before === 0
      ? { kind: "next", system: build.system }
      : { kind: "behind", ahead: before, system: build.system };
  }
}

/**
 * The systems at least one responsive worker builds: silent for no longer
 * than its own timeout (`timeoutSeconds` for rows recording none).
 */
export function servedSystems(
  workers: Worker[],
  now: number,
  timeoutSeconds: number,
): Set<string> {
  const systems = new Set<string>();
  for (const worker of workers) {
    if (now - worker.lastSeen > workerTimeout(worker, timeoutSeconds)) {
      continue;
    }
    for (const system of worker.systems) systems.add(system);
  }
  return systems;
}

/** The reason in one sentence, for pages and JSON. */
export function describeReason(reason: WaitReason): string {
  switch (reason.kind) {
    case "running":
      return `Building on ${reason.worker ?? "a worker"}.`;
    case "submitted":
      return `Handed to ${
        reason.worker ?? "a worker"
      }, waiting for it to start.`;
    case "dependency": {
      const names = reason.dependencies.map((d) => d.nixName).join(", ");
      const more = reason.more > 0 ? ` and ${reason.more} more` : "";
      return `Waiting for ${
        reason.dependencies.length + reason.more === 1
          ? "dependency"
          : "dependencies"
      } ${names}${more} to be built.`;
    }
    case "no-worker":
      return `No connected worker builds for ${reason.system}.`;
    case "behind":
      return `${reason.ahead} ${
        reason.ahead === 1 ? "build" : "builds"
      } for ${reason.system} ${
        reason.ahead === 1 ? "goes" : "go"
      } first (higher priority or older).`;
    case "next":
      return `Next for ${reason.system}: waiting for a free worker.`;
  }
}
