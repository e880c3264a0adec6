// lorica-worker run as a process of its own, for the tests that need the
// real command line: the log it writes to stderr, read as it comes, and a
// way to end it and its guix publish together whatever the test does.

import { SETSID } from "../demo/farm.ts";

const WORKER = new URL("../worker.ts", import.meta.url).pathname;
const FAKE_GUIX_DIR = new URL("./fake-guix", import.meta.url).pathname;

/** A running lorica-worker. */
export interface WorkerProcess {
  readonly child: Deno.ChildProcess;
  /** What it logged so far. */
  log(): string;
  /** Resolves once its stderr is read to the end. */
  readonly reading: Promise<void>;
  /** Waits until its log matches `pattern`, for at most `timeoutMs`. */
  logged(pattern: RegExp, timeoutMs?: number): Promise<boolean>;
  /** Sends SIGKILL to its process group (to it alone without setsid). */
  killGroup(): void;
  /** Kills what is left, waits for it and for its log to end. */
  close(): Promise<void>;
}

/**
 * Starts `lorica-worker ARGS` with the fake guix first on PATH and `env`
 * added, in a process group of its own (setsid, where there is one) so
 * that a failed test ends the worker and its `guix publish` together; it
 * is killed anyway after `guardMs`.
 */
export function spawnWorkerProcess(
  args: string[],
  env: Record<string, string>,
  guardMs = 60_000,
): WorkerProcess {
  const argv = [Deno.execPath(), "run", "--allow-all", WORKER, ...args];
  const child = new Deno.Command(SETSID ?? argv[0], {
    args: SETSID ? argv : argv.slice(1),
    env: {
      ...env,
      PATH: `${FAKE_GUIX_DIR}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      LORICA_LOG: "info",
    },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const reading = (async () => {
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) log += text;
  })();
  const killGroup = () => {
    try {
      if (SETSID) Deno.kill(-child.pid, "SIGKILL");
      else child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const guard = setTimeout(killGroup, guardMs);
  return {
    child,
    log: () => log,
    reading,
    async logged(pattern, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (!pattern.test(log) && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return pattern.test(log);
    },
    killGroup,
    async close() {
      clearTimeout(guard);
      killGroup();
      await child.status;
      await reading.catch(() => {});
    },
  };
}
