// The process spawner, injected wherever subprocesses are part of the logic.

import { type Clock, systemClock } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * Time a child has to exit after SIGTERM before it gets SIGKILL: room for
 * `guix build` to close its daemon connection, or for `guix publish` to
 * finish the responses under way.
 */
export const DEFAULT_KILL_GRACE_MS = 10_000;

/** How `terminate()` ends a child. */
export interface TerminateOptions {
  /** SIGKILL follows SIGTERM after this long; default DEFAULT_KILL_GRACE_MS. */
  graceMs?: number;
  /** Times the grace; default the system clock. */
  clock?: Clock;
  /** Told when SIGTERM was not enough. */
  logger?: Logger;
}

export interface SpawnOptions {
  /** Variables added to (or overriding) the inherited environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** "piped" gives the child a writable standard input; default "null". */
  stdin?: "null" | "piped";
  /**
   * Ends the child when aborted, as `terminate()` does: SIGTERM, then
   * SIGKILL after `killGraceMs` if it still runs.
   */
  signal?: AbortSignal;
  /**
   * Starts the child as the leader of a session and process group of its
   * own, through setsid(1) when it is on PATH, so that `kill()` (and
   * `signal`) reach every process it started that stayed in its group,
   * not the child alone. Without setsid(1), only the child is signalled.
   */
  ownGroup?: boolean;
  /**
   * Has the kernel SIGKILL the child when this process dies, even by
   * SIGKILL (through setpriv(1) --pdeathsig, when it is on PATH). For a
   * long-running child that nothing else ends: a `guix publish` left
   * behind by a killed server or worker holds its port, and the restarted
   * program cannot start its own. Without setpriv(1), the child may
   * outlive this process.
   */
  diesWithParent?: boolean;
  /** The grace of the kill on `signal`; default DEFAULT_KILL_GRACE_MS. */
  killGraceMs?: number;
  /** Times that grace; default the system clock. */
  clock?: Clock;
  /** Told when that kill needed SIGKILL. */
  logger?: Logger;
}

export interface ChildStatus {
  code: number;
  signal: string | null;
}

export interface Child {
  readonly pid: number;
  readonly stdout: ReadableStream<Uint8Array>;
  readonly stderr: ReadableStream<Uint8Array>;
  /** Present only with `stdin: "piped"`. */
  readonly stdin: WritableStream<Uint8Array> | null;
  readonly status: Promise<ChildStatus>;
  /** Signals the child, or its whole group when started with `ownGroup`. */
  kill(signal?: Deno.Signal): void;
}

/** Starts `argv[0]` with arguments `argv.slice(1)`. */
export type Spawner = (argv: string[], options?: SpawnOptions) => Child;

/** The real spawner, on `Deno.Command`. */
export function spawnProcess(
  argv: string[],
  options: SpawnOptions = {},
): Child {
  const setsid = options.ownGroup ? wrapperCommand("setsid") : null;
  const setpriv = options.diesWithParent ? wrapperCommand("setpriv") : null;
  // Both exec the command in place: its pid is the child's. (The kernel
  // sends the signal when the thread that forked the child ends; Deno
  // spawns from its main thread, which lives as long as the process.)
  const wrappers = [
    ...setsid ? [setsid] : [],
    ...setpriv ? [setpriv, "--pdeathsig", "KILL", "--"] : [],
  ];
  // Resolved here, so that a missing command is NotFound as without the
  // wrappers, not their own complaint.
  const [command, ...args] = wrappers.length > 0
    ? [
      ...wrappers,
      resolveCommand(argv[0], options.env?.PATH),
      ...argv.slice(1),
    ]
    : argv;
  const child = new Deno.Command(command, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: options.stdin ?? "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const status = child.status.then((s) => ({
    code: s.code,
    signal: s.signal,
  }));
  function kill(signal: Deno.Signal = "SIGTERM") {
    try {
      // A child of Deno is no group leader, so setsid(1) makes it one in
      // place (no fork): its pid names its group. The group outlives it
      // while any member lives, and its id is not reused meanwhile.
      if (setsid) Deno.kill(-child.pid, signal);
      else child.kill(signal);
    } catch {
      // Already exited, with all its group: nothing to kill.
    }
  }
  const handle: Child = {
    pid: child.pid,
    stdout: child.stdout,
    stderr: child.stderr,
    stdin: options.stdin === "piped" ? child.stdin : null,
    status,
    kill,
  };
  if (options.signal) {
    const { signal } = options;
    const abort = () =>
      void terminate(handle, {
        graceMs: options.killGraceMs,
        clock: options.clock,
        logger: options.logger,
      });
    if (signal.aborted) abort();
    else {
      signal.addEventListener("abort", abort, { once: true });
      void status.then(() => signal.removeEventListener("abort", abort));
    }
  }
  return handle;
}

/**
 * Ends `child`: SIGTERM, then SIGKILL to the same target (its group when
 * started with `ownGroup`) if it has not exited after the grace, or as
 * soon as it has (what is left of its group). A child that ignores SIGTERM
 * (a builder trapping it, a hung daemon client) would otherwise be waited
 * for forever. Resolves with its status.
 */
export async function terminate(
  child: Child,
  options: TerminateOptions = {},
): Promise<ChildStatus> {
  const {
    graceMs = DEFAULT_KILL_GRACE_MS,
    clock = systemClock,
    logger,
  } = options;
  let exited = false;
  const ended = new AbortController();
  void child.status.then(() => {
    exited = true;
    ended.abort();
  });
  child.kill("SIGTERM");
  await clock.sleep(graceMs, ended.signal).catch(() => {});
  if (!exited) {
    logger?.warn("process killed", {
      pid: child.pid,
      signal: "SIGKILL",
      grace: graceMs / 1000,
      reason: "still running after SIGTERM",
    });
  }
  // Also once it obeyed: with `ownGroup`, members that ignored SIGTERM
  // outlive the command, holding its pipes open, working for nobody. They
  // go now, while the group's id cannot name another group yet (a no-op
  // for a child alone, or a group already empty).
  child.kill("SIGKILL");
  return await child.status;
}

/** The wrappers found on PATH, each looked up once. */
const wrapperPaths = new Map<string, string | null>();

/** The wrapper `name` (setsid(1), setpriv(1)) found on PATH, or null. */
function wrapperCommand(name: "setsid" | "setpriv"): string | null {
  if (!wrapperPaths.has(name)) wrapperPaths.set(name, findOnPath(name));
  return wrapperPaths.get(name)!;
}

/**
 * `command` as a path: itself when it names one, else the first executable
 * of that name on `path` (default this process's PATH).
 * @throws {Deno.errors.NotFound} when there is none.
 */
function resolveCommand(command: string, path?: string): string {
  if (command.includes("/")) return command;
  const found = findOnPath(command, path);
  if (found === null) {
    throw new Deno.errors.NotFound(
      `Cannot run ${JSON.stringify(command)}: not found on PATH`,
    );
  }
  return found;
}

function findOnPath(
  name: string,
  path = Deno.env.get("PATH") ?? "",
): string | null {
  for (const dir of path.split(":")) {
    if (dir === "") continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0) & 0o111) !== 0) {
        return `${dir}/${name}`;
      }
    } catch {
      // Not in this directory.
    }
  }
  return null;
}

/**
 * Reads a stream to its end, keeping at most the last `maxBytes`. Aborting
 * `signal` ends the reading early with what came so far: a pipe that a
 * killed command's own children still hold open never reaches its end.
 * When `onChunk` returns a promise, the next read waits for it: a consumer
 * that falls behind holds the writer back (its pipe fills) instead of
 * queueing what it has not handled yet in memory.
 */
export async function readTail(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
  onChunk?: (chunk: Uint8Array) => void | Promise<void>,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const kept: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  const stop = () => void reader.cancel().catch(() => {});
  if (signal?.aborted) stop();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    while (true) {
      const { done, value: chunk } = await reader.read();
      if (done) break;
      await onChunk?.(chunk);
      kept.push(chunk);
      size += chunk.length;
      while (size - kept[0].length >= maxBytes) size -= kept.shift()!.length;
    }
  } catch (error) {
    // As `for await` did: a failed consumer closes the pipe.
    await reader.cancel().catch(() => {});
    throw error;
  } finally {
    signal?.removeEventListener("abort", stop);
    reader.releaseLock();
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of kept) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all.length > maxBytes ? all.slice(all.length - maxBytes) : all;
}
