// The Store interface over any driver that runs store procedures.

import * as builds from "./sql_builds.ts";
import * as dispatch from "./sql_dispatch.ts";
import * as notifications from "./sql_notifications.ts";
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
  const store = storeOn({ execute, scan, dialect }, {
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
          const runner = {
            execute: guarded,
            scan: scanAsRead(guarded),
            dialect,
            inBatch: true,
          };
          const result = await work(storeOn(runner, batchScope));
          if (spoiled !== null) throw spoiled;
          return result;
        } finally {
          open = false;
        }
      }, { savepoints: !optimistic });
    },
    close: () => driver.close(),
  });
  // The long-lived store's methods are its own, bound to it: they may be
  // passed around and its object spread (`{ ...store, batch }`).
  const own = store as unknown as Record<string, unknown>;
  for (const name of Object.keys(METHODS)) {
    own[name] = (STORE_PROTOTYPE[name] as (...args: unknown[]) => unknown)
      .bind(store);
  }
  return store;
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

/** What a store's methods run their procedures on. */
interface Runner {
  readonly execute: Execute;
  readonly scan: Scan;
  readonly dialect: Dialect;
  /** A batch's: its procedures share the batch's transaction. */
  readonly inBatch?: boolean;
}

/** Where a store keeps its {@link Runner}. */
const RUNNER = Symbol("runner");

/**
 * A store running its methods on `runner`: an object of
 * {@link STORE_PROTOTYPE}, with `scope`'s batch and close. One object, not
 * one closure per method: a dispatcher makes a batch store per turn,
 * hundreds a second, and a set of closures each was a quarter of all it
 * allocated; its minor collections, pauses of some 5 ms that set its
 * request-work p99, came that much more often.
 */
function storeOn(
  runner: Runner,
  scope: Pick<Store, "batch" | "close" | "batchesBegun">,
): Store {
  const store = Object.create(STORE_PROTOTYPE);
  store[RUNNER] = runner;
  store.batch = scope.batch;
  store.close = scope.close;
  if (scope.batchesBegun !== undefined) {
    store.batchesBegun = scope.batchesBegun;
  }
  return store;
}

/** The store methods that run procedures, by name. */
type MethodName = Exclude<
  keyof Store,
  "batch" | "close" | "batchesBegun" | "watchQueue" | "watchHoldings"
>;

/** Each store method as a function of what it runs on. */
type Methods = {
  [K in MethodName]: (
    c: Runner,
    ...args: Parameters<Store[K]>
  ) => ReturnType<Store[K]>;
};

/** Runs `procedure` on `c` as a read. */
function read<T>(c: Runner, procedure: (d: Dialect) => Step<T>): Promise<T> {
  return c.execute("read", procedure);
}

/** Runs `procedure` on `c` as a write (one transaction). */
function write<T>(c: Runner, procedure: (d: Dialect) => Step<T>): Promise<T> {
  return c.execute("write", procedure);
}

// On PostgreSQL each statement of a pop (one per set of systems) is
// atomic on its own and never waits for a lock (SKIP LOCKED): the pop
// runs without a transaction around it, as a read does. (Not as a
// "statement": one statement failing would retry those that succeeded.)
// In a batch it is the write it is: a failing pop then aborts an
// optimistic batch, to be replayed, and in the replay fails alone in its
// savepoint. As a read it had none, and failing it failed the whole batch
// (a dispatcher turn, every message's writes with it).
const popBuilds: Methods["popBuilds"] = (c, requests, now, options) =>
  c.execute(
    c.dialect.name === "postgres" && c.inBatch !== true ? "read" : "write",
    (d) => dispatch.popBuilds(d, requests, now, options),
  );

const markStartedMany: Methods["markStartedMany"] = (c, starts, now) =>
  write(c, (d) => dispatch.markStartedMany(d, starts, now));

/**
 * Every store method, each a procedure run on the runner it is given: one
 * table for the long-lived store and every batch's (see storeOn).
 */
const METHODS: Methods = {
  upsertSpecification: (c, spec) =>
    write(c, (d) => catalog.upsertSpecification(d, spec)),
  getSpecification: (c, name) =>
    read(c, (d) => catalog.getSpecification(d, name)),
  listSpecifications: (c) => read(c, (d) => catalog.listSpecifications(d)),
  deleteSpecification: (c, name) =>
    c.execute("long", (d) => catalog.deleteSpecification(d, name)),

  addEvaluation: (c, specification, checkouts, now, options) =>
    write(c, (d) =>
      catalog.addEvaluation(
        d,
        specification,
        checkouts,
        now,
        options?.owner ?? null,
      )),
  setEvaluationStatus: (c, id, status, now) =>
    write(c, (d) => catalog.setEvaluationStatus(d, id, status, now)),
  finishEvaluation: (c, id, status, now) =>
    write(c, (d) => owners.finishEvaluation(d, id, status, now)),
  listRunningEvaluations: (c) =>
    read(c, (d) => owners.listRunningEvaluations(d)),
  evaluationOwner: (c, id) => read(c, (d) => owners.evaluationOwner(d, id)),
  evaluationCanceled: (c, id) =>
    read(c, (d) => owners.evaluationCanceled(d, id)),
  renewEvaluationHeartbeat: (c, id, now) =>
    c.execute(
      "statement",
      (d) => owners.renewEvaluationHeartbeat(d, id, now),
    ),
  abortStaleEvaluation: (c, id, seen) =>
    c.execute("statement", (d) => owners.abortStaleEvaluation(d, id, seen)),
  getEvaluation: (c, id) => read(c, (d) => catalog.getEvaluation(d, id)),
  getEvaluationCheckouts: (c, id) =>
    read(c, (d) => catalog.getEvaluationCheckouts(d, id)),
  latestCheckouts: (c, specification) =>
    read(c, (d) => catalog.latestCheckouts(d, specification)),
  listEvaluations: (c, options) =>
    read(c, (d) => catalog.listEvaluations(d, options)),
  listJobs: (c, evaluation, options) =>
    c.scan("listJobs", [evaluation, options]),

  registerBuilds: (c, evaluation, jobs, options) =>
    c.execute("long", (d) => registerBuilds(d, evaluation, jobs, options)),

  getBuild: (c, id) => read(c, (d) => catalog.buildById(d, id)),
  addBuildProducts: (c, build, list) =>
    write(c, (d) => products.addBuildProducts(d, build, list)),
  getBuildProduct: (c, id) => read(c, (d) => products.buildProduct(d, id)),
  getBuildByDerivation: (c, derivation) =>
    read(c, function* (d) {
      return (yield* catalog.selectBuilds(d, "WHERE b.derivation = ?", [
        derivation,
      ]))[0] ?? null;
    }),
  latestBuilds: (c, filter, limit) =>
    read(c, (d) => catalog.latestBuilds(d, filter, limit)),
  queue: (c, filter, limit) => read(c, (d) => catalog.queue(d, filter, limit)),
  buildDependencies: (c, id) =>
    read(c, (d) => catalog.buildDependencies(d, id)),
  pendingDependencies: (c, id) =>
    read(c, (d) => catalog.pendingDependencies(d, id)),
  countBuildsByStatus: (c, filter) => c.scan("countBuildsByStatus", [filter]),
  queueLengthBySystem: (c) => c.scan("queueLengthBySystem", []),
  searchBuilds: (c, search, limit) => c.scan("searchBuilds", [search, limit]),

  popBuild: async (c, worker, systems, now) =>
    (await popBuilds(c, [{ worker, systems }], now))[0],
  popBuilds,
  markStarted: async (c, derivation, worker, log, now, options) => {
    const start = { derivation, worker, log };
    const address = options?.holderAddress;
    if (address === undefined) {
      return (await markStartedMany(c, [start], now))[0];
    }
    return await write(
      c,
      (d) => dispatch.markStartedUnder(d, start, now, address),
    );
  },
  markStartedMany,
  completeBuild: (c, derivation, status, options) => {
    try {
      checkFinal(derivation, status);
    } catch (error) {
      return Promise.reject(error);
    }
    // A success is one statement on PostgreSQL, unless a holder's claim
    // is checked first.
    const alone = c.dialect.name === "postgres" &&
      status === BuildStatus.succeeded &&
      options.holderAddress === undefined;
    return c.execute(
      alone ? "statement" : "write",
      (d) => builds.completeBuild(d, derivation, status, options),
    );
  },
  requeueBuild: (c, derivation, _now, options) =>
    write(
      c,
      (d) => builds.requeueBuild(d, derivation, options?.worker, options),
    ),
  stillHeld: (c, holdings) => read(c, (d) => workers.stillHeld(d, holdings)),
  requeueWorkerBuilds: (c, worker, _now) =>
    write(c, (d) => workers.requeueWorker(d, worker)),
  cancelBuild: (c, id, now) => write(c, (d) => builds.cancelBuild(d, id, now)),
  restartBuild: (c, id, _now) => write(c, (d) => builds.restartBuild(d, id)),
  cancelEvaluation: (c, id, now) =>
    write(c, (d) => builds.cancelEvaluation(d, id, now)),
  restartEvaluation: (c, id, _now) =>
    write(c, (d) => builds.restartEvaluation(d, id)),
  popNotifications: (c, limit, now) =>
    write(c, (d) => notifications.popNotifications(d, limit, now)),
  returnNotifications: (c, items) =>
    write(c, (d) => notifications.returnNotifications(d, items)),
  finishNotifications: (c, ids) =>
    write(c, (d) => notifications.finishNotifications(d, ids)),

  addDashboard: (c, dashboard, { now, keep }) =>
    write(c, (d) => dashboards.addDashboard(d, dashboard, now, keep)),
  getDashboard: (c, id) => read(c, (d) => dashboards.getDashboard(d, id)),
  useDashboard: async (c, id, now) => {
    const found = await read(c, (d) => dashboards.getDashboard(d, id));
    if (found !== null && dashboards.useIsStale(found.lastUsed, now)) {
      await c.execute("statement", () => dashboards.recordUse(id, now));
      return { ...found, lastUsed: now };
    }
    return found;
  },

  upsertWorker: (c, worker) => write(c, (d) => workers.upsertWorker(d, worker)),
  touchWorker: (c, name, now, timeoutSeconds) =>
    write(c, (d) => workers.touchWorker(d, name, now, timeoutSeconds)),
  claimWorker: (c, worker, expected) =>
    write(c, (d) => workers.claimWorker(d, worker, expected)),
  releaseWorker: (c, name, address) =>
    write(c, (d) => workers.releaseWorker(d, name, address)),
  getWorker: (c, name) => read(c, (d) => workers.getWorker(d, name)),
  listWorkers: (c) => read(c, (d) => workers.listWorkers(d)),
  removeWorker: async (c, name, _now) => {
    await write(c, (d) => workers.removeWorker(d, name));
  },
  expireWorkers: (c, now, sweep) =>
    write(c, (d) => workers.expireWorkers(d, now, sweep)),
  shortestWorkerTimeout: (c) =>
    read(c, (d) => workers.shortestWorkerTimeout(d)),
  stopWorkerClock: (c, now) => write(c, (d) => workers.stopWorkerClock(d, now)),
  resumeWorkerClock: (c, now) =>
    write(c, (d) => workers.resumeWorkerClock(d, now)),
  creditWorkers: (c, seconds, before) =>
    write(c, (d) => workers.creditWorkers(d, seconds, before)),
  saveOwedFetches: (c, list) =>
    write(c, (d) => fetches.saveOwedFetches(d, list)),
  owedFetches: (c) => read(c, (d) => fetches.owedFetches(d)),
  forgetOwedFetch: (c, fetch) =>
    write(c, (d) => fetches.forgetOwedFetch(d, fetch)),
};

/**
 * The methods of every store, each running its procedure on its store's
 * runner; each refuses arguments whose text holds a NUL character:
 * PostgreSQL cannot store one (its driver's error would reach the caller
 * raw), SQLite can. Refused alike on both, so that what one backend keeps
 * the other does not lose. Callers that take text from outside refuse it
 * first, naming it in their own terms; this is the guard for any that does
 * not.
 */
const STORE_PROTOTYPE: Record<string, unknown> = Object.fromEntries(
  Object.entries(METHODS).map(([name, method]) => [
    name,
    function storeMethod(this: { [RUNNER]?: Runner }, ...args: unknown[]) {
      const runner = this?.[RUNNER];
      if (runner === undefined) {
        return Promise.reject(
          new StoreError(
            `Cannot run ${name}(): a batch's store method must be called on its store`,
            "batch-misuse",
            name,
          ),
        );
      }
      // Every store call passes here: no iterator per call.
      for (let index = 0; index < args.length; index++) {
        const found = findNul(args[index]);
        if (found === null) continue;
        return Promise.reject(
          new StoreError(
            `Cannot run ${name}(): argument ${index + 1} ${describeNul(found)}`,
            "invalid-text",
            found.text,
          ),
        );
      }
      return (method as (c: Runner, ...args: unknown[]) => unknown)(
        runner,
        ...args,
      );
    },
  ]),
);
