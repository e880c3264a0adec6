// Who runs an evaluation, and whether it still does. Several servers may
// share one database, each with a state directory of its own, possibly on
// several machines (docs/deployment.md, section 5; issue 8): the answer
// must come from the database, which all of them see. An evaluation's row
// names the process that runs it (host, pid, process start), and that
// process renews the row's heartbeat every HEARTBEAT_INTERVAL_MS while it
// runs. A server starting up, and each running server every
// HEARTBEAT_INTERVAL_MS (not for its own), aborts a started evaluation
// only when:
// - its owner was a process of this host that is gone (a fast, exact
//   answer: /proc says so), or
// - its heartbeat is older than STALE_AFTER_MS (an owner elsewhere, which
//   only the database can vouch for).
// Wall clocks of the machines are compared, so they are assumed to agree
// (NTP) to well within STALE_AFTER_MS - HEARTBEAT_INTERVAL_MS.

import { type Clock, epochSeconds, everyInterval } from "../clock.ts";
import type { Logger } from "../log.ts";
import type {
  EvaluationOwner,
  RunningEvaluation,
  Store,
} from "../store/types.ts";

/** How often a running evaluation's owner renews its heartbeat. */
export const HEARTBEAT_INTERVAL_MS = 30_000;

/**
 * How old a heartbeat must be before another server takes its evaluation
 * for abandoned: three renewals missed, so that one slow database write
 * or a short outage of the database does not end a live evaluation.
 */
export const STALE_AFTER_MS = 3 * HEARTBEAT_INTERVAL_MS;

/** This process, as an evaluation's owner. */
export async function thisProcess(): Promise<EvaluationOwner> {
  return {
    host: thisHost(),
    pid: Deno.pid,
    started: await processStart(Deno.pid) ?? "",
  };
}

let hostIdentity: string | undefined;

/**
 * The host name, the PID namespace whose pids this process sees, and the
 * kernel's boot id: only a process of that very namespace and boot can be
 * looked up in this /proc. Two containers of one host name (a fixed
 * --hostname, host networking) would otherwise each look the other's pids
 * up in their own /proc and find them dead, or taken by another process;
 * so would two machines of one host name (cloned from one image, say),
 * whose initial namespaces have the same inode on every Linux kernel
 * (4026531836). Owners of another namespace or boot are judged by their
 * heartbeat. Without /proc, the host name alone.
 */
export function thisHost(): string {
  hostIdentity ??= hostIdentityOf({
    hostName: Deno.hostname(),
    pidNamespace: readProc(() => Deno.readLinkSync("/proc/self/ns/pid")),
    bootId: readProc(() =>
      Deno.readTextFileSync("/proc/sys/kernel/random/boot_id")
    ),
  });
  return hostIdentity;
}

/**
 * The identity {@link thisHost} gives a process: its host name first (the
 * pages show that part), then "pid:[INODE]" and "boot:ID", each when
 * known. Space-separated: a host name holds no space.
 */
export function hostIdentityOf(parts: {
  hostName: string;
  /** The target of /proc/self/ns/pid, e.g. "pid:[4026531836]". */
  pidNamespace?: string;
  /** The content of /proc/sys/kernel/random/boot_id. */
  bootId?: string;
}): string {
  const { hostName, pidNamespace, bootId } = parts;
  return [
    hostName,
    ...(pidNamespace ? [pidNamespace] : []),
    ...(bootId ? [`boot:${bootId}`] : []),
  ].join(" ");
}

/** What `read` returns, trimmed, or undefined without /proc. */
function readProc(read: () => string): string | undefined {
  try {
    return read().trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `evaluation` is still run by a live server, as far as the
 * database and this host tell; `self` is this process. An evaluation
 * without an owner is not judged here (see abortStaleEvaluations).
 */
export async function stillRunning(
  evaluation: RunningEvaluation & { owner: EvaluationOwner },
  options: { self: EvaluationOwner; now: number },
): Promise<boolean> {
  const { owner } = evaluation;
  const { self, now } = options;
  const thisOne = sameProcess(owner, self);
  // Another process of this host: /proc answers at once. (This very
  // process may run several servers, as tests do: the heartbeat judges.)
  if (owner.host === self.host && !thisOne) return await isLive(owner);
  return evaluation.heartbeat !== null &&
    (now - evaluation.heartbeat) * 1000 <= STALE_AFTER_MS;
}

/** Whether `a` and `b` name the same process of the same host. */
export function sameProcess(a: EvaluationOwner, b: EvaluationOwner): boolean {
  return a.host === b.host && a.pid === b.pid && a.started === b.started;
}

/** Whether `owner` names a live process of this host. */
export async function isLive(owner: EvaluationOwner): Promise<boolean> {
  if (owner.host !== thisHost()) return false;
  const started = await processStart(owner.pid);
  return started !== null && started === owner.started;
}

/** What {@link keepHeartbeat} needs. */
export interface HeartbeatOptions {
  store: Store;
  clock: Clock;
  logger: Logger;
  /** Stops the renewals (the evaluation ended). */
  signal: AbortSignal;
  /** Called once if the evaluation is found no longer started. */
  onEnded: () => void;
}

/**
 * Renews the heartbeat of evaluation `id` every HEARTBEAT_INTERVAL_MS
 * until `signal` aborts; resolves then, or once a renewal finds that the
 * evaluation is no longer started (another server aborted it), after
 * calling `onEnded`. A renewal the database refuses is logged and the
 * next is tried when due: missing a few is what STALE_AFTER_MS allows.
 * The interval runs from when a renewal was issued (see everyInterval).
 */
export async function keepHeartbeat(
  id: number,
  options: HeartbeatOptions,
): Promise<void> {
  const { store, clock, logger, signal, onEnded } = options;
  await everyInterval(clock, HEARTBEAT_INTERVAL_MS, signal, async () => {
    let renewed: boolean;
    try {
      renewed = await store.renewEvaluationHeartbeat(id, epochSeconds(clock));
    } catch (error) {
      logger.warn("evaluation heartbeat not renewed", {
        evaluation: id,
        error,
      });
      return true;
    }
    if (!renewed && !signal.aborted) onEnded();
    return renewed;
  });
}

/** Field 22 of /proc/PID/stat (start time), or null without that process. */
export async function processStart(pid: number): Promise<string | null> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // The command name (field 2) may hold spaces: count after its ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    return state === "Z" ? null : fields[19] ?? null;
  } catch {
    return null;
  }
}
