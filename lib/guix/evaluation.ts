// Evaluating a specification for one system through `guix time-machine`.

import { shippedScriptPath } from "./shipped_script.ts";
import { readSexp } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";
import { type Datum, isSym, sym } from "../sexp/datum.ts";
import { type Guix, RUN_STDOUT_LIMIT } from "./guix_command.ts";
import { describeNul, findNul } from "../nul_text.ts";
import type { BuildSelector, Channel, NewJob } from "../store/types.ts";

/** Evaluator output that does not follow the job-line contract. */
export class EvaluationOutputError extends SyntaxError {
  constructor(message: string, readonly line: string) {
    super(message);
    this.name = "EvaluationOutputError";
  }
}

export interface EvaluateRequest {
  channels: Channel[];
  build: BuildSelector;
  system: string;
  /** Where to write the channels file for time-machine. */
  workDir: string;
  /** Lorica's Guile evaluator script; default the one shipped in lib/guix. */
  evaluator?: string;
  signal?: AbortSignal;
  /** The evaluator is killed after this long [no limit]. */
  timeoutMs?: number;
}

export interface EvaluateResult {
  ok: boolean;
  jobs: NewJob[];
  /** Everything the evaluator wrote on standard error. */
  log: string;
  exitCode: number;
  /**
   * The limit that got the evaluator killed: the request's `timeoutMs`, or
   * {@link EVALUATOR_OUTPUT_LIMIT}; null when none did.
   */
  limit: "timeout" | "output" | null;
}

/** Most bytes an evaluator may print on standard output: 64 MiB. */
export const EVALUATOR_OUTPUT_LIMIT = RUN_STDOUT_LIMIT;

/** Path of the Guile evaluator shipped next to this module. */
export function defaultEvaluatorPath(): string {
  return shippedScriptPath(new URL("./evaluate.scm", import.meta.url));
}

/** Runs the evaluator for one system and parses its job lines. */
export async function evaluateSystem(
  guix: Guix,
  request: EvaluateRequest,
): Promise<EvaluateResult> {
  const channelsFile = `${request.workDir}/channels-${request.system}.scm`;
  await Deno.writeTextFile(channelsFile, channelsToScheme(request.channels));
  const result = await guix.run([
    "time-machine",
    "-C",
    channelsFile,
    "--",
    "repl",
    "--",
    request.evaluator ?? defaultEvaluatorPath(),
    writeSexp(selectorToDatum(request.build)),
    request.system,
  ], {
    allowFailure: true,
    signal: request.signal,
    timeoutMs: request.timeoutMs,
    maxStdoutBytes: EVALUATOR_OUTPUT_LIMIT,
  });
  const jobs: NewJob[] = [];
  let done: number | null = null;
  let log = result.stderr;
  const failed = (
    limit: EvaluateResult["limit"],
    reason: string,
  ): EvaluateResult => ({
    ok: false,
    jobs: [],
    log: `${log}\nlorica: ${reason}\n`,
    exitCode: result.exitCode,
    limit,
  });
  if (result.timedOut) {
    return failed(
      "timeout",
      `evaluator killed: still running after the evaluation timeout of ${
        request.timeoutMs! / 1000
      } s (--evaluation-timeout)`,
    );
  }
  if (result.stdoutTooLarge) {
    return failed(
      "output",
      `evaluator output too large: killed after ${result.stdoutBytes} bytes, over the limit of ${EVALUATOR_OUTPUT_LIMIT} bytes (${
        EVALUATOR_OUTPUT_LIMIT >> 20
      } MiB)`,
    );
  }
  try {
    for (const line of result.stdout.split("\n")) {
      if (line.trim() === "") continue;
      const datum = readSexp(line);
      if (Array.isArray(datum) && isSym(datum[0], "done")) {
        done = Number(datum[1]);
      } else {
        jobs.push(parseJob(datum, line));
      }
    }
  } catch (error) {
    log += `\nlorica: ${(error as Error).message}\n`;
    return { ok: false, jobs, log, exitCode: result.exitCode, limit: null };
  }
  const complete = result.exitCode === 0 && done === jobs.length;
  if (result.exitCode === 0 && !complete) {
    log +=
      `\nlorica: evaluator announced ${done} jobs but printed ${jobs.length}\n`;
  }
  return {
    ok: complete,
    jobs,
    log,
    exitCode: result.exitCode,
    limit: null,
  };
}

/** Writes channels as the Scheme list time-machine reads with `-C`. */
export function channelsToScheme(channels: Channel[]): string {
  const items = channels.map((channel) => {
    const fields: Datum[] = [
      sym("channel"),
      [sym("name"), [sym("quote"), sym(channel.name)]],
      [sym("url"), channel.url],
      [sym("branch"), channel.branch],
    ];
    if (channel.commit) fields.push([sym("commit"), channel.commit]);
    if (channel.introduction) {
      fields.push([sym("introduction"), [
        sym("make-channel-introduction"),
        channel.introduction.commit,
        [sym("openpgp-fingerprint"), channel.introduction.signer],
      ]]);
    }
    return writeSexp(fields);
  });
  return `(list ${items.join("\n      ")})\n`;
}

/**
 * The build selector as the Scheme datum `cuirass-jobs` expects: channel
 * names as symbols, a custom build's modules as the module names written
 * in its parameters (`(gnu ci)`, a list that `resolve-interface` takes),
 * package specs and manifest files as strings.
 */
export function selectorToDatum(build: BuildSelector): Datum {
  if (build.params.length === 0) return sym(build.type);
  const params = build.type === "channels"
    ? build.params.map((param) => sym(param))
    : build.type === "custom"
    ? build.params.map((param) => readSexp(param))
    : build.params;
  return [sym(build.type), ...params];
}

/**
 * Parses one `(job (name …) (derivation …) …)` line of the evaluator.
 * @throws {EvaluationOutputError} when a field is missing or mistyped.
 */
export function parseJob(datum: Datum, line = writeSexp(datum)): NewJob {
  if (!Array.isArray(datum) || !isSym(datum[0], "job")) {
    throw new EvaluationOutputError(
      `Cannot parse evaluator output ${quote(line)}: not a job`,
      line,
    );
  }
  const fields = new Map<string, Datum[]>();
  for (const field of datum.slice(1)) {
    if (Array.isArray(field) && field.length > 0 && field[0] !== undefined) {
      const head = field[0];
      if (isSym(head)) fields.set(head.name, field.slice(1));
    }
  }
  function text(name: string): string {
    const value = fields.get(name)?.[0];
    if (typeof value !== "string") {
      throw new EvaluationOutputError(
        `Cannot parse evaluator job ${
          quote(line)
        }: field "${name}" is not a string`,
        line,
      );
    }
    return value;
  }
  function integer(name: string, fallback: number): number {
    const value = fields.get(name)?.[0];
    if (value === undefined) return fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
      throw new EvaluationOutputError(
        `Cannot parse evaluator job ${
          quote(line)
        }: field "${name}" is not a natural number`,
        line,
      );
    }
    return value;
  }
  const outputs = (fields.get("outputs") ?? []).map((output) => {
    if (
      !Array.isArray(output) || typeof output[0] !== "string" ||
      typeof output[1] !== "string"
    ) {
      throw new EvaluationOutputError(
        `Cannot parse evaluator job ${quote(line)}: malformed output ${
          quote(writeSexp(output))
        }`,
        line,
      );
    }
    return { name: output[0], path: output[1] };
  });
  const inputs = (fields.get("inputs") ?? []).map((input) => {
    if (typeof input !== "string") {
      throw new EvaluationOutputError(
        `Cannot parse evaluator job ${quote(line)}: input ${
          quote(writeSexp(input))
        } is not a string`,
        line,
      );
    }
    return input;
  });
  // A NUL fails the evaluation, as any malformed job line does, rather
  // than skipping the job: no store file name, job or system name holds
  // one, so the evaluator or a channel is broken, and a job left out
  // silently would look like a package dropped by the commits. The
  // operator sees the evaluation failed and why in its log.
  const fieldNul = findNul({
    name: text("name"),
    derivation: text("derivation"),
    system: text("system"),
    "nix-name": text("nix-name"),
    outputs: outputs.map((output) => [output.name, output.path]),
    inputs,
  });
  if (fieldNul !== null) {
    throw new EvaluationOutputError(
      `Cannot parse evaluator job ${quote(line)}: ${describeNul(fieldNul)}`,
      line,
    );
  }
  return {
    name: text("name"),
    derivation: text("derivation"),
    system: text("system"),
    nixName: text("nix-name"),
    outputs,
    inputs,
    timeout: integer("timeout", 72000),
    maxSilent: integer("max-silent-time", 3600),
  };
}

function quote(value: string): string {
  return JSON.stringify(value.length > 120 ? value.slice(0, 120) + "…" : value);
}
