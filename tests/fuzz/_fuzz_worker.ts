// Worker side of the fuzz runner: generates the inputs, runs the target and
// reports each input before running it, so a hang can be pinned on it.

/// <reference lib="deno.worker" />

import type { WorkerReport, WorkerRequest } from "./_fuzz.ts";
import { createRng, mutate, randomBytes, randomTokens } from "./_mutate.ts";
import { TARGETS } from "./_targets.ts";

function post(report: WorkerReport): void {
  self.postMessage(report);
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    return `${error.name}: ${error.message}\n${error.stack ?? ""}`.slice(
      0,
      4000,
    );
  }
  return `non-Error thrown: ${String(error)}`;
}

function memory(): number {
  const usage = Deno.memoryUsage();
  return usage.heapUsed + usage.external;
}

self.onmessage = async (event: MessageEvent<WorkerRequest>) => {
  const { target: name, seed, iterations, memoryLimitBytes } = event.data;
  const next = createRng(seed);
  let target;
  try {
    target = await TARGETS[name]();
  } catch (error) {
    post({ type: "fatal", error: `setup failed: ${describeError(error)}` });
    return;
  }
  let accepted = 0;
  let rejected = 0;
  try {
    const corpus = target.corpus;
    const baseline = memory();
    for (let index = 0; index < iterations; index++) {
      let bytes: Uint8Array;
      const kind = next(10);
      if (index < corpus.length) bytes = corpus[index];
      else if (kind < 2) bytes = randomBytes(next, 512);
      else if (kind < 4) bytes = randomTokens(next, target.tokens, 64);
      else bytes = mutate(next, corpus[next(corpus.length)], corpus);
      post({ type: "input", index, bytes: bytes.slice() });
      try {
        await target.run(bytes, next);
        accepted++;
      } catch (error) {
        if (!target.expected(error)) {
          post({ type: "failure", index, bytes, error: describeError(error) });
          return;
        }
        rejected++;
      }
      const growth = memory() - baseline;
      if (growth > memoryLimitBytes) {
        post({
          type: "failure",
          index,
          bytes,
          error: `heap and external memory grew by ${growth} bytes`,
        });
        return;
      }
    }
    await target.finish?.();
  } catch (error) {
    post({ type: "fatal", error: describeError(error) });
    return;
  } finally {
    await target.close?.().catch(() => {});
  }
  post({ type: "done", iterations, accepted, rejected });
};
