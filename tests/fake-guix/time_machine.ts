// `guix time-machine -C FILE -- CMD…` and `guix repl -- SCRIPT BUILD SYSTEM`:
// channels are only parsed and reported; evaluations come from the scenario.

import { type Datum, isSym, sym } from "../../lib/sexp/datum.ts";
import { readAllSexps, readSexp } from "../../lib/sexp/read.ts";
import { writeSexp } from "../../lib/sexp/write.ts";
import { BUILD_OPTIONS } from "./build_command.ts";
import { lastValue, type OptionSpec, parseOptions } from "./cli_options.ts";
import { DaemonStore } from "./daemon_store.ts";
import { evaluateScenario, formatJob, readScenario } from "./evaluate.ts";
import { LeaveError, writeStderr, writeStdout } from "./messages.ts";
import { buildDriver } from "./build_driver.ts";

/** A channel as the file names it. */
export interface Channel {
  name: string;
  url: string;
  branch?: string;
  commit?: string;
}

const TIME_MACHINE_OPTIONS: OptionSpec[] = [
  ...BUILD_OPTIONS,
  { long: "channels", short: "C", arg: "required" },
  { long: "no-channel-files", arg: "none" },
  { long: "url", arg: "required" },
  { long: "commit", arg: "required" },
  { long: "branch", arg: "required" },
  { long: "disable-authentication", arg: "none" },
  { long: "no-check-certificate", arg: "none" },
];
const REPL_OPTIONS: OptionSpec[] = [
  { long: "type", short: "t", arg: "required" },
  { long: "listen", arg: "required" },
  { long: "load-path", short: "L", arg: "required" },
  { long: "quiet", short: "q", arg: "none" },
];
const DEFAULT_CHANNEL: Channel = {
  name: "guix",
  url: "https://git.guix.gnu.org/guix.git",
  branch: "master",
};

/**
 * Runs `guix time-machine ARGS`; `run` executes the inner command line.
 */
export async function timeMachineCommand(
  args: string[],
  run: (argv: string[]) => Promise<number>,
): Promise<number> {
  const split = args.indexOf("--");
  const own = split < 0 ? args : args.slice(0, split);
  const inner = split < 0 ? [] : args.slice(split + 1);
  const parsed = parseOptions(own, TIME_MACHINE_OPTIONS);
  const file = lastValue(parsed, "channels");
  const channels = file === undefined
    ? [{
      ...DEFAULT_CHANNEL,
      url: lastValue(parsed, "url") ?? DEFAULT_CHANNEL.url,
    }]
    : await readChannels(file);
  for (const channel of channels) {
    writeStderr(
      `Updating channel '${channel.name}' from Git repository at '${channel.url}'...\n`,
    );
  }
  if (inner.length === 0) {
    writeStdout(
      `${Deno.env.get("HOME") ?? "/tmp"}/.cache/guix/inferiors/profile\n`,
    );
    return 0;
  }
  return await run(inner);
}

/**
 * Reads a channels file: its last expression must build a list of
 * `(channel (name 'N) (url "U") …)` forms.
 * @throws {LeaveError} `'FILE' did not return a list of channels`.
 */
export async function readChannels(file: string): Promise<Channel[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new LeaveError(
      `failed to load '${file}': ${(error as Error).message}`,
    );
  }
  const notChannels = new LeaveError(
    `'${file}' did not return a list of channels`,
  );
  let data: Datum[];
  try {
    data = readAllSexps(text, { scheme: true });
  } catch {
    throw notChannels;
  }
  const last = data[data.length - 1];
  if (!Array.isArray(last) || last.length === 0) throw notChannels;
  const [head, ...items] = last;
  if (!isSym(head, "list") && !isSym(head, "cons*")) throw notChannels;
  const channels: Channel[] = [];
  for (const item of items) {
    if (isSym(item, "%default-channels") && isSym(head, "cons*")) {
      channels.push(DEFAULT_CHANNEL);
      continue;
    }
    const channel = readChannel(item);
    if (!channel) throw notChannels;
    channels.push(channel);
  }
  return channels;
}

/**
 * Runs `guix repl ARGS`. Only Lorica's two scripts are known, by file name:
 * `evaluate.scm` answers the evaluation contract from the scenario and
 * `build_driver.scm` behaves as that script documents. Anything else is
 * refused: this stand-in cannot run arbitrary Guile.
 */
export async function replCommand(args: string[]): Promise<number> {
  const parsed = parseOptions(args, REPL_OPTIONS);
  const [script, ...scriptArgs] = parsed.operands;
  const name = script?.slice(script.lastIndexOf("/") + 1);
  if (name === "build_driver.scm") return await buildDriver(scriptArgs);
  if (name !== "evaluate.scm" || scriptArgs.length !== 2) {
    throw new LeaveError(
      `this stand-in cannot run ${
        JSON.stringify(script ?? "")
      }: only evaluate.scm and build_driver.scm`,
    );
  }
  const [build, system] = scriptArgs;
  const scenario = await readScenario();
  if ((scenario.evaluationSeconds ?? 0) > 0) {
    await new Promise((resolve) =>
      setTimeout(resolve, scenario.evaluationSeconds! * 1000)
    );
  }
  if (scenario.evaluationHang) {
    const child = new Deno.Command("sleep", {
      args: ["3600"],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    writeStderr(`evaluate: hanging with child ${child.pid}\n`);
    await child.status;
    return 1;
  }
  if (scenario.evaluationError) {
    writeStderr(`${scenario.evaluationError}\n`);
    return 1;
  }
  let selector: Datum;
  try {
    selector = readSexp(build);
  } catch {
    throw new LeaveError(`invalid build type: ${build}`);
  }
  const jobs = await evaluateScenario(
    scenario,
    selector,
    system,
    DaemonStore.fromEnv(),
  );
  const lines = jobs.map((job) => formatJob(job) + "\n").join("");
  if (lines !== "") {
    const chunk = new TextEncoder().encode(lines.repeat(
      Math.max(1, Math.floor((1 << 20) / lines.length)),
    ));
    for (let out = 0; out < (scenario.evaluationOutputBytes ?? 0);) {
      writeStdout(chunk);
      out += chunk.length;
    }
  }
  const crash = scenario.evaluationCrash;
  for (const [index, job] of jobs.entries()) {
    if (crash && index === crash.afterJobs) {
      writeStderr(`evaluate: crashing after ${index} jobs\n`);
      if (crash.signal) Deno.kill(Deno.pid, crash.signal as Deno.Signal);
      return 1;
    }
    writeStdout(formatJob(job) + "\n");
  }
  writeStdout(writeSexp([sym("done"), jobs.length]) + "\n");
  return 0;
}

function readChannel(item: Datum): Channel | null {
  if (!Array.isArray(item) || !isSym(item[0], "channel")) return null;
  const fields = new Map<string, Datum>();
  for (const field of item.slice(1)) {
    if (!Array.isArray(field) || field.length !== 2 || !isSym(field[0])) {
      return null;
    }
    fields.set(field[0].name, field[1]);
  }
  const name = fields.get("name");
  const url = fields.get("url");
  const symbolName = Array.isArray(name) && isSym(name[0], "quote") &&
      isSym(name[1])
    ? name[1].name
    : null;
  if (symbolName === null || typeof url !== "string") return null;
  const channel: Channel = { name: symbolName, url };
  const branch = fields.get("branch");
  const commit = fields.get("commit");
  if (typeof branch === "string") channel.branch = branch;
  if (typeof commit === "string") channel.commit = commit;
  return channel;
}
