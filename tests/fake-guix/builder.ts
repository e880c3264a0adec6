// Simulated builds: the derivation's environment scripts what the "builder"
// prints, how long it takes, how it exits and how big its outputs are.

import type { Derivation } from "../../lib/guix/drv.ts";
import { sha256 } from "../../lib/guix/store_hash.ts";
import type { DaemonStore } from "./daemon_store.ts";
import { daemonText } from "./messages.ts";

/** The behaviour read back from a derivation's `fake-*` variables. */
export interface Behaviour {
  seconds: number;
  logLines: number;
  exit: number;
  outputBytes: number;
  silenceSeconds: number;
  /** Raw bytes printed once the silence is over, before the lines. */
  logText: Uint8Array;
  /** The daemon stops answering once the build starts (no limit holds). */
  daemonHangs: boolean;
  /** The guix process ignores SIGTERM once the build starts. */
  ignoresSigterm: boolean;
}

/** Limits from `--timeout` and `--max-silent-time` (0 = none). */
export interface BuildLimits {
  timeout: number;
  maxSilentTime: number;
}

/** How a build ended: success, or the daemon's failure message. */
export type BuildResult =
  | { ok: true }
  | { ok: false; message: string; timedOut: boolean };

const MAX_OUTPUT_BYTES = 1 << 30;
const MAX_LOG_LINES = 1_000_000;

/** Reads the `fake-*` environment variables, with their defaults. */
export function readBehaviour(drv: Derivation): Behaviour {
  const env = new Map(drv.env);
  const num = (key: string, fallback: number, max = 1e9) => {
    const value = Number(env.get(key) ?? fallback);
    return Number.isFinite(value) && value >= 0
      ? Math.min(value, max)
      : fallback;
  };
  return {
    seconds: num("fake-seconds", 0),
    logLines: Math.floor(num("fake-log-lines", 0, MAX_LOG_LINES)),
    exit: Math.floor(num("fake-exit", 0, 255)),
    outputBytes: Math.floor(num("fake-output-bytes", 0, MAX_OUTPUT_BYTES)),
    silenceSeconds: num("fake-silence-seconds", 0),
    logText: decodeLogText(env.get("fake-log-text") ?? ""),
    daemonHangs: env.get("fake-daemon-hangs") === "1",
    ignoresSigterm: env.get("fake-ignores-sigterm") === "1",
  };
}

/**
 * Decodes `fake-log-text`: a JSON string whose characters up to U+00FF are
 * raw bytes (so `\u00ff` is the byte 0xFF) and whose others become UTF-8.
 * A value that is not JSON is taken as UTF-8 text.
 */
export function decodeLogText(value: string): Uint8Array {
  let text: unknown = value;
  try {
    text = value === "" ? "" : JSON.parse(value);
  } catch { /* plain text */ }
  if (typeof text !== "string") text = "";
  const bytes: number[] = [];
  const encoder = new TextEncoder();
  for (const char of text as string) {
    const code = char.codePointAt(0)!;
    if (code <= 0xff) bytes.push(code);
    else bytes.push(...encoder.encode(char));
  }
  return new Uint8Array(bytes);
}

/**
 * Runs the simulated builder of `drvPath`: streams its output to `echo` and
 * to the gzipped log, enforces the limits, and on success creates and
 * registers every output.
 */
export async function runBuilder(
  store: DaemonStore,
  drvPath: string,
  drv: Derivation,
  limits: BuildLimits,
  echo: (bytes: Uint8Array) => void,
): Promise<BuildResult> {
  const behaviour = readBehaviour(drv);
  const logFile = store.logFile(drvPath);
  await Deno.mkdir(logFile.slice(0, logFile.lastIndexOf("/")), {
    recursive: true,
  });
  const log = await openGzipLog(logFile);
  const emit = async (bytes: Uint8Array) => {
    echo(bytes);
    await log.write(bytes);
  };
  if (behaviour.ignoresSigterm) ignoreSigterm();
  if (behaviour.daemonHangs) await hangForGood();
  let failure: { message: string; timedOut: boolean } | null;
  try {
    failure = await play(drvPath, drv, behaviour, limits, emit);
  } finally {
    await log.close();
  }
  if (failure) return { ok: false, ...failure };

  for (const output of drv.outputs) {
    await store.withLock(output.path, async () => {
      const temp = store.tempPath(output.path.slice(-20));
      await writeOutput(temp, output.path, behaviour.outputBytes);
      await store.install(temp, output.path);
      await store.register(output.path, [], drvPath);
    });
  }
  return { ok: true };
}

/**
 * A daemon stuck (on a store lock, a hung disk): nothing more is said, no
 * limit is enforced, until the client is killed. The timer keeps Deno from
 * leaving a process with nothing left to wait for.
 */
function hangForGood(): Promise<never> {
  return new Promise(() => setInterval(() => {}, 60_000));
}

/**
 * From now on SIGTERM does nothing to this guix process, as to a client
 * hung in the daemon protocol or a builder trapping it: only SIGKILL ends
 * it before the build is over. A listener replaces Deno's default action,
 * which is to die.
 */
function ignoreSigterm(): void {
  Deno.addSignalListener("SIGTERM", () => {});
}

/** Plays the scripted timeline; returns the failure or null. */
async function play(
  drvPath: string,
  drv: Derivation,
  behaviour: Behaviour,
  limits: BuildLimits,
  emit: (bytes: Uint8Array) => Promise<void>,
): Promise<{ message: string; timedOut: boolean } | null> {
  const start = performance.now();
  let lastOutput = start;
  const basename = drvPath.slice(drvPath.lastIndexOf("/") + 1);
  const name = basename.slice(33).replace(/\.drv$/, "");
  const encoder = new TextEncoder();
  const steps: { at: number; bytes: Uint8Array }[] = [];
  const silenceMs = behaviour.silenceSeconds * 1000;
  if (behaviour.logText.length > 0) {
    steps.push({ at: silenceMs, bytes: behaviour.logText });
  }
  const lines = behaviour.logLines;
  for (let i = 1; i <= lines; i++) {
    const text = `[${name}] step ${i} of ${lines} (${drv.system})\n`;
    steps.push({
      at: silenceMs + (behaviour.seconds * 1000 * i) / lines,
      bytes: encoder.encode(text),
    });
  }
  const end = silenceMs + behaviour.seconds * 1000;

  let index = 0;
  while (true) {
    const next = index < steps.length ? steps[index].at : end;
    const now = performance.now();
    const deadlines = [{ at: start + next, kind: "step" }];
    if (limits.timeout > 0) {
      deadlines.push({ at: start + limits.timeout * 1000, kind: "timeout" });
    }
    if (limits.maxSilentTime > 0) {
      deadlines.push({
        at: lastOutput + limits.maxSilentTime * 1000,
        kind: "silence",
      });
    }
    const first = deadlines.reduce((a, b) => (b.at < a.at ? b : a));
    if (first.at > now) await sleep(first.at - now);
    if (first.kind === "timeout") {
      return {
        message: daemonText.timedOut(drvPath, limits.timeout),
        timedOut: true,
      };
    }
    if (first.kind === "silence") {
      return {
        message: daemonText.silentTooLong(drvPath, limits.maxSilentTime),
        timedOut: true,
      };
    }
    if (index >= steps.length) break;
    await emit(steps[index++].bytes);
    lastOutput = performance.now();
  }
  return behaviour.exit === 0 ? null : {
    message: daemonText.builderFailed(drvPath, behaviour.exit),
    timedOut: false,
  };
}

/** Creates `<out>/share/<name>/data`: bytes derived from the output path. */
async function writeOutput(
  temp: string,
  outPath: string,
  size: number,
): Promise<void> {
  const name = outPath.slice(
    outPath.indexOf("-", outPath.lastIndexOf("/")) + 1,
  );
  const dir = `${temp}/share/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  const file = await Deno.open(`${dir}/data`, { write: true, create: true });
  try {
    const chunk = new Uint8Array(64 * 1024);
    let written = 0;
    let block = 0;
    while (written < size) {
      let filled = 0;
      while (filled < chunk.length && written + filled < size) {
        const digest = sha256(`${outPath}:${block++}`);
        const take = Math.min(digest.length, size - written - filled);
        chunk.set(digest.subarray(0, take), filled);
        filled += take;
      }
      let part = chunk.subarray(0, filled);
      while (part.length > 0) part = part.subarray(await file.write(part));
      written += filled;
    }
  } finally {
    file.close();
  }
}

async function openGzipLog(file: string) {
  const handle = await Deno.open(file, {
    write: true,
    create: true,
    truncate: true,
  });
  const gzip = new CompressionStream("gzip");
  const done = gzip.readable.pipeTo(handle.writable);
  const writer = gzip.writable.getWriter();
  return {
    write: (bytes: Uint8Array) =>
      writer.write(bytes as Uint8Array<ArrayBuffer>),
    close: async () => {
      await writer.close();
      await done;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
