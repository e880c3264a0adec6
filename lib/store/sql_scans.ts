// Reads that go over a large share of the builds (counts by status or
// system: the whole queue at a million builds, 50-100 ms on SQLite; the
// jobs of a 50,000-job evaluation, 100 ms; a search for a rare name, every
// build). They
// are named, not passed as closures, so that a driver can run them on a
// connection of their own, on another thread, where they hold up no write
// (sqlite_scanner.ts). Such a connection sees committed writes only.

import {
  countBuildsByStatus,
  listJobs,
  queueLengthBySystem,
  searchBuilds,
} from "./sql_catalog.ts";
import type { Dialect, Step } from "./sql_query.ts";

/** The scans, by name. */
export const SCANS = {
  countBuildsByStatus,
  listJobs,
  queueLengthBySystem,
  searchBuilds,
};

export type ScanName = keyof typeof SCANS;

/** The arguments of scan `N`, after the dialect. */
export type ScanArgs<N extends ScanName> = (typeof SCANS)[N] extends (
  d: Dialect,
  ...args: infer A
) => Step<unknown> ? A
  : never;

/** What scan `N` returns. */
export type ScanResult<N extends ScanName> = (typeof SCANS)[N] extends (
  ...args: never[]
) => Step<infer T> ? T
  : never;

/** Runs a scan, by name. */
export type Scan = <N extends ScanName>(
  name: N,
  args: ScanArgs<N>,
) => Promise<ScanResult<N>>;

/** Runs scan `name` as a store procedure. */
export function scanProcedure<N extends ScanName>(
  name: N,
  args: ScanArgs<N>,
): (d: Dialect) => Step<ScanResult<N>> {
  const scan = SCANS[name] as (
    d: Dialect,
    ...args: unknown[]
  ) => Step<ScanResult<N>>;
  return (d) => scan(d, ...args);
}
