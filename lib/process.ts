// The process spawner, injected wherever subprocesses are part of the logic.

export interface SpawnOptions {
  /** Variables added to (or overriding) the inherited environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** "piped" gives the child a writable standard input; default "null". */
  stdin?: "null" | "piped";
  /** Kills the child (SIGTERM) when aborted. */
  signal?: AbortSignal;
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
  kill(signal?: Deno.Signal): void;
}

/** Starts `argv[0]` with arguments `argv.slice(1)`. */
export type Spawner = (argv: string[], options?: SpawnOptions) => Child;

/** The real spawner, on `Deno.Command`. */
export function spawnProcess(
  argv: string[],
  options: SpawnOptions = {},
): Child {
  const [command, ...args] = argv;
  const child = new Deno.Command(command, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: options.stdin ?? "null",
    stdout: "piped",
    stderr: "piped",
    signal: options.signal,
  }).spawn();
  return {
    pid: child.pid,
    stdout: child.stdout,
    stderr: child.stderr,
    stdin: options.stdin === "piped" ? child.stdin : null,
    status: child.status.then((s) => ({ code: s.code, signal: s.signal })),
    kill(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // Already exited: nothing to kill.
      }
    },
  };
}

/**
 * Reads a stream to its end, keeping at most the last `maxBytes`. Aborting
 * `signal` ends the reading early with what came so far: a pipe that a
 * killed command's own children still hold open never reaches its end.
 */
export async function readTail(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
  onChunk?: (chunk: Uint8Array) => void,
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
      onChunk?.(chunk);
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
