// The fuzz runner: runs one target in a Web Worker so that a parser stuck in
// a loop can be caught (and the input reported) by a watchdog out here.

import { toHex } from "./_mutate.ts";

/** What the worker reports to the runner. */
export type WorkerReport =
  | { type: "input"; index: number; bytes: Uint8Array }
  | { type: "failure"; index: number; bytes: Uint8Array; error: string }
  | { type: "done"; iterations: number; accepted: number; rejected: number }
  | { type: "fatal"; error: string };

/** What the runner asks of the worker. */
export interface WorkerRequest {
  target: string;
  seed: number;
  iterations: number;
  /** Largest growth of heap plus external memory allowed after any input. */
  memoryLimitBytes: number;
}

/** Options of {@linkcode fuzz}. */
export interface FuzzOptions {
  /** Iterations unless LORICA_FUZZ_ITERATIONS overrides them. */
  iterations: number;
  /** Longest time one input may take; default 2 s (LORICA_FUZZ_TIMEOUT_MS). */
  inputTimeoutMs?: number;
  /** Largest memory growth allowed; default 256 MiB. */
  memoryLimitBytes?: number;
}

const MAX_REPORTED_HEX = 16 * 1024;

/**
 * Runs the named target of _targets.ts over random and mutated inputs, with
 * the seed from LORICA_FUZZ_SEED or a fresh one (printed either way).
 * @throws {Error} naming the seed and the input in hex when the parser threw
 * an error of a foreign type, hung, or grew memory beyond the limit.
 */
export async function fuzz(
  target: string,
  options: FuzzOptions,
): Promise<void> {
  const seed = envNumber("LORICA_FUZZ_SEED") ??
    crypto.getRandomValues(new Uint32Array(1))[0];
  const iterations = envNumber("LORICA_FUZZ_ITERATIONS") ?? options.iterations;
  const timeoutMs = envNumber("LORICA_FUZZ_TIMEOUT_MS") ??
    options.inputTimeoutMs ?? 2000;
  const memoryLimitBytes = options.memoryLimitBytes ?? 256 * 1024 * 1024;
  // deno-lint-ignore no-console -- the seed must be visible to replay a failure
  console.log(
    `fuzz ${target}: seed ${seed}, ${iterations} inputs (replay with LORICA_FUZZ_SEED=${seed})`,
  );
  const rssBefore = Deno.memoryUsage().rss;
  const worker = new Worker(new URL("./_fuzz_worker.ts", import.meta.url), {
    type: "module",
  });
  let current: { index: number; bytes: Uint8Array; since: number } | null =
    null;
  let watchdog: ReturnType<typeof setInterval> | undefined;
  try {
    const outcome = await new Promise<
      Extract<WorkerReport, { type: "done" }>
    >((resolve, reject) => {
      const fail = (problem: string, index: number, bytes: Uint8Array) =>
        reject(new Error(describe(target, seed, problem, index, bytes)));
      worker.onmessage = (event: MessageEvent<WorkerReport>) => {
        const report = event.data;
        if (report.type === "input") {
          current = {
            index: report.index,
            bytes: report.bytes,
            since: Date.now(),
          };
        } else if (report.type === "failure") {
          fail(report.error, report.index, report.bytes);
        } else if (report.type === "fatal") {
          reject(new Error(`fuzz ${target} (seed ${seed}): ${report.error}`));
        } else {
          resolve(report);
        }
      };
      worker.onerror = (event) => {
        event.preventDefault();
        const problem = `worker died: ${event.message}`;
        if (current) fail(problem, current.index, current.bytes);
        else reject(new Error(`fuzz ${target} (seed ${seed}): ${problem}`));
      };
      watchdog = setInterval(() => {
        if (current && Date.now() - current.since > timeoutMs) {
          fail(
            `input still running after ${timeoutMs} ms (hang)`,
            current.index,
            current.bytes,
          );
        }
      }, 100);
      const request: WorkerRequest = {
        target,
        seed,
        iterations,
        memoryLimitBytes,
      };
      worker.postMessage(request);
    });
    const growth = Deno.memoryUsage().rss - rssBefore;
    // deno-lint-ignore no-console -- a summary of the run
    console.log(
      `fuzz ${target}: ${outcome.iterations} inputs, ${outcome.accepted} accepted, ${outcome.rejected} rejected with the parser's own error, rss +${
        Math.round(growth / 1024 / 1024)
      } MiB`,
    );
    if (growth > 2 * memoryLimitBytes) {
      throw new Error(
        `fuzz ${target} (seed ${seed}): resident memory grew by ${growth} bytes`,
      );
    }
  } finally {
    clearInterval(watchdog);
    worker.terminate();
  }
}

function describe(
  target: string,
  seed: number,
  problem: string,
  index: number,
  bytes: Uint8Array,
): string {
  const hex = toHex(bytes);
  const shown = hex.length > MAX_REPORTED_HEX
    ? hex.slice(0, MAX_REPORTED_HEX) + `… (${bytes.length} bytes)`
    : hex;
  return `fuzz ${target} failed on input #${index} (LORICA_FUZZ_SEED=${seed}): ${problem}\ninput hex: ${shown}`;
}

function envNumber(name: string): number | undefined {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(
      `${name} must be a non-negative integer, found ${JSON.stringify(text)}`,
    );
  }
  return value;
}
