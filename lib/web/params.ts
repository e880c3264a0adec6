// Query-string and path-segment parsing for the web routes, with 400 errors.

import { HttpError, quoteValue } from "./http_error.ts";
import { parseStoreBasename } from "../guix/store_path.ts";
import type { BuildFilter } from "../store/types.ts";

/** A build named in a URL: by numeric id or by derivation basename. */
export type BuildRef = { id: number } | { basename: string };

/** The largest `nr` the list endpoints accept, as Cuirass allows. */
export const MAX_NR = 1000;

const POSITIVE_INTEGER_REGEXP = /^[1-9][0-9]{0,15}$/;

/**
 * Refuses a query parameter given more than once. Each route reads one
 * value of a parameter, and `URLSearchParams.get` quietly kept the first:
 * `nr=5&nr=6` answered five builds, a filter given twice filtered on one.
 * No route takes a repeated parameter; one that comes to must be let
 * through here.
 * @throws {HttpError} 400 naming the first parameter repeated, with its
 * values.
 */
export function refuseRepeatedParams(params: URLSearchParams): void {
  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (!seen.has(name)) {
      seen.add(name);
      continue;
    }
    const values = params.getAll(name);
    throw new HttpError(
      400,
      `Cannot read parameter ${
        quoteValue(name)
      }: given ${values.length} times (${
        values.slice(0, 3).map((value) => quoteValue(value)).join(", ")
      }${values.length > 3 ? ", ..." : ""}), where one value is read`,
    );
  }
}

/**
 * Reads the required `nr` parameter: an integer from 1 to 1000.
 * @throws {HttpError} 400 when it is missing or out of range.
 */
export function requireLimit(params: URLSearchParams, name = "nr"): number {
  const text = params.get(name);
  if (text === null) {
    throw new HttpError(400, `Cannot read parameter "${name}": missing`);
  }
  const value = POSITIVE_INTEGER_REGEXP.test(text) ? Number(text) : NaN;
  if (!(value >= 1 && value <= MAX_NR)) {
    throw new HttpError(
      400,
      `Cannot read parameter "${name}": value ${
        quoteValue(text)
      } is not an integer from 1 to ${MAX_NR}`,
    );
  }
  return value;
}

/**
 * Parses an id: a positive integer within the safe-integer range.
 * @throws {HttpError} 400 otherwise, naming `what` and the value.
 */
export function parseId(text: string, what: string): number {
  const value = POSITIVE_INTEGER_REGEXP.test(text) ? Number(text) : NaN;
  if (/^[1-9][0-9]*$/.test(text) && !Number.isSafeInteger(value)) {
    throw new HttpError(
      400,
      `Cannot read ${what}: value ${
        quoteValue(text)
      } is above the largest ID, ${Number.MAX_SAFE_INTEGER}`,
    );
  }
  if (!Number.isSafeInteger(value)) {
    throw new HttpError(
      400,
      `Cannot read ${what}: value ${
        quoteValue(text)
      } is not a positive integer`,
    );
  }
  return value;
}

/**
 * Reads a required id parameter such as `id` of `/api/evaluation`.
 * @throws {HttpError} 400 when it is missing or not a positive integer.
 */
export function requireIdParam(params: URLSearchParams, name: string): number {
  const text = params.get(name);
  if (text === null) {
    throw new HttpError(400, `Cannot read parameter "${name}": missing`);
  }
  return parseId(text, `parameter "${name}"`);
}

/**
 * Reads the build filters shared by `/api/latestbuilds` and `/api/queue`:
 * Cuirass's `jobset`, `job`, `system`, `evaluation`, `worker`,
 * `derivation`, `id` (that build) and `oldevaluation` (builds created by
 * an older evaluation).
 * @throws {HttpError} 400 when `evaluation`, `id` or `oldevaluation` is
 * not a positive integer.
 */
export function readBuildFilter(params: URLSearchParams): BuildFilter {
  const filter: BuildFilter = {};
  const id = params.get("id");
  if (id !== null) filter.id = parseId(id, `parameter "id"`);
  const older = params.get("oldevaluation");
  if (older !== null) {
    filter.beforeEvaluation = parseId(older, `parameter "oldevaluation"`);
  }
  const jobset = params.get("jobset");
  const job = params.get("job");
  const system = params.get("system");
  const evaluation = params.get("evaluation");
  const worker = params.get("worker");
  const derivation = params.get("derivation");
  if (jobset !== null) filter.specification = jobset;
  if (job !== null) filter.job = job;
  if (system !== null) filter.system = system;
  if (evaluation !== null) {
    filter.evaluation = parseId(evaluation, `parameter "evaluation"`);
  }
  if (worker !== null) filter.worker = worker;
  if (derivation !== null) filter.derivation = derivation;
  return filter;
}

/** Job names accepted in one `names` parameter. */
export const MAX_NAMES = 1000;
/** The longest job name a `names` parameter may hold. */
const MAX_NAME_LENGTH = 200;

/**
 * Reads the comma-separated `names` parameter (blank names dropped), or
 * undefined when it is absent or empty and not `required`.
 * @throws {HttpError} 400 when it is required and missing or holds no
 * name, or when it holds more than
 * {@link MAX_NAMES} names, or a name over 200 characters.
 */
export function readNames(
  params: URLSearchParams,
  required: boolean,
): string[] | undefined {
  const text = params.get("names");
  const names = (text ?? "").split(",").map((name) => name.trim())
    .filter((name) => name !== "");
  if (text === null) {
    if (required) {
      throw new HttpError(400, `Cannot read parameter "names": missing`);
    }
    return undefined;
  }
  if (names.length === 0 && !required) return undefined;
  if (names.length === 0) {
    throw new HttpError(
      400,
      `Cannot read parameter "names": value ${
        quoteValue(text)
      } holds no job name`,
    );
  }
  if (names.length > MAX_NAMES) {
    throw new HttpError(
      400,
      `Cannot read parameter "names": ${names.length} names, more than ${MAX_NAMES}`,
    );
  }
  const long = names.find((name) => name.length > MAX_NAME_LENGTH);
  if (long !== undefined) {
    throw new HttpError(
      400,
      `Cannot read parameter "names": name ${
        quoteValue(long)
      } is over ${MAX_NAME_LENGTH} characters`,
    );
  }
  return names;
}

/** A Guix system type such as `x86_64-linux` or `i586-gnu`. */
const SYSTEM_REGEXP = /^[a-z0-9_]+(-[a-z0-9_]+)+$/;

/**
 * Reads an optional `system` parameter naming a Guix system type.
 * @throws {HttpError} 400 for a value that is not one (`x86_64-linux`).
 */
export function readSystem(params: URLSearchParams): string | null {
  const text = params.get("system");
  if (text === null) return null;
  if (text.length > 64 || !SYSTEM_REGEXP.test(text)) {
    throw new HttpError(
      400,
      `Cannot read parameter "system": value ${
        quoteValue(text)
      } is not a system type such as "x86_64-linux"`,
    );
  }
  return text;
}

/** A dashboard id: 16 letters and digits, as Cuirass makes them. */
const DASHBOARD_ID_REGEXP = /^[A-Za-z0-9]{16}$/;

/**
 * Parses the ID of `/dashboard/ID` and `/eval/N/dashboard/ID`.
 * @throws {HttpError} 400 for anything but 16 letters and digits.
 */
export function parseDashboardId(text: string): string {
  if (!DASHBOARD_ID_REGEXP.test(text)) {
    throw new HttpError(
      400,
      `Cannot read dashboard ID ${quoteValue(text)}: not 16 letters and digits`,
    );
  }
  return text;
}

/**
 * Parses the ID segment of `/build/ID…`: a positive integer, or a
 * `<hash>-<name>.drv` basename (which can never contain `/` or `..` alone).
 * @throws {HttpError} 400 for anything else.
 */
export function parseBuildRef(segment: string): BuildRef {
  if (/^[0-9]+$/.test(segment)) return { id: parseId(segment, "build ID") };
  try {
    parseStoreBasename(segment);
  } catch {
    throw new HttpError(
      400,
      `Cannot read build ID ${
        quoteValue(segment)
      }: not a positive integer or a derivation basename`,
    );
  }
  if (!segment.endsWith(".drv")) {
    throw new HttpError(
      400,
      `Cannot read build ID ${quoteValue(segment)}: not a derivation basename`,
    );
  }
  return { basename: segment };
}
