// Small helpers shared by the two command lines.

import { isIP } from "node:net";
import { parseArgs } from "node:util";
import { isSystemName } from "../guix/system_name.ts";
import { isLogLevel, type LogLevel } from "../log.ts";

/** A bad command-line value; the entry point prints it and exits 2. */
export class UsageError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UsageError";
  }
}

/**
 * Parses a TCP port number.
 * @throws {UsageError} naming the option and value.
 */
export function parsePort(option: string, value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65535) {
    throw new UsageError(
      `Cannot use ${option} ${
        JSON.stringify(value)
      }: not a port number (0-65535)`,
    );
  }
  return port;
}

/**
 * Parses a positive integer option, at least `min` and at most `max` when
 * given (`why` saying why a bound is there, in the message). Beyond
 * Number.MAX_SAFE_INTEGER a number is refused whatever `max` says: it
 * would be rounded, and arithmetic on it (a deadline) would be wrong.
 * @throws {UsageError} naming the option and value.
 */
export function parsePositive(
  option: string,
  value: string,
  { min, max, why }: { min?: number; max?: number; why?: string } = {},
): number {
  const number = Number(value);
  const refuse = (reason: string) =>
    new UsageError(`Cannot use ${option} ${JSON.stringify(value)}: ${reason}`);
  if (!/^\d+$/.test(value) || number < 1) {
    throw refuse("not a positive integer");
  }
  const because = why === undefined ? "" : ` (${why})`;
  if (min !== undefined && number < min) {
    throw refuse(`less than ${min}${because}`);
  }
  if (!Number.isSafeInteger(number)) {
    throw refuse(`more than ${Number.MAX_SAFE_INTEGER}`);
  }
  if (max !== undefined && number > max) {
    throw refuse(`more than ${max}${because}`);
  }
  return number;
}

/**
 * Parses an integer option that may be 0 (often "no limit"), at most `max`
 * when given (`why` saying why in the message).
 * @throws {UsageError} naming the option and value.
 */
export function parseNatural(
  option: string,
  value: string,
  { max, why }: { max?: number; why?: string } = {},
): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new UsageError(
      `Cannot use ${option} ${
        JSON.stringify(value)
      }: not a whole number of 0 or more`,
    );
  }
  const number = Number(value);
  if (max !== undefined && number > max) {
    throw new UsageError(
      `Cannot use ${option} ${JSON.stringify(value)}: more than ${max}${
        why === undefined ? "" : ` (${why})`
      }`,
    );
  }
  return number;
}

/**
 * Parses `HOST:PORT`, with IPv6 hosts in brackets (`[::1]:5555`).
 * @throws {UsageError} when either part is missing or malformed.
 */
export function parseHostPort(
  option: string,
  value: string,
): { hostname: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.%\w]+)\]|([^:\[\]]+)):(\d+)$/.exec(value);
  if (!match) {
    throw new UsageError(
      `Cannot use ${option} ${
        JSON.stringify(value)
      }: expected HOST:PORT or [IPV6]:PORT`,
    );
  }
  const port = Number(match[3]);
  if (port > 65535) {
    throw new UsageError(
      `Cannot use ${option} ${
        JSON.stringify(value)
      }: port ${port} is above 65535`,
    );
  }
  return { hostname: match[1] ?? match[2], port };
}

/**
 * Parses the address a port listens on: an IPv4 or IPv6 address, or
 * `localhost`. A host name would be looked up in DNS at start, and a typo
 * would fail later with the resolver's words and the port's, not the
 * option's.
 * @throws {UsageError} naming the option and value.
 */
export function parseListenAddress(option: string, value: string): string {
  if (value === "localhost" || isIP(value) !== 0) return value;
  throw new UsageError(
    `Cannot use ${option} ${
      JSON.stringify(value)
    }: not an IP address (such as 0.0.0.0, 127.0.0.1 or ::)`,
  );
}

/**
 * Parses a comma-separated list of Guix system names (`x86_64-linux`), the
 * same names the admin API accepts in specifications.
 * @throws {UsageError} naming the option and the first bad name.
 */
export function parseSystems(option: string, value: string): string[] {
  const systems = value.split(",").map((s) => s.trim()).filter(Boolean);
  if (systems.length === 0) {
    throw new UsageError(
      `Cannot use ${option} ${JSON.stringify(value)}: no system given`,
    );
  }
  for (const system of systems) {
    if (!isSystemName(system)) {
      throw new UsageError(
        `Cannot use ${option} ${JSON.stringify(value)}: ${
          JSON.stringify(system)
        } is not a system name such as "x86_64-linux"`,
      );
    }
  }
  return systems;
}

/** The user's cache directory, following XDG. */
export function cacheHome(): string {
  return Deno.env.get("XDG_CACHE_HOME") ??
    `${Deno.env.get("HOME") ?? "/tmp"}/.cache`;
}

/** The user's state directory, following XDG. */
export function stateHome(): string {
  return Deno.env.get("XDG_STATE_HOME") ??
    `${Deno.env.get("HOME") ?? "/tmp"}/.local/state`;
}

/** The Lorica version printed by `--version`. */
export const VERSION = "0.1.0";

/** An option of `node:util` parseArgs, as the two programs declare them. */
export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  default?: string | boolean;
}

/** The environment variable of option `name`: LORICA_LOG_PORT for log-port. */
function environmentVariable(name: string): string {
  return `LORICA_${name.toUpperCase().replaceAll("-", "_")}`;
}

const TRUE_REGEXP = /^(1|true|yes|on)$/i;
const FALSE_REGEXP = /^(0|false|no|off)$/i;

/**
 * Command-line arguments for the options set in the environment: option
 * `--log-port` comes from `LORICA_LOG_PORT`, and so on. They go before the
 * real arguments, so that the command line wins. A boolean option is on
 * for 1, true, yes or on and off for 0, false, no or off (any case).
 * @throws {UsageError} naming the variable for any other boolean value.
 */
export function argsFromEnvironment(
  options: Record<string, OptionSpec>,
  env: { get(key: string): string | undefined } = Deno.env,
): string[] {
  const args: string[] = [];
  for (const [name, spec] of Object.entries(options)) {
    if (name === "help" || name === "version") continue;
    const variable = environmentVariable(name);
    const value = env.get(variable);
    if (value === undefined || value === "") continue;
    if (spec.type === "string") {
      args.push(`--${name}=${value}`);
    } else if (TRUE_REGEXP.test(value.trim())) {
      args.push(`--${name}`);
    } else if (!FALSE_REGEXP.test(value.trim())) {
      throw new UsageError(
        `Cannot use ${variable} ${
          JSON.stringify(value)
        }: not a boolean (1, true, yes, on or 0, false, no, off)`,
      );
    }
  }
  return args;
}

/** The options a program was given, read by name. */
export interface GivenOptions {
  /** A string option's value (its default when not given). */
  text(name: string): string | undefined;
  /** Whether a boolean option is on. */
  flag(name: string): boolean;
  /** Whether an option was given, on the command line or in the environment. */
  given(name: string): boolean;
}

/**
 * Refuses options that contradict each other: `conflicts` pairs an option
 * with those that mean nothing beside it (`--no-publish` and
 * `--publish-port`), so that what the operator asked for is not silently
 * dropped.
 * @throws {UsageError} naming both options and the value of the second.
 */
export function refuseConflicts(
  options: GivenOptions,
  conflicts: Record<string, { with: string[]; because: string }>,
): void {
  for (const [name, { with: others, because }] of Object.entries(conflicts)) {
    if (!options.given(name)) continue;
    for (const other of others) {
      if (!options.given(other)) continue;
      const value = options.text(other);
      throw new UsageError(
        `Cannot use --${other}${
          value === undefined ? "" : ` ${JSON.stringify(value)}`
        } with --${name}: ${because}`,
      );
    }
  }
}

/** An option as `node:util` parseArgs saw it on the command line. */
interface OptionToken {
  kind: string;
  /** The long name, also when a short alias was written. */
  name?: string;
  /** As written: `--port` or `-p`. */
  rawName?: string;
  value?: string;
  /** Where in the arguments it was. */
  index: number;
}

/**
 * Reads `args`, after the options set in the environment (see
 * {@link argsFromEnvironment}), strictly: an unknown option or a stray
 * positional argument throws, as `node:util` parseArgs words it. An empty
 * value (`--worker-keys=`, as an unset shell variable leaves it) is refused
 * too, unless the option's default is empty: taken as given, it would
 * silently mean "none" (no worker authentication) or a path relative to
 * the root (`--state-directory=` writing `/admin-token`). So is an option
 * given twice in `args` (see {@link refuseRepeatedOptions}).
 * @throws {UsageError} naming an option given an empty value, or twice.
 */
export function readOptions(
  options: Record<string, OptionSpec>,
  args: string[],
  env: { get(key: string): string | undefined } = Deno.env,
): GivenOptions {
  const fromEnvironment = argsFromEnvironment(options, env);
  const { values, tokens } = parseArgs({
    args: [...fromEnvironment, ...args],
    options,
    strict: true,
    allowPositionals: false,
    tokens: true,
  }) as {
    values: Record<string, string | boolean | undefined>;
    tokens: OptionToken[];
  };
  refuseRepeatedOptions(
    tokens.filter((token) => token.index >= fromEnvironment.length),
  );
  const given = new Set(
    tokens.filter((token) => token.kind === "option").map((token) =>
      token.name!
    ),
  );
  for (const [name, value] of Object.entries(values)) {
    if (value === "" && options[name]?.default !== "") {
      throw new UsageError(
        `Cannot use --${name} "": an empty value (leave the option out to get its default)`,
      );
    }
  }
  return {
    text: (name) => values[name] as string | undefined,
    flag: (name) => values[name] === true,
    given: (name) => given.has(name),
  };
}

/**
 * Refuses an option that the command line gives twice, whether written
 * long (`--port 1`, `--port=1`) or short (`-p 1`): parseArgs would keep the
 * last value and drop the first without a word, and the usual way to get
 * there is a mistake, such as a unit's options file repeating one the unit
 * already gives in the belief that it replaces it. No option of either
 * program is a list built by repetition (lists such as --systems are one
 * comma-separated value), so none is exempt. The environment's options are
 * not in `tokens`: the command line overriding them is documented.
 * @throws {UsageError} naming the option and both values, as written.
 */
function refuseRepeatedOptions(tokens: OptionToken[]): void {
  const first = new Map<string, OptionToken>();
  for (const token of tokens) {
    if (token.kind !== "option" || token.name === undefined) continue;
    const earlier = first.get(token.name);
    if (earlier === undefined) {
      first.set(token.name, token);
      continue;
    }
    const values = earlier.value === undefined
      ? ""
      : ` (${asWritten(earlier)}, then ${asWritten(token)})`;
    throw new UsageError(
      `Cannot read the command line: option --${token.name} given twice${values}`,
    );
  }
}

/** A token's value, quoted, with the short alias it came by if any. */
function asWritten(token: OptionToken): string {
  const value = JSON.stringify(token.value ?? "");
  return token.rawName === `--${token.name}`
    ? value
    : `${value} as ${token.rawName}`;
}

/**
 * `message` of a usage error, saying which environment variable set the
 * option it names when the command line did not: an operator looks for a
 * `--evaluation-timeout` in the unit file and finds it in the env file.
 */
export function sourceOfUsageError(
  message: string,
  options: Record<string, OptionSpec>,
  args: string[],
  env: { get(key: string): string | undefined } = Deno.env,
): string {
  const onCommandLine = namesOnCommandLine(options, args);
  for (const name of Object.keys(options)) {
    if (!new RegExp(`--${name}(?![\\w-])`).test(message)) continue;
    const variable = environmentVariable(name);
    if (!onCommandLine.has(name) && env.get(variable)) {
      return `${message} (set by ${variable})`;
    }
  }
  return message;
}

/**
 * The long names of the options `args` gives, short aliases (`-p 1`,
 * `-p1`, `-sp 1`) included. Read leniently: the error being explained may
 * be that they do not parse.
 */
function namesOnCommandLine(
  options: Record<string, OptionSpec>,
  args: string[],
): Set<string> {
  const names = new Set<string>();
  for (const arg of args) {
    const long = /^--([^=]+)/.exec(arg);
    if (long !== null) names.add(long[1]);
  }
  try {
    const { tokens } = parseArgs({
      args,
      options,
      strict: false,
      allowPositionals: true,
      tokens: true,
    });
    for (const token of tokens) {
      if (token.kind === "option") names.add(token.name);
    }
  } catch {
    // The long forms found above are all there is to go by.
  }
  return names;
}

/**
 * Runs a program's `main` on the command line and exits with its status; an
 * error it throws is printed as `PROGRAM: error: MESSAGE` (naming the
 * environment variable behind the option it names, if any) and exits with
 * status 2 for a usage error, 1 otherwise.
 */
export async function runMain(
  program: string,
  main: (args: string[]) => Promise<number>,
  options: Record<string, OptionSpec>,
): Promise<never> {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const usage = error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    // deno-lint-ignore no-console
    console.error(
      `${program}: error: ${
        sourceOfUsageError((error as Error).message, options, Deno.args)
      }`,
    );
    Deno.exit(usage ? 2 : 1);
  }
}

/** Reads a secret from a file, without its trailing newline. */
export async function readSecretFile(
  option: string,
  path: string,
): Promise<string> {
  try {
    const secret = (await Deno.readTextFile(path)).trim();
    if (secret === "") throw new Error("the file is empty");
    return secret;
  } catch (error) {
    throw new UsageError(
      `Cannot read ${option} ${JSON.stringify(path)}: ${
        (error as Error).message
      }`,
    );
  }
}

/**
 * The log level `LORICA_LOG` names; "info" when it is unset or empty.
 * @throws {UsageError} naming the variable for any other value: a
 * `LORICA_LOG=warning` (Cuirass's word) must not quietly log at info.
 */
export function logLevelFromEnvironment(
  env: { get(key: string): string | undefined } = Deno.env,
): LogLevel {
  const value = env.get("LORICA_LOG");
  if (value === undefined || value === "") return "info";
  if (!isLogLevel(value)) {
    throw new UsageError(
      `Cannot use LORICA_LOG ${
        JSON.stringify(value)
      }: not a log level (debug, info, warn or error)`,
    );
  }
  return value;
}

/**
 * Parses a space-separated list of substitute URLs (`--substitute-urls`),
 * each an http, https or file URL as `guix build` takes them; an empty
 * list is none.
 * @throws {UsageError} naming the option and the first bad URL: taken as
 * given, it would fail every build, one by one, long after the start.
 */
export function parseSubstituteUrls(option: string, value: string): string[] {
  const urls = value.split(/\s+/).filter(Boolean);
  for (const url of urls) {
    let scheme: string | undefined;
    try {
      scheme = new URL(url).protocol;
    } catch {
      scheme = undefined;
    }
    if (!["http:", "https:", "file:"].includes(scheme ?? "")) {
      throw new UsageError(
        `Cannot use ${option} ${JSON.stringify(value)}: ${
          JSON.stringify(url)
        } is not an http, https or file URL`,
      );
    }
    // Read as a URL whose host holds the comma, as --systems is written.
    if (url.includes(",")) {
      throw new UsageError(
        `Cannot use ${option} ${JSON.stringify(value)}: ${
          JSON.stringify(url)
        } holds a comma (separate the URLs with spaces)`,
      );
    }
  }
  return urls;
}
