// The Store interface over any driver that runs store procedures.

import * as builds from "./sql_builds.ts";
import * as catalog from "./sql_catalog.ts";
import * as dashboards from "./sql_dashboards.ts";
import * as fetches from "./sql_fetches.ts";
import * as owners from "./sql_evaluation_owners.ts";
import * as products from "./sql_products.ts";
import { registerBuilds } from "./sql_register.ts";
import * as workers from "./sql_workers.ts";
import { checkFinal } from "./sql_builds.ts";
import { scanProcedure } from "./sql_scans.ts";
import { describeNul, findNul } from "../nul_text.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { Scan } from "./sql_scans.ts";
import { BuildStatus, type Store, StoreError } from "./types.ts";

/** Runs store procedures against one database. */
export interface SqlDriver {
  dialect: Dialect;
  /**
   * Runs `procedure`; a "write" runs in one transaction that takes the
   * write lock up front, a "read" sees one consistent state, a "statement"
   * is a write of one statement, atomic on its own (PostgreSQL runs it
   * without a transaction around it: one round trip, not three). A "long"
   * write is a write of many statements that may take seconds; SQLite
   * lets the event loop run between them, holding the transaction (other
   * writes wait, reads on its connection see what it wrote so far).
   */
  execute: Execute;
  /**
   * Calls `work` with an `execute` whose writes share one transaction
   * (each in a savepoint of its own unless `savepoints` is false),
   * committed once `work` resolves and rolled back if it throws. See
   * {@link Store.batch}.
   */
  batch<T>(
    work: (execute: Execute) => Promise<T>,
    options: { savepoints: boolean },
  ): Promise<T>;
  /**
   * Runs a scan where it holds up no write, seeing committed writes only
   * (SQLite: on a connection of its own, on another thread). Absent: the
   * scan is a "read".
   */
  scan?: Scan;
  close(): Promise<void>;
}

/** How a store procedure runs: see {@link SqlDriver.execute}. */
export type ExecuteMode = "read" | "write" | "statement" | "long";

/** Runs one store procedure, reading or writing. */
export type Execute = <T>(
  mode: ExecuteMode,
  procedure: (dialect: Dialect) => Step<T>,
) => Promise<T>;

/** A Store whose every method is one procedure run by `driver`. */
export function createSqlStore(driver: SqlDriver): Store {
  const { dialect } = driver;
  const execute = driver.execute.bind(driver);
  // Outside a batch, a scan need not see what is not committed yet.
  const scan: Scan = driver.scan?.bind(driver) ?? scanAsRead(execute);
  let batchesBegun = 0;
  return storeOver(execute, scan, dialect, {
    batchesBegun: () => batchesBegun,
    batch: (work, options = {}) => {
      batchesBegun++;
      const optimistic = options.optimistic === true;
      return driver.batch(async (execute) => {
        let open = true;
        // Optimistic: the first failing write; nothing of the batch may
        // be committed after it (it may have done half of its work).
        let spoiled: StoreError | null = null;
        const guarded: Execute = async (mode, procedure) => {
          if (!open) {
            throw new StoreError(
              "A batch's store was used after the batch ended",
              "batch-misuse",
              mode,
            );
          }
          if (spoiled !== null) throw spoiled;
          try {
            return await execute(mode, procedure);
          } catch (error) {
            if (!optimistic || mode === "read") throw error;
            spoiled = new StoreError(
              `Optimistic batch aborted by a failing write: ${
                (error as Error)?.message ?? error
              }`,
              "batch-aborted",
              mode,
              { cause: error },
            );
            throw spoiled;
          }
        };
        try {
          const result = await work(
            storeOver(guarded, scanAsRead(guarded), dialect, batchScope),
          );
          if (spoiled !== null) throw spoiled;
          return result;
        } finally {
          open = false;
        }
      }, { savepoints: !optimistic });
    },
    close: () => driver.close(),
  });
}

/** What a store inside a batch does with a nested batch, and with close. */
const batchScope: Pick<Store, "batch" | "close"> = {
  batch() {
    return Promise.reject(
      new StoreError(
        "A batch cannot be nested in a batch",
        "batch-misuse",
        "batch",
      ),
    );
  },
  close() {
    return Promise.reject(
      new StoreError(
        "A batch's store cannot be closed",
        "batch-misuse",
        "close",
      ),
    );
  },
};

/** Scans run as reads through `execute`, on its connection. */
function scanAsRead(execute: Execute): Scan {
  return (name, args) => execute("read", scanProcedure(name, args));
}

/**
 * The Store's methods over `execute` and `scan`; `scope` gives batch and
 * close.
 */
function storeOver(
  execute: Execute,
  scan: Scan,
  dialect: Dialect,
  scope: Pick<Store, "batch" | "close" | "batchesBegun">,
): Store {
  return refusingNul(methodsOver(execute, scan, dialect, scope));
}

/**
 * `store` with each method refusing arguments whose text holds a NUL
 * character: PostgreSQL cannot store one (its driver's error would reach
 * the caller raw), SQLite can. Refused alike on both, so that what one
 * backend keeps the other does not lose. Callers that take text from
 * outside refuse it first, naming it in their own terms; this is the
 * guard for any that does not.
 */
function refusingNul(store: Store): Store {
  const guarded: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(store)) {
    guarded[name] = function refuseNul(...args: unknown[]) {
      for (const [index, arg] of args.entries()) {
        const found = findNul(arg);
        if (found === null) continue;
        return Promise.reject(
          new StoreError(
            `Cannot run ${name}(): argument ${index + 1} ${describeNul(found)}`,
            "invalid-text",
            found.text,
          ),
        );
      }
      return (method as (...args: unknown[]) => unknown).apply(store, args);
    };
  }
  return guarded as unknown as Store;
}

/** The Store's methods, as {@link storeOver} describes them. */
function methodsOver(
  execute: Execute,
  scan: Scan,
  dialect: Dialect,
  scope: Pick<Store, "batch" | "close" | "batchesBegun">,
): Store {
  const read = <T>(procedure: (d: Dialect) => Step<T>) =>
    execute("read", procedure);
  const write = <T>(procedure: (d: Dialect) => Step<T>) =>
    execute("write", procedure);
  // On PostgreSQL each statement of a pop (one per set of systems) is
  // atomic on its own and never waits for a lock (SKIP LOCKED): the pop
  // runs without a transaction around it, as a read does. (Not as a
  // "statement": one statement failing would retry those that succeeded.)
  const popBuilds: Store["popBuilds"] = (requests, now, options) =>
    execute(
      dialect.name === "postgres" ? "read" : "write",
      (d) => builds.popBuilds(d, requests, now, options),
    );
  const markStartedMany: Store["markStartedMany"] = (starts, now) =>
    write((d) => builds.markStartedMany(d, starts, now));

  return {
    upsertSpecification: (spec) =>
      write((d) => catalog.upsertSpecification(d, spec)),
    getSpecification: (name) => read((d) => catalog.getSpecification(d, name)),
    listSpecifications: () => read((d) => catalog.listSpecifications(d)),
    deleteSpecification: (name) =>
      execute("long", (d) => catalog.deleteSpecification(d, name)),

    addEvaluation: (specification, checkouts, now, options) =>
      write((d) =>
        catalog.addEvaluation(
          d,
          specification,
          checkouts,
          now,
          options?.owner ?? null,
        )
      ),
    setEvaluationStatus: (id, status, now) =>
      write((d) => catalog.setEvaluationStatus(d, id, status, now)),
    finishEvaluation: (id, status, now) =>
      write((d) => owners.finishEvaluation(d, id, status, now)),
    listRunningEvaluations: () => read((d) => owners.listRunningEvaluations(d)),
    evaluationOwner: (id) => read((d) => owners.evaluationOwner(d, id)),
    evaluationCanceled: (id) => read((d) => owners.evaluationCanceled(d, id)),
    renewEvaluationHeartbeat: (id, now) =>
      execute(
        "statement",
        (d) => owners.renewEvaluationHeartbeat(d, id, now),
      ),
    abortStaleEvaluation: (id, seen) =>
      execute("statement", (d) => owners.abortStaleEvaluation(d, id, seen)),
    getEvaluation: (id) => read((d) => catalog.getEvaluation(d, id)),
    getEvaluationCheckouts: (id) =>
      read((d) => catalog.getEvaluationCheckouts(d, id)),
    latestCheckouts: (specification) =>
      read((d) => catalog.latestCheckouts(d, specification)),
    listEvaluations: (options) =>
      read((d) => catalog.listEvaluations(d, options)),
    listJobs: (evaluation, options) => scan("listJobs", [evaluation, options]),

    registerBuilds: (evaluation, jobs, options) =>
      execute("long", (d) => registerBuilds(d, evaluation, jobs, options)),

    getBuild: (id) => read((d) => catalog.buildById(d, id)),
    addBuildProducts: (build, list) =>
      write((d) => products.addBuildProducts(d, build, list)),
    getBuildProduct: (id) => read((d) => products.buildProduct(d, id)),
    getBuildByDerivation: (derivation) =>
      read(function* (d) {
        return (yield* catalog.selectBuilds(d, "WHERE b.derivation = ?", [
          derivation,
        ]))[0] ?? null;
      }),
    latestBuilds: (filter, limit) =>
      read((d) => catalog.latestBuilds(d, filter, limit)),
    queue: (filter, limit) => read((d) => catalog.queue(d, filter, limit)),
    buildDependencies: (id) => read((d) => catalog.buildDependencies(d, id)),
    pendingDependencies: (id) =>
      read((d) => catalog.pendingDependencies(d, id)),
    countBuildsByStatus: (filter) => scan("countBuildsByStatus", [filter]),
    queueLengthBySystem: () => scan("queueLengthBySystem", []),

    popBuild: async (worker, systems, now) =>
      (await popBuilds([{ worker, systems }], now))[0],
    popBuilds,
    markStarted: async (derivation, worker, log, now) =>
      (await markStartedMany([{ derivation, worker, log }], now))[0],
    markStartedMany,
    completeBuild: (derivation, status, options) => {
      try {
        checkFinal(derivation, status);
      } catch (error) {
        return Promise.reject(error);
      }
      // A success is one statement on PostgreSQL.
      const alone = dialect.name === "postgres" &&
        status === BuildStatus.succeeded;
      return execute(
        alone ? "statement" : "write",
        (d) => builds.completeBuild(d, derivation, status, options),
      );
    },
    requeueBuild: (derivation, _now, options) =>
      write((d) => builds.requeueBuild(d, derivation, options?.worker)),
    stillHeld: (holdings) => read((d) => workers.stillHeld(d, holdings)),
    requeueWorkerBuilds: (worker, _now) =>
      write((d) => workers.requeueWorker(d, worker)),
    cancelBuild: (id, now) => write((d) => builds.cancelBuild(d, id, now)),
    restartBuild: (id, _now) => write((d) => builds.restartBuild(d, id)),
    cancelEvaluation: (id, now) =>
      write((d) => builds.cancelEvaluation(d, id, now)),
    restartEvaluation: (id, _now) =>
      write((d) => builds.restartEvaluation(d, id)),
    popNotifications: (limit, now) =>
      write((d) => builds.popNotifications(d, limit, now)),
    returnNotifications: (items) =>
      write((d) => builds.returnNotifications(d, items)),
    finishNotifications: (ids) =>
      write((d) => builds.finishNotifications(d, ids)),

    addDashboard: (dashboard, { now, keep }) =>
      write((d) => dashboards.addDashboard(d, dashboard, now, keep)),
    getDashboard: (id) => read((d) => dashboards.getDashboard(d, id)),
    useDashboard: async (id, now) => {
      const found = await read((d) => dashboards.getDashboard(d, id));
      if (found !== null && dashboards.useIsStale(found.lastUsed, now)) {
        await execute("statement", () => dashboards.recordUse(id, now));
        return { ...found, lastUsed: now };
      }
      return found;
    },

    upsertWorker: (worker) => write((d) => workers.upsertWorker(d, worker)),
    touchWorker: (name, now) => write((d) => workers.touchWorker(d, name, now)),
    claimWorker: (worker, expected) =>
      write((d) => workers.claimWorker(d, worker, expected)),
    releaseWorker: (name, address) =>
      write((d) => workers.releaseWorker(d, name, address)),
    getWorker: (name) => read((d) => workers.getWorker(d, name)),
    listWorkers: () => read((d) => workers.listWorkers(d)),
    removeWorker: async (name, _now) => {
      await write((d) => workers.removeWorker(d, name));
    },
    expireWorkers: (cutoff, _now) =>
      write((d) => workers.expireWorkers(d, cutoff)),
    stopWorkerClock: (now) => write((d) => workers.stopWorkerClock(d, now)),
    resumeWorkerClock: (now) => write((d) => workers.resumeWorkerClock(d, now)),
    creditWorkers: (seconds, before) =>
      write((d) => workers.creditWorkers(d, seconds, before)),
    saveInterruptedFetches: (list) =>
      write((d) => fetches.saveInterruptedFetches(d, list)),
    takeInterruptedFetches: () =>
      write((d) => fetches.takeInterruptedFetches(d)),

    ...scope,
  };
}
