// A small getopt-long style parser that reports errors the way Guix does.

import { LeaveError } from "./messages.ts";

/** One accepted option: its long name, short letter and argument kind. */
export interface OptionSpec {
  long: string;
  short?: string;
  /** "none" (flag), "required", or "optional" (only as `--long=VALUE`). */
  arg: "none" | "required" | "optional";
}

/** Parsed command line: values per long name (in order) and operands. */
export interface ParsedOptions {
  values: Map<string, string[]>;
  operands: string[];
}

/**
 * Parses `argv` against `specs`; everything after `--` is an operand.
 * @throws {LeaveError} `--foo: unrecognized option` like SRFI-37 in Guix.
 */
export function parseOptions(
  argv: string[],
  specs: OptionSpec[],
): ParsedOptions {
  const values = new Map<string, string[]>();
  const operands: string[] = [];
  const add = (spec: OptionSpec, value: string) => {
    values.set(spec.long, [...(values.get(spec.long) ?? []), value]);
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = specs.find((s) => s.long === name);
      if (!spec) throw new LeaveError(`--${name}: unrecognized option`);
      if (eq >= 0) {
        if (spec.arg === "none") {
          throw new LeaveError(`--${name}: option does not take an argument`);
        }
        add(spec, arg.slice(eq + 1));
      } else if (spec.arg === "required") {
        if (i + 1 >= argv.length) {
          throw new LeaveError(`--${name}: option requires an argument`);
        }
        add(spec, argv[++i]);
      } else {
        add(spec, "");
      }
    } else if (arg.startsWith("-") && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const letter = arg[j];
        const spec = specs.find((s) => s.short === letter);
        if (!spec) throw new LeaveError(`-${letter}: unrecognized option`);
        if (spec.arg === "none") {
          add(spec, "");
          continue;
        }
        const rest = arg.slice(j + 1);
        if (rest !== "") add(spec, rest);
        else if (spec.arg === "optional") {
          const next = argv[i + 1];
          add(
            spec,
            next !== undefined && !next.startsWith("-") ? argv[++i] : "",
          );
        } else if (i + 1 < argv.length) add(spec, argv[++i]);
        else throw new LeaveError(`-${letter}: option requires an argument`);
        break;
      }
    } else {
      operands.push(arg);
    }
  }
  return { values, operands };
}

/**
 * `first` then `later`, as one command line would give them: values in that
 * order (so `later` wins where one value counts), operands likewise.
 */
export function mergeOptions(
  first: ParsedOptions,
  later: ParsedOptions,
): ParsedOptions {
  const values = new Map(first.values);
  for (const [long, given] of later.values) {
    values.set(long, [...(values.get(long) ?? []), ...given]);
  }
  return { values, operands: [...first.operands, ...later.operands] };
}

/** The last value given for `long`, or undefined. */
export function lastValue(
  parsed: ParsedOptions,
  long: string,
): string | undefined {
  const all = parsed.values.get(long);
  return all ? all[all.length - 1] : undefined;
}

/** True when the flag `long` was given. */
export function hasFlag(parsed: ParsedOptions, long: string): boolean {
  return parsed.values.has(long);
}

/**
 * Reads a non-negative integer option value.
 * @throws {LeaveError} `not a number: 'VALUE'` otherwise.
 */
export function numberValue(
  parsed: ParsedOptions,
  long: string,
  fallback: number,
): number {
  const value = lastValue(parsed, long);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) {
    throw new LeaveError(`not a number: '${value}'`);
  }
  return Number(value);
}
