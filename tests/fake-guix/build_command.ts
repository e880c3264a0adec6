// `guix build`: options, the build request, stdout/stderr as Guix renders.

import { parseDerivation } from "../../lib/guix/drv.ts";
import { isStorePath } from "../../lib/guix/store_path.ts";
import {
  hasFlag,
  lastValue,
  mergeOptions,
  numberValue,
  type OptionSpec,
  parseOptions,
} from "./cli_options.ts";
import { DaemonStore, exists } from "./daemon_store.ts";
import { loadAcl } from "./keys.ts";
import {
  daemonText,
  LeaveError,
  statusText,
  writeStderr,
  writeStdout,
} from "./messages.ts";
import { Realiser } from "./realise.ts";
import { Substituter } from "./substituter.ts";

/** Options shared by `guix build` and the commands that build. */
export const BUILD_OPTIONS: OptionSpec[] = [
  { long: "timeout", arg: "required" },
  { long: "max-silent-time", arg: "required" },
  { long: "substitute-urls", arg: "required" },
  { long: "no-substitutes", arg: "none" },
  { long: "max-jobs", short: "M", arg: "required" },
  { long: "cores", short: "c", arg: "required" },
  { long: "keep-going", short: "k", arg: "none" },
  { long: "fallback", arg: "none" },
  { long: "no-offload", arg: "none" },
  { long: "no-build-hook", arg: "none" },
  { long: "no-grafts", arg: "none" },
  { long: "quiet", short: "q", arg: "none" },
  { long: "verbosity", short: "v", arg: "required" },
  { long: "root", short: "r", arg: "required" },
  { long: "derivations", short: "d", arg: "none" },
  { long: "log-file", arg: "none" },
  { long: "dry-run", short: "n", arg: "none" },
  { long: "keep-failed", short: "K", arg: "none" },
  { long: "debug", arg: "required" },
  { long: "system", short: "s", arg: "required" },
];

const DEFAULT_SYSTEMS = "x86_64-linux,i686-linux";

/** Runs `guix build ARGS`; returns the exit status. */
export async function buildCommand(args: string[]): Promise<number> {
  const extra = (Deno.env.get("GUIX_BUILD_OPTIONS") ?? "").split(/\s+/)
    .filter((word) => word !== "");
  // As in Guix (guix/scripts.scm), GUIX_BUILD_OPTIONS is parsed on its own,
  // first, and the command line wins: a `--` there ends only its options.
  const parsed = mergeOptions(
    parseOptions(extra, BUILD_OPTIONS),
    parseOptions(args, BUILD_OPTIONS),
  );
  const verbosity = hasFlag(parsed, "quiet")
    ? 0
    : numberValue(parsed, "verbosity", 3);
  const store = DaemonStore.fromEnv();
  const line = (text: string) => {
    if (verbosity >= 1) writeStderr(text + "\n");
  };

  const items = parsed.operands.map((item) =>
    item.includes("/") && !item.startsWith("/")
      ? normalize(`${Deno.cwd()}/${item}`)
      : item
  );
  for (const item of items) {
    if (!isStorePath(item, store.storeDir)) {
      throw new LeaveError(`${item}: unknown package`);
    }
  }
  const drvs = items.filter((item) => item.endsWith(".drv"));
  if (hasFlag(parsed, "derivations")) {
    writeStdout(drvs.map((drv) => drv + "\n").join(""));
    return 0;
  }
  if (hasFlag(parsed, "log-file")) return await printLogFiles(store, drvs);

  const urls = hasFlag(parsed, "no-substitutes")
    ? []
    : (lastValue(parsed, "substitute-urls") ?? "").split(/\s+/)
      .filter((url) => url !== "");
  const substituter = urls.length === 0 ? null : new Substituter(store, {
    urls,
    acl: await loadAcl(),
    progress: (item) => line(statusText.substituting(item)),
    warn: line,
  });
  const realiser = new Realiser(store, substituter, {
    maxJobs: numberValue(parsed, "max-jobs", 1),
    keepGoing: hasFlag(parsed, "keep-going"),
    fallback: hasFlag(parsed, "fallback"),
    limits: {
      timeout: numberValue(parsed, "timeout", 86400),
      maxSilentTime: numberValue(parsed, "max-silent-time", 3600),
    },
    systems: (Deno.env.get("FAKE_GUIX_SYSTEMS") ?? DEFAULT_SYSTEMS).split(",")
      .map((system) => system.trim()).filter((system) => system !== ""),
  }, {
    message: line,
    started: (drv) => line(statusText.building(drv)),
    output: (_pid, bytes) => {
      if (verbosity >= 3) writeStderr(bytes);
    },
    succeeded: () => {},
    failed: (drv) => {
      line(statusText.buildFailed(drv));
      line(statusText.viewLog(store.logFile(drv)));
    },
  });

  const dryRun = hasFlag(parsed, "dry-run");
  if (verbosity >= 1 || dryRun) {
    const plan = await realiser.plan(drvs);
    writeStderr(describePlan(plan.build, plan.download, dryRun));
  }
  if (dryRun) return 0;

  // Plain store items can only be substituted; they print nothing.
  for (const item of items.filter((item) => !item.endsWith(".drv"))) {
    await substituter?.ensure(item);
  }
  const failed: string[] = [];
  for (const drv of drvs) {
    if (!(await realiser.realise(drv))) failed.push(drv);
  }
  if (failed.length > 0) throw new LeaveError(daemonText.buildsFailed(failed));

  const outputs: string[] = [];
  for (const drv of drvs) {
    const parsedDrv = parseDerivation(await Deno.readTextFile(drv));
    outputs.push(...parsedDrv.outputs.map((output) => output.path));
  }
  const root = lastValue(parsed, "root");
  if (root !== undefined) await addRoots(store, root, outputs);
  writeStdout(outputs.map((path) => path + "\n").join(""));
  return 0;
}

function normalize(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/** The "following derivations will be built" summary of `guix/ui.scm`. */
function describePlan(
  build: string[],
  download: string[],
  dryRun: boolean,
): string {
  const verb = dryRun ? "would be" : "will be";
  let text = "";
  if (build.length > 0) {
    text += `The following derivation${
      build.length === 1 ? "" : "s"
    } ${verb} built:\n`;
    text += build.map((drv) => `  ${drv}\n`).join("");
  }
  if (download.length > 0) {
    text += `The following item${
      download.length === 1 ? "" : "s"
    } ${verb} downloaded:\n`;
    text += download.map((item) => `  ${item}\n`).join("");
  }
  return text;
}

/** `-r FILE`: FILE (or FILE-0, FILE-1, …) links to the outputs, as roots. */
async function addRoots(
  store: DaemonStore,
  root: string,
  outputs: string[],
): Promise<void> {
  for (const [index, output] of outputs.entries()) {
    const link = outputs.length === 1 ? root : `${root}-${index}`;
    const absolute = link.startsWith("/") ? link : `${Deno.cwd()}/${link}`;
    if (await exists(absolute)) {
      throw new LeaveError(
        `failed to create GC root \`${link}': File exists`,
      );
    }
    await Deno.symlink(output, absolute);
    await store.addIndirectRoot(absolute);
  }
}

async function printLogFiles(
  store: DaemonStore,
  drvs: string[],
): Promise<number> {
  for (const drv of drvs) {
    const file = store.logFile(drv);
    if (!(await exists(file))) {
      throw new LeaveError(`no build log for '${drv}'`);
    }
    writeStdout(file + "\n");
  }
  return 0;
}
