// The one door to Guix: every `guix` subprocess Lorica runs goes through here.

import {
  type Child,
  DEFAULT_KILL_GRACE_MS,
  readTail,
  type Spawner,
  type SpawnOptions,
  spawnProcess,
  terminate,
} from "../process.ts";
import type { Logger } from "../log.ts";
import { type Clock, systemClock } from "../clock.ts";

/** A `guix` invocation that failed; carries the command and its stderr tail. */
export class GuixCommandError extends Error {
  constructor(
    readonly argv: string[],
    readonly exitCode: number,
    readonly stderrTail: string,
  ) {
    super(
      `Cannot run ${
        JSON.stringify(argv.slice(0, 3).join(" "))
      }: exit code ${exitCode}: ${lastLine(stderrTail)}`,
    );
    this.name = "GuixCommandError";
  }
}

export interface GuixOptions {
  /** The `guix` executable; default "guix" from PATH. */
  command?: string;
  /** Extra environment for every invocation. */
  env?: Record<string, string>;
  spawn?: Spawner;
  /**
   * Times the `timeoutMs` of `run()` and the grace of a kill; default the
   * system clock.
   */
  clock?: Clock;
  /**
   * How long a guix being stopped (an aborted `signal`, `stop()`) has
   * between SIGTERM and SIGKILL; default DEFAULT_KILL_GRACE_MS.
   */
  killGraceMs?: number;
  logger: Logger;
}

export interface BuildOptions {
  timeout?: number;
  maxSilentTime?: number;
  /** Empty list: no substitutes at all. */
  substituteUrls?: string[];
  /** 0: substitute only, never build. */
  maxJobs?: number;
  cores?: number;
  keepGoing?: boolean;
  fallback?: boolean;
  /**
   * Receives the build's standard error (its log) as it comes; a promise
   * returned holds the reading of more until it settles.
   */
  onLog?: (chunk: Uint8Array) => void | Promise<void>;
  signal?: AbortSignal;
}

export interface BuildResult {
  ok: boolean;
  exitCode: number;
  /** The signal that ended `guix build`, or null when it exited. */
  signal: string | null;
  /** Output paths `guix build` printed. */
  outputs: string[];
  /** The last 8 KiB of standard error, for error reports. */
  stderrTail: string;
}

export interface RunOptions {
  stdin?: string;
  /** Returns a failed result instead of throwing. */
  allowFailure?: boolean;
  /** Kills guix and every process it started in its group when aborted. */
  signal?: AbortSignal;
  /** Kills them after this long [no limit]. */
  timeoutMs?: number;
  /** Kills them once standard output exceeds this [64 MiB]. */
  maxStdoutBytes?: number;
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Killed after `timeoutMs`. */
  timedOut: boolean;
  /** Killed for writing more than `maxStdoutBytes` (then `stdout` is cut). */
  stdoutTooLarge: boolean;
  /** Bytes read from standard output, all of them even when cut. */
  stdoutBytes: number;
}

/** Default `maxStdoutBytes` of `Guix.run()`. */
export const RUN_STDOUT_LIMIT = 64 << 20;

const STDERR_TAIL_BYTES = 8192;

/** Runs `guix` subcommands as subprocesses. */
export class Guix {
  readonly #command: string;
  readonly #env: Record<string, string>;
  readonly #spawn: Spawner;
  readonly #clock: Clock;
  readonly #killGraceMs: number;
  readonly #logger: Logger;

  constructor(options: GuixOptions) {
    this.#command = options.command ?? "guix";
    this.#env = options.env ?? {};
    this.#spawn = options.spawn ?? spawnProcess;
    this.#clock = options.clock ?? systemClock;
    this.#killGraceMs = options.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
    this.#logger = options.logger;
  }

  /**
   * Spawns `argv`, explaining a missing command: Lorica needs Guix (or the
   * fake of its tests) on PATH. Aborting `options.signal` kills it with
   * this wrapper's grace, clock and logger.
   */
  #launch(argv: string[], options: SpawnOptions): Child {
    try {
      return this.#spawn(argv, {
        killGraceMs: this.#killGraceMs,
        clock: this.#clock,
        logger: this.#logger,
        ...options,
      });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new GuixCommandError(
        argv,
        127,
        `no ${
          JSON.stringify(argv[0])
        } command found on PATH: install Guix, or put its guix on PATH`,
      );
    }
  }

  /** Starts `guix ARGS...` with this wrapper's environment. */
  spawn(args: string[], options: SpawnOptions = {}): Child {
    return this.#launch([this.#command, ...args], {
      ...options,
      env: { ...this.#env, ...options.env },
    });
  }

  /** Builds (or substitutes) derivations with `guix build`. */
  async build(
    drvs: string[],
    options: BuildOptions = {},
  ): Promise<BuildResult> {
    // `guix build` parses its command line with SRFI-37's args-fold, which
    // reads nothing after `--` as an option: whatever a derivation name
    // holds, it cannot become `-e EXPR` or `--load=FILE`.
    const argv = [
      this.#command,
      "build",
      ...buildFlags(options),
      "--",
      ...drvs,
    ];
    this.#logger.debug("guix started", { argv: argv.join(" ") });
    const child = this.#launch(argv, {
      env: this.#env,
      signal: options.signal,
      // Were this process killed, guix build would go on building (a
      // silent phase writes nothing that could fail) for nobody, beside
      // the builds the restarted program takes: the daemon cancels a
      // build whose client is gone.
      diesWithParent: true,
    });
    const [stdout, stderr, status] = await Promise.all([
      readTail(child.stdout, 1 << 20),
      readTail(child.stderr, STDERR_TAIL_BYTES, options.onLog),
      child.status,
    ]);
    const outputs = decode(stdout).split("\n").filter((line) => line !== "");
    return {
      ok: status.code === 0,
      exitCode: status.code,
      signal: status.signal,
      outputs,
      stderrTail: decode(stderr),
    };
  }

  /**
   * Makes the outputs of `drv` valid here by substituting them from `url`
   * only, never building.
   * @throws {GuixCommandError} when they cannot be substituted.
   */
  async substitute(
    drv: string,
    url: string,
    signal?: AbortSignal,
  ): Promise<string[]> {
    const result = await this.build([drv], {
      maxJobs: 0,
      substituteUrls: [url],
      signal,
    });
    if (!result.ok) {
      throw new GuixCommandError(
        ["guix", "build", "--max-jobs=0", "--", drv],
        result.exitCode,
        result.stderrTail,
      );
    }
    return result.outputs;
  }

  /**
   * Runs `guix ARGS...`, collecting both outputs whole (for short commands).
   * Guix runs in a process group of its own: a timeout, too much output or
   * `signal` kills the group, so that no child of guix lives on.
   * @throws {GuixCommandError} on a non-zero exit unless `allowFailure`.
   */
  async run(args: string[], options: RunOptions = {}): Promise<RunResult> {
    const argv = [this.#command, ...args];
    const maxStdout = options.maxStdoutBytes ?? RUN_STDOUT_LIMIT;
    this.#logger.debug("guix started", { argv: argv.join(" ") });
    const child = this.#launch(argv, {
      env: this.#env,
      stdin: options.stdin === undefined ? "null" : "piped",
      signal: options.signal,
      ownGroup: true,
      // An evaluator left behind by a killed server would evaluate on for
      // hours beside the restarted server's own.
      diesWithParent: true,
    });
    // A process that left the group may still hold the pipes: once guix
    // is dead, stop reading them, or no limit would bound anything.
    const abandonPipes = new AbortController();
    const killAll = () => {
      child.kill("SIGKILL");
      void child.status.then(() => abandonPipes.abort());
    };
    const finished = new AbortController();
    let timedOut = false;
    const timer = options.timeoutMs === undefined
      ? Promise.resolve()
      : this.#clock.sleep(options.timeoutMs, finished.signal).then(() => {
        timedOut = true;
        killAll();
      }, () => {});
    let stdoutBytes = 0;
    let stdoutTooLarge = false;
    const countStdout = (chunk: Uint8Array) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxStdout && !stdoutTooLarge) {
        stdoutTooLarge = true;
        killAll();
      }
    };
    if (options.stdin !== undefined && child.stdin) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(options.stdin));
      await writer.close();
    }
    const [stdout, stderr, status] = await Promise.all([
      readTail(child.stdout, maxStdout, countStdout, abandonPipes.signal),
      readTail(child.stderr, 1 << 20, undefined, abandonPipes.signal),
      child.status,
    ]).finally(() => finished.abort());
    await timer;
    const result = {
      exitCode: status.code,
      stdout: decode(stdout),
      stderr: decode(stderr),
      timedOut,
      stdoutTooLarge,
      stdoutBytes,
    };
    if (status.code !== 0 && !options.allowFailure) {
      throw new GuixCommandError(argv, status.code, result.stderr);
    }
    return result;
  }

  /**
   * Starts a long-running `guix ARGS...` (e.g. `publish`), its output
   * forwarded to the logger line by line. An exit that `stop()` did not ask
   * for is logged as an error, with the last line of standard error.
   */
  start(
    args: string[],
    name: string,
    options: { onStderrLine?: (line: string) => void } = {},
  ): RunningGuix {
    const argv = [this.#command, ...args];
    // Nothing but stop() ends it: were this process killed, it would live
    // on, holding its port against the restarted program's own.
    const child = this.#launch(argv, { env: this.#env, diesWithParent: true });
    const logger = this.#logger.with({ process: name, pid: child.pid });
    logger.info("process started", { argv: argv.join(" ") });
    let lastLine = "";
    let stopping = false;
    const drain = Promise.all([
      forwardLines(
        child.stdout,
        (line) => logger.debug("process output", { line }),
      ),
      forwardLines(child.stderr, (line) => {
        lastLine = line;
        logger.info("process output", { line });
        options.onStderrLine?.(line);
      }),
    ]);
    const exited = child.status.then(async (status): Promise<GuixExit> => {
      await drain;
      const exit = { ...status, requested: stopping, lastLine };
      if (stopping) {
        logger.info("process exited", {
          code: status.code,
          signal: status.signal,
        });
      } else {
        logger.error("process exited", {
          code: status.code,
          signal: status.signal,
          reason: lastLine || undefined,
        });
      }
      return exit;
    });
    return {
      pid: child.pid,
      exited,
      stop: async () => {
        stopping = true;
        await terminate(child, {
          graceMs: this.#killGraceMs,
          clock: this.#clock,
          logger: this.#logger,
        });
        await exited;
      },
    };
  }
}

/** How a long-running guix subprocess ended. */
export interface GuixExit {
  code: number;
  signal: string | null;
  /** Whether `stop()` asked for it. */
  requested: boolean;
  /** The last line it wrote on standard error, often its error message. */
  lastLine: string;
}

/** A long-running guix subprocess. */
export interface RunningGuix {
  readonly pid: number;
  /** Resolves once it exited and its output was read. */
  readonly exited: Promise<GuixExit>;
  stop(): Promise<void>;
}

function buildFlags(options: BuildOptions): string[] {
  const flags: string[] = [];
  if (options.timeout) flags.push(`--timeout=${options.timeout}`);
  if (options.maxSilentTime) {
    flags.push(`--max-silent-time=${options.maxSilentTime}`);
  }
  if (options.substituteUrls !== undefined) {
    if (options.substituteUrls.length === 0) flags.push("--no-substitutes");
    else flags.push(`--substitute-urls=${options.substituteUrls.join(" ")}`);
  }
  if (options.maxJobs !== undefined) {
    flags.push(`--max-jobs=${options.maxJobs}`, "--no-offload");
  }
  if (options.cores !== undefined) flags.push(`--cores=${options.cores}`);
  if (options.keepGoing) flags.push("--keep-going");
  if (options.fallback) flags.push("--fallback");
  return flags;
}

/**
 * Longest line forwarded whole: a longer one is forwarded in pieces of
 * this size, so that a child printing without newlines holds no more than
 * this here, and each piece is searched for a newline once.
 */
export const MAX_FORWARDED_LINE_LENGTH = 64 * 1024;

async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  emit: (line: string) => void,
) {
  // The start of a line whose end has not come yet; only new text is
  // searched for its end.
  let pending = "";
  const emitLongOnes = () => {
    while (pending.length > MAX_FORWARDED_LINE_LENGTH) {
      emit(pending.slice(0, MAX_FORWARDED_LINE_LENGTH));
      pending = pending.slice(MAX_FORWARDED_LINE_LENGTH);
    }
  };
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = text.split("\n");
    const last = lines.pop()!;
    for (const line of lines) {
      pending += line;
      emitLongOnes();
      if (pending !== "") emit(pending);
      pending = "";
    }
    pending += last;
    emitLongOnes();
  }
  if (pending !== "") emit(pending);
}

const decoder = new TextDecoder();

function decode(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split("\n");
  return lines[lines.length - 1] ?? "";
}
