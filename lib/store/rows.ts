// Rows to records and checks of what callers pass in, shared by backends.

import { Weather } from "./types.ts";
import type {
  Build,
  BuildProduct,
  BuildStatus,
  Evaluation,
  EvaluationStatus,
  NewJob,
  Specification,
  Worker,
} from "./types.ts";
import type { Row } from "./sql_query.ts";

/** The columns {@link rowToBuild} reads, from `Builds b`; `outputs` apart. */
export const BUILD_COLUMNS = `b.id, b.derivation, b.evaluation,
  b.specification, b.job_name, b.system, b.worker, b.nix_name, b.log,
  b.status, b.last_status, b.weather, b.priority, b.max_silent, b.timeout,
  b.timestamp, b.starttime, b.stoptime`;

/** A JSON column: text on SQLite, already parsed on PostgreSQL. */
function json(value: unknown): unknown {
  return typeof value === "string" ? JSON.parse(value) : value;
}

/** A nullable number column as a number or null. */
export function nullableNumber(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value);
}

/** A Specifications row as a record. */
export function rowToSpecification(row: Row): Specification {
  return {
    name: String(row.name),
    build: json(row.build) as Specification["build"],
    channels: json(row.channels) as Specification["channels"],
    buildOutputs: json(row.build_outputs) as Specification["buildOutputs"],
    notifications: json(row.notifications) as Specification["notifications"],
    period: Number(row.period),
    priority: Number(row.priority),
    systems: json(row.systems) as string[],
    isActive: Number(row.is_active) !== 0,
  };
}

/** An Evaluations row as a record. */
export function rowToEvaluation(row: Row): Evaluation {
  return {
    id: Number(row.id),
    specification: String(row.specification),
    status: Number(row.status) as EvaluationStatus,
    timestamp: Number(row.timestamp),
    checkouttime: Number(row.checkouttime),
    evaltime: Number(row.evaltime),
  };
}

/** A Builds row with its `outputs` column as a record. */
export function rowToBuild(row: Row): Build {
  return {
    id: Number(row.id),
    derivation: String(row.derivation),
    evaluation: Number(row.evaluation),
    specification: String(row.specification),
    jobName: String(row.job_name),
    system: String(row.system),
    worker: row.worker === null ? null : String(row.worker),
    nixName: String(row.nix_name),
    log: String(row.log),
    status: Number(row.status) as BuildStatus,
    lastStatus: nullableNumber(row.last_status),
    weather: Number(row.weather) as Weather,
    priority: Number(row.priority),
    maxSilent: Number(row.max_silent),
    timeout: Number(row.timeout),
    timestamp: Number(row.timestamp),
    starttime: Number(row.starttime),
    stoptime: Number(row.stoptime),
    outputs: (json(row.outputs ?? "[]") ?? []) as Build["outputs"],
    ...(row.products === undefined
      ? {}
      : { products: (json(row.products) ?? []) as BuildProduct[] }),
  };
}

/** A Workers row as a record. */
export function rowToWorker(row: Row): Worker {
  return {
    name: String(row.name),
    address: String(row.address),
    machine: String(row.machine),
    systems: json(row.systems) as string[],
    lastSeen: Number(row.last_seen),
    timeoutSeconds: nullableNumber(row.timeout),
  };
}

/** The weather of a new final status given the job's previous one. */
export function weatherOf(status: number, last: number | null): Weather {
  if (status < 0 || last === null) return Weather.unknown;
  if (status === 0) {
    return last === 0 ? Weather.stillSucceeding : Weather.newSuccess;
  }
  return last === 0 ? Weather.newFailure : Weather.stillFailing;
}

/**
 * Checks a record name.
 * @throws {TypeError} when it is empty.
 */
export function checkName(action: string, name: string): void {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(
      `Cannot ${action}: name ${JSON.stringify(name)} is empty`,
    );
  }
}

/**
 * Checks a job before registration.
 * @throws {TypeError} on an empty field or a missing list.
 * @throws {RangeError} on a non-integer timeout.
 */
export function checkJob(job: NewJob): void {
  for (const field of ["name", "derivation", "system"] as const) {
    if (typeof job[field] !== "string" || job[field].length === 0) {
      throw new TypeError(
        `Cannot register job ${
          JSON.stringify(truncate(String(job.name)))
        }: ${field} ${JSON.stringify(job[field])} is empty`,
      );
    }
  }
  if (!Array.isArray(job.outputs) || !Array.isArray(job.inputs)) {
    throw new TypeError(
      `Cannot register job ${
        JSON.stringify(truncate(job.name))
      }: outputs and inputs must be arrays`,
    );
  }
  integer("register builds", "maxSilent", job.maxSilent);
  integer("register builds", "timeout", job.timeout);
}

/**
 * Returns `value` if it is a safe integer.
 * @throws {RangeError} otherwise.
 */
export function integer(action: string, field: string, value: number): number {
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(
      `Cannot ${action}: ${field} ${JSON.stringify(value)} is not an integer`,
    );
  }
  return value;
}

/**
 * Returns `limit` if it is a non-negative integer.
 * @throws {RangeError} otherwise.
 */
export function checkLimit(action: string, limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(
      `Cannot ${action}: limit ${
        JSON.stringify(limit)
      } is not a non-negative integer`,
    );
  }
  return limit;
}

/** `text`, cut to `max` characters for an error message. */
export function truncate(text: string, max = 200): string {
  return text.length > max ? text.slice(0, max) + "…" : text;
}
