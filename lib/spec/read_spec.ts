// Reads Cuirass specification files: the declarative subset of the Scheme
// such files contain (cuirass.md 5.1-5.3), evaluated without Guile; JSON
// files in the API's shape; and, through `guix repl`, arbitrary Scheme.

import { shippedScriptPath } from "../guix/shipped_script.ts";
import { readAllSexps, SexpSyntaxError } from "../sexp/read.ts";
import type { Guix } from "../guix/guix_command.ts";
import type { Specification } from "../store/types.ts";
import { SchemeSubsetEvaluator } from "./scheme_subset.ts";
import { SpecError } from "./spec_error.ts";
import { specificationFromJson } from "./spec_json.ts";

export { SpecError, type SpecErrorKind } from "./spec_error.ts";
export { specificationFromJson } from "./spec_json.ts";
export { defaultGuixChannel } from "./spec_fields.ts";

/**
 * Reads the specifications that the Scheme `text` of `file` evaluates to.
 * Supports `list`, `cons`, `cons*`, `append`, quote and quasiquote, the
 * `specification`, `channel`, `build-output`, `email` and `mastodon`
 * records, `make-channel-introduction`, `openpgp-fingerprint`,
 * `%default-guix-channel`, `%default-channels`, `use-modules` (ignored) and
 * `define` of values used later.
 *
 * @throws {SpecError} for syntax errors, forms outside that subset (kind
 * "unsupported"), and invalid field values.
 */
export function readSpecifications(
  text: string,
  file: string,
): Specification[] {
  let forms;
  try {
    forms = readAllSexps(text, { scheme: true, positions: true });
  } catch (error) {
    if (!(error instanceof SexpSyntaxError)) throw error;
    const detail = error.message.replace(
      /^Cannot read s-expression( at [0-9:]+)?: /,
      "",
    );
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(file)
      } at ${error.line}:${error.column}: ${detail}`,
      { file, line: error.line, column: error.column },
      { cause: error, kind: "syntax" },
    );
  }
  return new SchemeSubsetEvaluator(file).run(forms);
}

/**
 * Reads a list of specifications (or one) in the JSON shape of the API.
 * @throws {SpecError} with the line and column of a JSON syntax error, or
 * the index of an invalid specification.
 */
export function readSpecificationsJson(
  text: string,
  file: string,
): Specification[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const offset = Number(/position (\d+)/.exec(String(error))?.[1] ?? 0);
    const before = text.slice(0, offset).split("\n");
    const line = before.length;
    const column = before[before.length - 1].length + 1;
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(file)
      } at ${line}:${column}: ${(error as Error).message}`,
      { file, line, column },
      { kind: "syntax" },
    );
  }
  const items = Array.isArray(value) ? value : [value];
  const specs = items.map((item, index) => {
    try {
      return specificationFromJson(item);
    } catch (error) {
      if (!(error instanceof SpecError)) throw error;
      throw new SpecError(
        `Cannot read specification ${JSON.stringify(file)} entry ${index}: ${
          error.message.replace(/^Cannot read specification from JSON: /, "")
        }`,
        { file, line: 0, column: 0 },
      );
    }
  });
  // As in Scheme files: the second of two namesakes would silently replace
  // the first in the database.
  const seen = new Set<string>();
  specs.forEach((spec, index) => {
    if (seen.has(spec.name)) {
      throw new SpecError(
        `Cannot read specification ${
          JSON.stringify(file)
        } entry ${index}: two specifications are named ${
          JSON.stringify(spec.name)
        }`,
        { file, line: 0, column: 0 },
      );
    }
    seen.add(spec.name);
  });
  return specs;
}

/**
 * Reads the specification file at `path`: JSON when it ends in `.json`,
 * else the Scheme subset.
 *
 * @throws {SpecError} as `readSpecifications` does.
 */
export async function readSpecificationFile(
  path: string,
): Promise<Specification[]> {
  const text = await Deno.readTextFile(path);
  return path.endsWith(".json")
    ? readSpecificationsJson(text, path)
    : readSpecifications(text, path);
}

/** Path of the Guile script that prints a file's specifications. */
export function printSpecsScriptPath(): string {
  return shippedScriptPath(new URL("./print_specs.scm", import.meta.url));
}

/**
 * Evaluates the specification file at `path` with Guile, through
 * `guix repl` (for Scheme beyond the subset), and reads what it prints.
 *
 * @throws {SpecError} when guix fails (with Guile's location when it gives
 * one) or prints something unreadable.
 */
export async function readSpecificationsWithGuix(
  path: string,
  guix: Guix,
): Promise<Specification[]> {
  const result = await guix.run(
    ["repl", "--", printSpecsScriptPath(), path],
    { allowFailure: true },
  );
  if (result.exitCode !== 0) {
    const lines = result.stderr.trimEnd().split("\n");
    const located = lines.map((line) => line.match(/:(\d+):(\d+): (.*)$/))
      .find((match) => match !== null);
    const line = located ? Number(located[1]) + 1 : 0;
    const column = located ? Number(located[2]) + 1 : 0;
    const detail = located?.[3] ?? lines[lines.length - 1] ?? "";
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(path)
      } through guix repl at ${line}:${column}: ${detail.slice(0, 300)}`,
      { file: path, line, column },
      { kind: "invalid" },
    );
  }
  return readSpecifications(result.stdout, `${path} (as evaluated by guix)`);
}

/**
 * Reads `path` with the subset reader; when it holds Scheme beyond the
 * subset, evaluates it with `guix` instead. If that fails too, the subset
 * reader's error (with its line and column) is the one thrown.
 *
 * @throws {SpecError}
 */
export async function readSpecificationFileOrGuix(
  path: string,
  guix: Guix,
): Promise<Specification[]> {
  try {
    return await readSpecificationFile(path);
  } catch (error) {
    if (!(error instanceof SpecError) || error.kind !== "unsupported") {
      throw error;
    }
    try {
      return await readSpecificationsWithGuix(path, guix);
    } catch {
      throw error;
    }
  }
}
