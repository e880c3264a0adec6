// The daemon's build-trace stream (guix.md 1.2-1.3) as Lorica's build driver
// copies it to standard output: `@ ...` event lines, `@ build-log PID LEN`
// frames of exactly LEN bytes of builder output, and plain daemon messages.
// A builder can only ever write inside a frame, so nothing it prints can
// pass for an event.

import { shippedScriptPath } from "./shipped_script.ts";
import {
  type Child,
  type Spawner,
  type SpawnOptions,
  spawnProcess,
} from "../process.ts";

/** One item of the stream, in order. */
export type BuildEvent =
  | {
    type: "build-started";
    drv: string;
    system: string;
    /** The daemon's log file, "" when it keeps none. */
    logFile: string;
    /** Builder (or offload hook) pid; null when the daemon gave none. */
    pid: number | null;
  }
  | { type: "build-succeeded"; drv: string }
  | {
    type: "build-failed";
    drv: string;
    /** "1", "0", "timeout", "cached"... as the daemon wrote it. */
    code: string;
    message: string;
  }
  | { type: "build-log"; pid: number; data: Uint8Array }
  /** Any other `@` trace (substituter-started, build-remote, ...). */
  | { type: "trace"; name: string; fields: string[] }
  /** A line the daemon itself printed (not framed builder output). */
  | { type: "message"; text: string };

/** Largest frame accepted; a bigger LEN is taken as a daemon message. */
const MAX_FRAME_BYTES = 64 << 20;
/** A line longer than this without a newline is cut into messages. */
const MAX_LINE_BYTES = 64 << 10;
const NEWLINE = 0x0a;
const decoder = new TextDecoder();

/**
 * Parses the stream incrementally: feed chunks as they come with `push`,
 * then call `end` once. Frames are counted in bytes, whatever their content.
 */
export class BuildEventParser {
  #buffer: Uint8Array = new Uint8Array(0);
  /** Bytes still owed to the current frame, and its pid. */
  #frameLeft = 0;
  #framePid = 0;

  /** Parses `chunk` and returns the events it completes. */
  push(chunk: Uint8Array): BuildEvent[] {
    this.#buffer = this.#buffer.length === 0
      ? chunk
      : concat(this.#buffer, chunk);
    const events: BuildEvent[] = [];
    while (this.#buffer.length > 0) {
      if (this.#frameLeft > 0) {
        const take = Math.min(this.#frameLeft, this.#buffer.length);
        events.push({
          type: "build-log",
          pid: this.#framePid,
          data: this.#buffer.slice(0, take),
        });
        this.#buffer = this.#buffer.subarray(take);
        this.#frameLeft -= take;
        continue;
      }
      const end = this.#buffer.indexOf(NEWLINE);
      if (end < 0) {
        if (this.#buffer.length > MAX_LINE_BYTES) {
          events.push({ type: "message", text: decoder.decode(this.#buffer) });
          this.#buffer = new Uint8Array(0);
        }
        break;
      }
      const line = decoder.decode(this.#buffer.subarray(0, end));
      this.#buffer = this.#buffer.subarray(end + 1);
      const event = this.#parseLine(line);
      if (event) events.push(event);
    }
    // Keep only what is still needed, not the whole received history.
    this.#buffer = this.#buffer.slice();
    return events;
  }

  /** Flushes an unterminated last line as a message. */
  end(): BuildEvent[] {
    const rest = this.#frameLeft > 0 ? new Uint8Array(0) : this.#buffer;
    this.#buffer = new Uint8Array(0);
    this.#frameLeft = 0;
    return rest.length > 0
      ? [{ type: "message", text: decoder.decode(rest) }]
      : [];
  }

  #parseLine(line: string): BuildEvent | null {
    if (!line.startsWith("@ ")) return { type: "message", text: line };
    // Single spaces separate fields; empty fields are kept (guix.md 9.6).
    const [, name, ...fields] = line.split(" ");
    switch (name) {
      case "build-log": {
        const pid = natural(fields[0]);
        const length = natural(fields[1]);
        if (
          fields.length !== 2 || pid === null || length === null ||
          length > MAX_FRAME_BYTES
        ) {
          return { type: "message", text: line };
        }
        this.#framePid = pid;
        this.#frameLeft = length;
        return null;
      }
      case "build-started":
        if (fields.length < 4) break;
        return {
          type: "build-started",
          drv: fields[0],
          system: fields[2],
          logFile: fields[3],
          pid: natural(fields[4]),
        };
      case "build-succeeded":
        if (fields.length < 1) break;
        return { type: "build-succeeded", drv: fields[0] };
      case "build-failed":
        if (fields.length < 3) break;
        return {
          type: "build-failed",
          drv: fields[0],
          code: fields[2],
          message: fields.slice(3).join(" "),
        };
    }
    return { type: "trace", name: name ?? "", fields };
  }
}

function natural(text: string | undefined): number | null {
  return text !== undefined && /^[0-9]{1,15}$/.test(text) ? Number(text) : null;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const all = new Uint8Array(a.length + b.length);
  all.set(a);
  all.set(b, a.length);
  return all;
}

// ---------------------------------------------------------------------------
// Running the driver.

/** Starts `guix ARGS...`; the lead's Guix wrapper or a test double. */
export type GuixSpawner = (args: string[], options?: SpawnOptions) => Child;

/** A GuixSpawner running `command` (default "guix") with extra `env`. */
export function guixSpawner(
  options: { command?: string; env?: Record<string, string>; spawn?: Spawner } =
    {},
): GuixSpawner {
  const spawn = options.spawn ?? spawnProcess;
  return (args, spawnOptions = {}) =>
    spawn([options.command ?? "guix", ...args], {
      ...spawnOptions,
      env: { ...options.env, ...spawnOptions.env },
    });
}

/** Path of the Guile build driver shipped next to this module. */
export function defaultBuildDriverPath(): string {
  return shippedScriptPath(new URL("./build_driver.scm", import.meta.url));
}

export interface BuildDriverRequest {
  drvs: string[];
  /** Seconds; 0 or absent: the daemon's default. */
  timeout?: number;
  maxSilentTime?: number;
  /** Builds the daemon may run at once; default 1. */
  maxJobs?: number;
  /** The Guile driver; default the one shipped in lib/guix. */
  driver?: string;
  signal?: AbortSignal;
}

export interface BuildDriverResult {
  /** 0: all built; 1: some failed; anything else: the driver itself failed. */
  exitCode: number;
  signal: string | null;
  /** The driver's standard error (last 64 KiB). */
  stderr: string;
}

/** The state of a derivation in the daemon's store, as the driver sees it. */
export type DerivationState =
  /** Every output is valid. */
  | "valid"
  /** Not valid, but the daemon has a build log: it was built and failed. */
  | "failed"
  /** Neither outputs nor log: never built (e.g. a dependency failed). */
  | "none"
  /** The .drv itself is not in the store. */
  | "missing";

const STATES = new Set(["valid", "failed", "none", "missing"]);
const STDERR_TAIL = 64 << 10;

/**
 * Runs `guix repl -- build_driver.scm [OPTIONS] DRV...` and hands every
 * event of its output to `onEvent`, in order, awaiting each.
 */
export async function runBuildDriver(
  spawnGuix: GuixSpawner,
  request: BuildDriverRequest,
  onEvent: (event: BuildEvent) => Promise<void> | void,
): Promise<BuildDriverResult> {
  const args = ["repl", "--", request.driver ?? defaultBuildDriverPath()];
  if (request.timeout) args.push(`--timeout=${request.timeout}`);
  if (request.maxSilentTime) {
    args.push(`--max-silent-time=${request.maxSilentTime}`);
  }
  if (request.maxJobs) args.push(`--max-jobs=${request.maxJobs}`);
  // Aborted when nobody follows the builds any more; the spawner's own
  // kill (SIGTERM, then SIGKILL once its grace is over) then ends the
  // driver, as on the caller's `signal`.
  const unfollowed = new AbortController();
  const child = spawnGuix([...args, ...request.drvs], {
    signal: request.signal
      ? AbortSignal.any([request.signal, unfollowed.signal])
      : unfollowed.signal,
  });
  const parser = new BuildEventParser();
  let handlerFailure: { error: unknown } | null = null;
  const reading = (async () => {
    for await (const chunk of child.stdout) {
      for (const event of parser.push(chunk)) await onEvent(event);
    }
    for (const event of parser.end()) await onEvent(event);
  })().catch((error) => {
    // Nobody follows the builds any more: stop the driver (its daemon
    // connection with it) rather than leave it building, holding the
    // derivations' locks against the retry of the caller.
    handlerFailure = { error };
    unfollowed.abort();
  });
  const [, stderr, status] = await Promise.all([
    reading,
    readText(child.stderr, STDERR_TAIL),
    child.status,
  ]);
  if (handlerFailure !== null) {
    throw (handlerFailure as { error: unknown }).error;
  }
  return { exitCode: status.code, signal: status.signal, stderr };
}

/** Something the driver printed that Lorica cannot use. */
export class BuildDriverError extends Error {
  constructor(message: string, readonly stderr: string) {
    super(message);
    this.name = "BuildDriverError";
  }
}

/**
 * Asks the driver (`--query`) for the state of each derivation.
 * @throws {BuildDriverError} when the driver fails or answers garbage.
 */
export async function queryDerivations(
  spawnGuix: GuixSpawner,
  drvs: string[],
  options: { driver?: string; signal?: AbortSignal } = {},
): Promise<Map<string, DerivationState>> {
  const states = new Map<string, DerivationState>();
  if (drvs.length === 0) return states;
  const child = spawnGuix([
    "repl",
    "--",
    options.driver ?? defaultBuildDriverPath(),
    "--query",
    ...drvs,
  ], { signal: options.signal });
  const [stdout, stderr, status] = await Promise.all([
    readText(child.stdout, 64 << 20),
    readText(child.stderr, STDERR_TAIL),
    child.status,
  ]);
  if (status.code !== 0) {
    throw new BuildDriverError(
      `Cannot query derivations: the build driver exited with ${
        status.signal ?? status.code
      }: ${JSON.stringify(lastLine(stderr))}`,
      stderr,
    );
  }
  for (const line of stdout.split("\n")) {
    if (line === "") continue;
    // `(state "DRV" valid)`
    const match = /^\(state "([^"\\]+)" ([a-z]+)\)$/.exec(line);
    if (!match || !STATES.has(match[2])) {
      throw new BuildDriverError(
        `Cannot parse build driver output ${
          JSON.stringify(line.slice(0, 120))
        }: not a state line`,
        stderr,
      );
    }
    states.set(match[1], match[2] as DerivationState);
  }
  for (const drv of drvs) {
    if (!states.has(drv)) {
      throw new BuildDriverError(
        `Cannot query derivation ${JSON.stringify(drv)}: no answer`,
        stderr,
      );
    }
  }
  return states;
}

async function readText(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (text.length > maxBytes * 2) text = text.slice(-maxBytes);
  }
  return text.length > maxBytes ? text.slice(-maxBytes) : text;
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split("\n");
  return lines[lines.length - 1] ?? "";
}
