// Evaluation from a scenario file: instantiate one .drv per package for a
// system, put them in the store, and answer with Cuirass-style job lines.

import { type Derivation, instantiateDerivation } from "../../lib/guix/drv.ts";
import { makeTextStorePath } from "../../lib/guix/store_hash.ts";
import { type Datum, isSym, sym } from "../../lib/sexp/datum.ts";
import { writeSexp } from "../../lib/sexp/write.ts";
import type { DaemonStore } from "./daemon_store.ts";
import { LeaveError } from "./messages.ts";

/** One package of a scenario file (FAKE_GUIX_SCENARIO): its format. */
export interface ScenarioPackage {
  name: string;
  version: string;
  systems?: string[];
  inputs?: string[];
  outputs?: string[];
  timeout?: number;
  maxSilentTime?: number;
  behaviour?: {
    seconds?: number;
    logLines?: number;
    exit?: number;
    outputBytes?: number;
    silenceSeconds?: number;
    logText?: string | null;
    /** The daemon stops answering once this build starts. */
    daemonHangs?: boolean;
    /** The guix process building it ignores SIGTERM once it starts. */
    ignoresSigterm?: boolean;
  };
}

/** The scenario file: packages, plus optional evaluation behaviour. */
export interface Scenario {
  packages: ScenarioPackage[];
  /** When set, the evaluation prints this on stderr and exits 1. */
  evaluationError?: string;
  /** Seconds the evaluation takes before answering; default 0. */
  evaluationSeconds?: number;
  /**
   * The evaluation dies after printing `afterJobs` job lines: it exits 1,
   * or, with `signal` (e.g. "SIGKILL"), kills itself with that signal.
   */
  evaluationCrash?: { afterJobs: number; signal?: string };
  /**
   * The evaluation hangs: it starts a child that shares its standard output
   * and error (as time-machine's inner guix or an inferior does), says
   * `evaluate: hanging with child PID` on stderr, and both wait an hour.
   */
  evaluationHang?: boolean;
  /**
   * The job lines are printed again and again until at least this many
   * bytes are out, before `(done N)`.
   */
  evaluationOutputBytes?: number;
}

/** A job as printed on one stdout line. */
export interface Job {
  name: string;
  derivation: string;
  system: string;
  nixName: string;
  outputs: [string, string][];
  inputs: string[];
  timeout: number;
  maxSilentTime: number;
}

const DEFAULT_TIMEOUT = 72000;
const DEFAULT_MAX_SILENT_TIME = 3600;
const BUILDER = "/bin/sh";

/**
 * Reads the scenario named by `FAKE_GUIX_SCENARIO`.
 * @throws {LeaveError} when it is unset, unreadable or malformed.
 */
export async function readScenario(): Promise<Scenario> {
  const file = Deno.env.get("FAKE_GUIX_SCENARIO");
  if (!file) throw new LeaveError("FAKE_GUIX_SCENARIO is not set");
  let scenario: Scenario;
  try {
    scenario = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new LeaveError(
      `cannot read scenario '${file}': ${(error as Error).message}`,
    );
  }
  if (!Array.isArray(scenario?.packages)) {
    throw new LeaveError(`scenario '${file}' has no "packages" list`);
  }
  return scenario;
}

/**
 * Instantiates the jobs `selector` asks for on `system`, writes every .drv
 * (and builder script) into the store as valid items, and returns the jobs.
 * @throws {LeaveError} for an unknown package, a cycle or a bad selector.
 */
export async function evaluateScenario(
  scenario: Scenario,
  selector: Datum,
  system: string,
  store: DaemonStore,
): Promise<Job[]> {
  const byName = new Map(scenario.packages.map((p) => [p.name, p]));
  const wanted = selectPackages(scenario, selector, system, byName);
  const drvs = new Map<string, { path: string; drv: Derivation }>();

  const instantiate = async (
    pkg: ScenarioPackage,
    trail: string[],
  ): Promise<{ path: string; drv: Derivation }> => {
    const done = drvs.get(pkg.name);
    if (done) return done;
    if (trail.includes(pkg.name)) {
      throw new LeaveError(
        `dependency cycle: ${[...trail, pkg.name].join(" -> ")}`,
      );
    }
    const inputDrvs = [];
    for (const inputName of pkg.inputs ?? []) {
      const input = byName.get(inputName);
      if (!input) {
        throw new LeaveError(
          `package '${pkg.name}' has unknown input '${inputName}'`,
        );
      }
      const { path, drv } = await instantiate(input, [...trail, pkg.name]);
      const names = drv.outputs.map((output) => output.name);
      inputDrvs.push({
        path,
        outputs: names.includes("out") ? ["out"] : [names[0]],
      });
    }
    inputDrvs.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const script = await addBuilderScript(store, pkg);
    const result = instantiateDerivation({
      name: `${pkg.name}-${pkg.version}`,
      system,
      builder: BUILDER,
      args: ["-e", script],
      env: behaviourEnv(pkg),
      inputDrvs,
      inputSrcs: [script],
      outputs: pkg.outputs ?? ["out"],
    }, {
      storeDir: store.storeDir,
      readInput: (path) => {
        const known = [...drvs.values()].find((d) => d.path === path);
        if (!known) throw new Error(`unknown input derivation '${path}'`);
        return known.drv;
      },
    });
    await addText(store, result.path, result.text, [
      ...inputDrvs.map((input) => input.path),
      script,
    ]);
    drvs.set(pkg.name, result);
    return result;
  };

  const jobs: Job[] = [];
  for (const pkg of wanted) {
    const { path, drv } = await instantiate(pkg, []);
    jobs.push({
      name: `${pkg.name}.${system}`,
      derivation: path,
      system,
      nixName: `${pkg.name}-${pkg.version}`,
      outputs: drv.outputs.map((output) => [output.name, output.path]),
      inputs: drv.inputDrvs.map((input) => input.path),
      timeout: pkg.timeout ?? DEFAULT_TIMEOUT,
      maxSilentTime: pkg.maxSilentTime ?? DEFAULT_MAX_SILENT_TIME,
    });
  }
  return jobs;
}

/** One job line, in Guile `write` syntax. */
export function formatJob(job: Job): string {
  const datum: Datum = [
    sym("job"),
    [sym("name"), job.name],
    [sym("derivation"), job.derivation],
    [sym("system"), job.system],
    [sym("nix-name"), job.nixName],
    [sym("outputs"), ...job.outputs.map(([name, path]) => [name, path])],
    [sym("inputs"), ...job.inputs],
    [sym("timeout"), job.timeout],
    [sym("max-silent-time"), job.maxSilentTime],
  ];
  return writeSexp(datum);
}

function selectPackages(
  scenario: Scenario,
  selector: Datum,
  system: string,
  byName: Map<string, ScenarioPackage>,
): ScenarioPackage[] {
  const available = (p: ScenarioPackage) =>
    p.systems === undefined || p.systems.includes(system);
  if (isSym(selector, "all")) return scenario.packages.filter(available);
  if (Array.isArray(selector) && selector.length > 0 && isSym(selector[0])) {
    const kind = selector[0].name;
    if (kind === "channels" || kind === "manifests" || kind === "custom") {
      return scenario.packages.filter(available);
    }
    if (kind === "packages") {
      return selector.slice(1).map((name) => {
        const pkg = typeof name === "string" ? byName.get(name) : undefined;
        if (!pkg) throw new LeaveError(`${String(name)}: unknown package`);
        return pkg;
      }).filter(available);
    }
  }
  throw new LeaveError(`invalid build type: ${writeSexp(selector)}`);
}

function behaviourEnv(pkg: ScenarioPackage): Record<string, string> {
  const b = pkg.behaviour ?? {};
  return {
    "fake-seconds": String(b.seconds ?? 1),
    "fake-log-lines": String(b.logLines ?? 10),
    "fake-exit": String(b.exit ?? 0),
    "fake-output-bytes": String(b.outputBytes ?? 1024),
    "fake-silence-seconds": String(b.silenceSeconds ?? 0),
    "fake-log-text": JSON.stringify(b.logText ?? ""),
    // Only when set: every other derivation keeps its file name.
    ...(b.daemonHangs ? { "fake-daemon-hangs": "1" } : {}),
    ...(b.ignoresSigterm ? { "fake-ignores-sigterm": "1" } : {}),
  };
}

async function addBuilderScript(
  store: DaemonStore,
  pkg: ScenarioPackage,
): Promise<string> {
  const nixName = `${pkg.name}-${pkg.version}`;
  const text =
    `#!/bin/sh\n# Builder of ${nixName}.\nmkdir -p "$out/share/${nixName}"\n`;
  const path = makeTextStorePath(
    `${nixName}-builder`,
    text,
    [],
    store.storeDir,
  );
  await addText(store, path, text, []);
  return path;
}

/** Adds a text item (a .drv or a script) at `path` unless already valid. */
async function addText(
  store: DaemonStore,
  path: string,
  text: string,
  references: string[],
): Promise<void> {
  if (await store.isValid(path)) return;
  await store.withLock(path, async () => {
    if (await store.isValid(path)) return;
    const temp = store.tempPath("text");
    await Deno.writeTextFile(temp, text);
    await store.install(temp, path);
    await store.register(path, references, null);
  });
}
