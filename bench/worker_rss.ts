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

/** VmRSS of process `pid`, from /proc. */
async function residentMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const match = status.match(/^VmRSS:\s+(\d+) kB$/m);
  if (match === null) {
    throw new Error(`No VmRSS in /proc/${pid}/status`);
  }
  return Number(match[1]) / 1024;
}
