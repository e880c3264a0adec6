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
    // V8 names no position when the text ends too soon: that is its end.
    const position = /position (\d+)/.exec(String(error))?.[1];
    const offset = position !== undefined
      ? Number(position)
      : /end of JSON input/.test(String(error))
      ? text.length
      : 0;
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
  const text = decodeSpecificationText(await Deno.readFile(path), path);
  return path.endsWith(".json")
    ? readSpecificationsJson(text, path)
    : readSpecifications(text, path);
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The text of a specification file, which must be UTF-8 (as Guile reads
 * source files). A lenient decoding would turn a Latin-1 byte into U+FFFD,
 * then into an error about a name no one wrote, or into a mangled value.
 * @throws {SpecError} naming the line, column and value of the first byte
 * that is not UTF-8.
 */
function decodeSpecificationText(bytes: Uint8Array, file: string): string {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    const offset = firstInvalidUtf8Byte(bytes);
    const before = STRICT_UTF8.decode(bytes.subarray(0, offset)).split("\n");
    const line = before.length;
    const column = [...before[before.length - 1]].length + 1;
    const byte = bytes[offset].toString(16).padStart(2, "0");
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(file)
      } at ${line}:${column}: byte 0x${byte} is not valid UTF-8`,
      { file, line, column },
      { kind: "syntax" },
    );
  }
}

/**
 * Offset of the first byte of the first sequence of `bytes` that is not
 * UTF-8. The longest prefix that a streaming decoder accepts ends there,
 * or just past the start of that sequence, which it holds back as cut.
 */
function firstInvalidUtf8Byte(bytes: Uint8Array): number {
  let valid = 0;
  let invalid = bytes.length;
  while (invalid - valid > 1) {
    const middle = Math.floor((valid + invalid) / 2);
    try {
      new TextDecoder("utf-8", { fatal: true })
        .decode(bytes.subarray(0, middle), { stream: true });
      valid = middle;
    } catch {
      invalid = middle;
    }
  }
  try {
    STRICT_UTF8.decode(bytes.subarray(0, valid));
    return valid;
  } catch {
    // A held-back tail: a lead byte and its continuation bytes so far.
    let start = valid - 1;
    while (start > 0 && (bytes[start] & 0xc0) === 0x80) start--;
    return start;
  }
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
