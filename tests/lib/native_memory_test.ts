import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { Clock } from "../../lib/clock.ts";
import { createLogger, silentLogger } from "../../lib/log.ts";
import {
  loadMallocTrim,
  startNativeMemoryTrimmer,
} from "../../lib/native_memory.ts";

/**
 * A clock whose sleeps each wait for the test to let them end, so that the
 * test decides how many intervals pass.
 */
function steppedClock() {
  const waiting: Array<() => void> = [];
  const slept: number[] = [];
  const clock: Clock = {
    now: () => 0,
    monotonic: () => 0,
    sleep(ms, signal) {
      slept.push(ms);
      return new Promise((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        signal?.addEventListener("abort", () => reject(signal.reason));
        waiting.push(resolve);
      });
    },
  };
  /** Ends the pending sleep and lets the loop reach its next one. */
  async function step() {
    waiting.shift()?.();
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }
  return { clock, slept, step };
}

Deno.test("the trimmer trims once per interval and not after its stop", async () => {
  const { clock, slept, step } = steppedClock();
  let trims = 0;
  const trimmer = startNativeMemoryTrimmer({
    clock,
    logger: silentLogger,
    intervalMs: 10_000,
    native: {
      trim: () => {
        trims++;
        return true;
      },
      close: () => {},
    },
  });
  assert.equal(trims, 0, "no trim before the first interval has passed");
  await step();
  await step();
  assert.equal(trims, 2);
  assert.deepEqual(slept, [10_000, 10_000, 10_000]);
  await trimmer.stop();
  await step();
  assert.equal(trims, 2, "a stopped trimmer trimmed again");
});

Deno.test("malloc_trim is found in this machine's glibc and runs", () => {
  const loaded = loadMallocTrim();
  assert.ok("trim" in loaded, JSON.stringify(loaded));
  try {
    assert.equal(typeof loaded.trim(), "boolean");
  } finally {
    loaded.close();
  }
});

// The resource sanitizer fails this test if the stop leaves libc loaded.
Deno.test("a trimmer that loaded malloc_trim itself unloads it when stopped, once", async () => {
  const { clock, step } = steppedClock();
  const trimmer = startNativeMemoryTrimmer({
    clock,
    logger: silentLogger,
    intervalMs: 10_000,
  });
  await step();
  await trimmer.stop();
  await trimmer.stop();
});

Deno.test("without the FFI permission the trimmer is off, says why, and never prompts", async () => {
  // A child process without --allow-ffi: a prompt for the permission
  // would wait for its stdin, which is closed, and fail the check below.
  const module = fileURLToPath(
    new URL("../../lib/native_memory.ts", import.meta.url),
  );
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(
    script,
    `import { loadMallocTrim } from ${JSON.stringify(module)};
     console.log(JSON.stringify(loadMallocTrim()));`,
  );
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-config", `--allow-read=${module}`, script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output().finally(() => Deno.remove(script));
  const text = new TextDecoder();
  assert.ok(success, text.decode(stderr));
  assert.deepEqual(JSON.parse(text.decode(stdout)), {
    unavailable: "no FFI permission",
  });
});

Deno.test("a trimmer that cannot trim logs why at debug level and stops at once", async () => {
  const lines: string[] = [];
  const logger = createLogger({
    level: "debug",
    sink: (line) => lines.push(line),
  });
  const { clock, slept } = steppedClock();
  const trimmer = startNativeMemoryTrimmer({
    clock,
    logger,
    intervalMs: 1,
    native: { unavailable: "no FFI permission" },
  });
  await trimmer.stop();
  assert.deepEqual(slept, [], "the loop ran with nothing to trim");
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0], /native memory trim off/);
  assert.match(lines[0], /no FFI permission/);
});
