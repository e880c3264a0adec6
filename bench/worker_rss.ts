// The resident memory of an idle worker: a real lorica-worker process that
// has built the demo specification for a real server and now waits for work.

import { fileURLToPath as fromFileUrl } from "node:url";
import { startFarm } from "../demo/farm.ts";
import { readProgress } from "../demo/report.ts";

const DEMO = fromFileUrl(new URL("../demo", import.meta.url));

/** Samples of the idle worker's resident set, one a second. */
export const RSS_SAMPLES = 5;

/** What the idle worker measure found. */
export interface IdleWorker {
  /** The median of the samples: an idle worker's RSS moves with V8's GC. */
  rssMb: number;
  /** The smallest and largest sample. */
  rangeMb: [number, number];
  /** Whether every build had finished (else the worker may be busy). */
  idle: boolean;
}

/**
 * Runs the demo farm with one worker process (two sessions, both systems),
 * waits until the queue is empty and then `settleMs` more, and reads the
 * worker process's resident set {@link RSS_SAMPLES} times, a second apart
 * (its `guix publish` is a process of its own, not counted).
 */
export async function idleWorkerRss(
  options: { timeoutMs: number; settleMs: number },
): Promise<IdleWorker> {
  await warmUp();
  const farm = await startFarm({
    specFile: `${DEMO}/demo-spec.scm`,
    scenarioFile: `${DEMO}/scenario.json`,
    workers: [{ systems: ["x86_64-linux", "i686-linux"], sessions: 2 }],
    webPort: 0,
    requestPeriod: 1,
  });
  try {
    const deadline = Date.now() + options.timeoutMs;
    let idle = false;
    while (Date.now() < deadline) {
      const progress = await readProgress(farm.webUrl);
      if (progress.pending.length === 0 && progress.finished.length > 0) {
        idle = true;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    await new Promise((resolve) => setTimeout(resolve, options.settleMs));
    const samples: number[] = [];
    for (let i = 0; i < RSS_SAMPLES; i++) {
      if (i > 0) await new Promise((resolve) => setTimeout(resolve, 1000));
      const pid = farm.pid("worker1");
      if (pid === undefined) throw new Error("The worker process exited");
      samples.push(await residentMb(pid));
    }
    samples.sort((a, b) => a - b);
    return {
      rssMb: samples[Math.floor(samples.length / 2)],
      rangeMb: [samples[0], samples[samples.length - 1]],
      idle,
    };
  } finally {
    await farm.stop();
    await Deno.remove(farm.root, { recursive: true }).catch(() => {});
  }
}

/**
 * Loads worker.ts once, so that its modules are transpiled and cached: a
 * worker that loads them for the first time holds some 6 MB more of Deno's
 * transpiler (measured: 82 MB against 76 on a fresh clone), which a
 * compiled lorica-worker never runs, nor a worker started a second time.
 */
async function warmUp(): Promise<void> {
  const worker = fromFileUrl(new URL("../worker.ts", import.meta.url));
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", worker, "--version"],
    cwd: fromFileUrl(new URL("..", import.meta.url)),
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(
      `worker.ts --version failed: ${new TextDecoder().decode(stderr)}`,
    );
  }
}

/** VmRSS of process `pid`, from /proc. */
async function residentMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = status.match(/^VmRSS:\s+(\d+) kB$/m);
  if (match === null) {
    throw new Error(`No VmRSS in /proc/${pid}/status`);
  }
  return Number(match[1]) / 1024;
}
