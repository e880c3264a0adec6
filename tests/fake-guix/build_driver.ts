// What Lorica's lib/guix/build_driver.scm does when run by `guix repl`:
// a daemon connection with build traces, multiplexed output and keep-going,
// its raw stream copied to stdout; or, with `--query`, one state line per
// derivation. Only the script's documented interface is emulated.

import { parseDerivation } from "../../lib/guix/drv.ts";
import { DaemonStore, exists } from "./daemon_store.ts";
import { daemonText, writeStderr, writeStdout } from "./messages.ts";
import { Realiser } from "./realise.ts";

const DEFAULT_SYSTEMS = "x86_64-linux,i686-linux";
const encoder = new TextEncoder();

interface DriverOptions {
  query: boolean;
  timeout: number;
  maxSilentTime: number;
  maxJobs: number;
  drvs: string[];
}

/** Runs the driver with the script's arguments; returns its exit status. */
export async function buildDriver(args: string[]): Promise<number> {
  let options: DriverOptions;
  try {
    options = parseDriverArguments(args);
  } catch (error) {
    note(`cannot run: ${(error as Error).message}`);
    return 2;
  }
  const store = DaemonStore.fromEnv();
  if (options.query) {
    let text = "";
    for (const drv of options.drvs) {
      text += `(state ${JSON.stringify(drv)} ${await state(store, drv)})\n`;
    }
    writeStdout(text);
    return 0;
  }
  return await build(store, options);
}

function parseDriverArguments(args: string[]): DriverOptions {
  const options: DriverOptions = {
    query: false,
    timeout: 0,
    maxSilentTime: 3600,
    maxJobs: 1,
    drvs: [],
  };
  const numeric = (name: string, value: string) => {
    if (!/^\d+$/.test(value)) {
      throw new Error(`invalid option value ${name} ${JSON.stringify(value)}`);
    }
    return Number(value);
  };
  for (const arg of args) {
    if (arg === "--query") options.query = true;
    else if (arg.startsWith("--timeout=")) {
      options.timeout = numeric("timeout", arg.slice(10));
    } else if (arg.startsWith("--max-silent-time=")) {
      options.maxSilentTime = numeric("max-silent-time", arg.slice(18));
    } else if (arg.startsWith("--max-jobs=")) {
      options.maxJobs = numeric("max-jobs", arg.slice(11));
    } else if (arg.startsWith("/")) options.drvs.push(arg);
    else throw new Error(`unknown argument ${JSON.stringify(arg)}`);
  }
  return options;
}

async function state(store: DaemonStore, drv: string): Promise<string> {
  if (!(await store.isValid(drv))) return "missing";
  const parsed = parseDerivation(await Deno.readTextFile(drv));
  let valid = true;
  for (const output of parsed.outputs) {
    if (!(await store.isValid(output.path))) valid = false;
  }
  if (valid) return "valid";
  return (await exists(store.logFile(drv))) ? "failed" : "none";
}

async function build(
  store: DaemonStore,
  options: DriverOptions,
): Promise<number> {
  const present: string[] = [];
  for (const drv of options.drvs) {
    if (await store.isValid(drv)) present.push(drv);
    else note(`derivation missing from store: ${drv}`);
  }
  const line = (text: string) => writeStdout(text + "\n");
  const realiser = new Realiser(store, null, {
    maxJobs: Math.max(options.maxJobs, 1),
    keepGoing: true,
    fallback: true,
    limits: { timeout: options.timeout, maxSilentTime: options.maxSilentTime },
    systems: (Deno.env.get("FAKE_GUIX_SYSTEMS") ?? DEFAULT_SYSTEMS).split(",")
      .map((system) => system.trim()).filter((system) => system !== ""),
  }, {
    message: line,
    started: (drv, system, logFile, pid) =>
      line(`@ build-started ${drv} - ${system} ${logFile} ${pid}`),
    output: (pid, bytes) => {
      // Header and bytes in one write, as the daemon sends one message.
      const header = encoder.encode(`@ build-log ${pid} ${bytes.length}\n`);
      const frame = new Uint8Array(header.length + bytes.length);
      frame.set(header);
      frame.set(bytes, header.length);
      writeStdout(frame);
    },
    succeeded: (drv) => line(`@ build-succeeded ${drv} -`),
    failed: (drv, code, message) =>
      line(
        code === "timeout"
          ? `@ build-failed ${drv} - timeout`
          : `@ build-failed ${drv} - ${code} ${message}`,
      ),
  });
  const failed: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next < present.length) {
      const drv = present[next++];
      if (!(await realiser.realise(drv))) failed.push(drv);
    }
  };
  await Promise.all(
    Array.from({ length: Math.max(1, options.maxJobs) }, lane),
  );
  if (failed.length > 0) {
    note(daemonText.buildsFailed(failed));
    return 1;
  }
  return 0;
}

function note(text: string): void {
  writeStderr(`build-driver: ${text}\n`);
}
