// The Store on SQLite, through Deno's built-in synchronous `node:sqlite`.
//
// Choices every backend shares (the contract tests pin them): a filter on
// `evaluation` selects the evaluation's jobs, including builds an older
// evaluation created; latest builds come newest evaluation first, then
// newest id; countBuildsByStatus lists only statuses that occur.

import { DatabaseSync } from "node:sqlite";
import { BuildStatus, StoreError, Weather } from "./types.ts";
import { MIGRATIONS, SCHEMA_SQL, SCHEMA_VERSION } from "./sqlite_schema.ts";
import type { SQLInputValue, SQLOutputValue, StatementSync } from "node:sqlite";
import type {
  Build,
  BuildFilter,
  Checkout,
  CompleteResult,
  Evaluation,
  EvaluationStatus,
  NewJob,
  RegisterResult,
  Specification,
  Store,
  Worker,
} from "./types.ts";

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** How long a write waits for another connection's lock; default 5000. */
  busyTimeoutMs?: number;
}

type Row = Record<string, SQLOutputValue>;

const DEFAULT_BUSY_TIMEOUT_MS = 5000;

const BUILD_COLUMNS = `b.id, b.derivation, b.evaluation, b.specification,
  b.job_name, b.system, b.worker, b.nix_name, b.log, b.status, b.last_status,
  b.weather, b.priority, b.max_silent, b.timeout, b.timestamp, b.starttime,
  b.stoptime,
  (SELECT json_group_array(json_object('name', o.name, 'path', o.path)
                           ORDER BY o.rowid)
     FROM Outputs o WHERE o.derivation = b.derivation) AS outputs`;

// The previous result of the job of the row `Builds` being updated: the
// newest finished build of the same job and specification in an earlier
// evaluation (cuirass.md §5.8).
const PREVIOUS_STATUS_SQL = `(SELECT p.status FROM Builds p
  WHERE p.specification = Builds.specification
    AND p.job_name = Builds.job_name
    AND p.evaluation < Builds.evaluation AND p.status >= 0
  ORDER BY p.evaluation DESC, p.id DESC LIMIT 1)`;

// One dispatch candidate of one system: served by the partial index
// Builds_dispatch, stopping at the first build whose dependencies all
// succeeded. Builds blocked by dependencies are walked past, so a system
// whose queue head is long blocked costs a scan of that head.
const DISPATCH_CANDIDATE_SQL = `SELECT b.id, b.priority, b.timestamp
  FROM Builds b
  WHERE b.status = -2 AND b.system = ?
    AND NOT EXISTS (SELECT 1 FROM BuildDependencies d
                    JOIN Builds t ON t.id = d.target
                    WHERE d.source = b.id AND t.status <> 0)
  ORDER BY b.priority, b.timestamp, b.id LIMIT 1`;

// The scheduled builds that depend on build $id, directly or through other
// scheduled builds: a dependent that already finished (say, an
// administrator completed it) shields its own dependents.
const FAIL_DEPENDENTS_SQL = `WITH RECURSIVE dependents(id) AS (
    SELECT d.source FROM BuildDependencies d
      JOIN Builds s ON s.id = d.source
      WHERE d.target = $id AND s.status = -2
    UNION
    SELECT d.source FROM BuildDependencies d
      JOIN dependents ON d.target = dependents.id
      JOIN Builds s ON s.id = d.source
      WHERE s.status = -2
  )
  UPDATE Builds SET status = 2, starttime = $now, stoptime = $now,
    last_status = ${PREVIOUS_STATUS_SQL},
    weather = CASE WHEN ${PREVIOUS_STATUS_SQL} IS NULL THEN -1
                   WHEN ${PREVIOUS_STATUS_SQL} = 0 THEN 1 ELSE 3 END
  WHERE status = -2 AND id IN (SELECT id FROM dependents)`;

const FINAL_STATUSES: ReadonlySet<number> = new Set([0, 1, 2, 3, 4]);

/**
 * Opens (creating or upgrading the schema) a SQLite database as a Store, in
 * WAL mode with a busy timeout and foreign keys on.
 * @throws {StoreError} when the file's schema is newer than this program's.
 */
export function openSqliteStore(
  path: string,
  options: SqliteStoreOptions = {},
): Store {
  const { busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS } = options;

  const db = new DatabaseSync(path);
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA foreign_keys = ON");
    migrate(db, path);
  } catch (error) {
    db.close();
    throw error;
  }
  return createSqliteStore(db);
}

/** Creates the schema of a fresh database, or upgrades an older one. */
function migrate(db: DatabaseSync, path: string): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    const hasVersionTable = db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'SchemaVersion'",
    ).get() !== undefined;
    if (!hasVersionTable) {
      db.exec(SCHEMA_SQL);
      db.prepare("INSERT INTO SchemaVersion (version) VALUES (?)").run(
        SCHEMA_VERSION,
      );
    } else {
      const row = db.prepare("SELECT max(version) AS v FROM SchemaVersion")
        .get() as Row | undefined;
      const version = Number(row?.v ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new StoreError(
          `Cannot open database ${
            JSON.stringify(path)
          }: schema version ${version} is newer than ${SCHEMA_VERSION}`,
          "schema-too-new",
          version,
        );
      }
      for (let next = version + 1; next <= SCHEMA_VERSION; next++) {
        db.exec(MIGRATIONS[next]);
      }
      if (version < SCHEMA_VERSION) {
        db.prepare("UPDATE SchemaVersion SET version = ?").run(SCHEMA_VERSION);
      }
    }
    db.exec("COMMIT");
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

function createSqliteStore(db: DatabaseSync): Store {
  const statements = new Map<string, StatementSync>();
  let inTransaction = false;

  function stmt(sql: string): StatementSync {
    let statement = statements.get(sql);
    if (statement === undefined) {
      statement = db.prepare(sql);
      statements.set(sql, statement);
    }
    return statement;
  }

  // Writes that read first take the write lock up front (BEGIN IMMEDIATE):
  // a deferred transaction upgrading to a writer fails with SQLITE_BUSY at
  // once instead of waiting out the busy timeout.
  function transaction<T>(fn: () => T): T {
    if (inTransaction) return fn();
    db.exec("BEGIN IMMEDIATE");
    inTransaction = true;
    try {
      const result = fn();
      db.exec("COMMIT");
      return result;
    } catch (error) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw error;
    } finally {
      inTransaction = false;
    }
  }

  function buildIdByDerivation(derivation: string): number | undefined {
    const row = stmt("SELECT id FROM Builds WHERE derivation = ?").get(
      derivation,
    ) as Row | undefined;
    return row === undefined ? undefined : Number(row.id);
  }

  function outputOwner(path: string): number | undefined {
    const row = stmt(
      `SELECT b.id FROM Outputs o JOIN Builds b ON b.derivation = o.derivation
       WHERE o.path = ?`,
    ).get(path) as Row | undefined;
    return row === undefined ? undefined : Number(row.id);
  }

  function selectBuilds(
    where: string,
    params: SQLInputValue[],
    tail = "",
  ): Build[] {
    const rows = stmt(`SELECT ${BUILD_COLUMNS} FROM Builds b ${where} ${tail}`)
      .all(...params) as Row[];
    return rows.map(rowToBuild);
  }

  function buildById(id: number): Build | null {
    return selectBuilds("WHERE b.id = ?", [id])[0] ?? null;
  }

  function requeueWorker(worker: string): number {
    return Number(
      stmt(
        `UPDATE Builds SET status = -2, worker = NULL, starttime = 0
         WHERE worker = ? AND status IN (-3, -1)`,
      ).run(worker).changes,
    );
  }

  function dispatchCandidate(system: string): Row | undefined {
    return stmt(DISPATCH_CANDIDATE_SQL).get(system) as Row | undefined;
  }

  return {
    upsertSpecification(spec: Specification) {
      return settle(() => {
        checkName("save specification", spec.name);
        stmt(
          `INSERT INTO Specifications (name, build, channels, build_outputs,
             notifications, period, priority, systems, is_active)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET build = excluded.build,
             channels = excluded.channels,
             build_outputs = excluded.build_outputs,
             notifications = excluded.notifications,
             period = excluded.period, priority = excluded.priority,
             systems = excluded.systems, is_active = excluded.is_active`,
        ).run(
          spec.name,
          JSON.stringify(spec.build),
          JSON.stringify(spec.channels),
          JSON.stringify(spec.buildOutputs),
          JSON.stringify(spec.notifications),
          integer("save specification", "period", spec.period),
          integer("save specification", "priority", spec.priority),
          JSON.stringify(spec.systems),
          spec.isActive ? 1 : 0,
        );
      });
    },

    getSpecification(name: string) {
      return settle(() => {
        const row = stmt("SELECT * FROM Specifications WHERE name = ?").get(
          name,
        ) as Row | undefined;
        return row === undefined ? null : rowToSpecification(row);
      });
    },

    listSpecifications() {
      return settle(() =>
        (stmt("SELECT * FROM Specifications ORDER BY name").all() as Row[])
          .map(rowToSpecification)
      );
    },

    addEvaluation(specification: string, checkouts: Checkout[], now: number) {
      return settle(() =>
        transaction(() => {
          const spec = stmt("SELECT 1 FROM Specifications WHERE name = ?")
            .get(specification);
          if (spec === undefined) {
            throw new StoreError(
              `Cannot add evaluation of specification ${
                JSON.stringify(specification)
              }: no such specification`,
              "not-found",
              specification,
            );
          }
          const row = stmt(
            `INSERT INTO Evaluations (specification, status, timestamp,
               checkouttime, evaltime)
             VALUES (?, -1, ?, ?, 0) RETURNING id`,
          ).get(specification, now, now) as Row;
          const id = Number(row.id);
          const insert = stmt(
            `INSERT INTO Checkouts (evaluation, channel, specification,
               revision, directory, timestamp)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (evaluation, channel) DO UPDATE SET
               revision = excluded.revision, directory = excluded.directory`,
          );
          for (const checkout of checkouts) {
            insert.run(
              id,
              checkout.channel,
              specification,
              checkout.revision,
              checkout.directory,
              now,
            );
          }
          return id;
        })
      );
    },

    setEvaluationStatus(id: number, status: EvaluationStatus, now: number) {
      return settle(() => {
        // A finished evaluation (status >= 0) records when it finished.
        const changes = stmt(
          `UPDATE Evaluations SET status = $status,
             evaltime = CASE WHEN $status >= 0 THEN $now ELSE evaltime END
           WHERE id = $id`,
        ).run({ status, now, id }).changes;
        if (Number(changes) === 0) {
          throw new StoreError(
            `Cannot set status of evaluation ${id}: no such evaluation`,
            "not-found",
            id,
          );
        }
      });
    },

    getEvaluation(id: number) {
      return settle(() => {
        const row = stmt("SELECT * FROM Evaluations WHERE id = ?").get(id) as
          | Row
          | undefined;
        return row === undefined ? null : rowToEvaluation(row);
      });
    },

    getEvaluationCheckouts(id: number) {
      return settle(() =>
        (stmt(
          `SELECT channel, revision, directory FROM Checkouts
           WHERE evaluation = ? ORDER BY rowid`,
        ).all(id) as Row[]).map((row) => ({
          channel: String(row.channel),
          revision: String(row.revision),
          directory: String(row.directory),
        }))
      );
    },

    listEvaluations(options: { specification?: string; limit: number }) {
      return settle(() => {
        const limit = checkLimit("list evaluations", options.limit);
        const rows = options.specification === undefined
          ? stmt("SELECT * FROM Evaluations ORDER BY id DESC LIMIT ?").all(
            limit,
          )
          : stmt(
            `SELECT * FROM Evaluations WHERE specification = ?
             ORDER BY id DESC LIMIT ?`,
          ).all(options.specification, limit);
        return (rows as Row[]).map(rowToEvaluation);
      });
    },

    registerBuilds(
      evaluation: number,
      jobs: NewJob[],
      options: { priority: number; now: number },
    ) {
      return settle((): RegisterResult =>
        transaction(() => {
          const evaluationRow = stmt(
            "SELECT specification FROM Evaluations WHERE id = ?",
          ).get(evaluation) as Row | undefined;
          if (evaluationRow === undefined) {
            const what = jobs.length > 0
              ? `build ${JSON.stringify(truncate(jobs[0].derivation))}`
              : "builds";
            throw new StoreError(
              `Cannot register ${what}: evaluation ${evaluation} does not exist`,
              "not-found",
              evaluation,
            );
          }
          const specification = String(evaluationRow.specification);
          const priority = integer(
            "register builds",
            "priority",
            options.priority,
          );
          const insertBuild = stmt(
            `INSERT INTO Builds (derivation, evaluation, specification,
               job_name, system, nix_name, log, status, weather, priority,
               max_silent, timeout, timestamp, starttime, stoptime)
             VALUES (?, ?, ?, ?, ?, ?, '', -2, -1, ?, ?, ?, ?, 0, 0)
             RETURNING id`,
          );
          const insertOutput = stmt(
            `INSERT INTO Outputs (path, derivation, name) VALUES (?, ?, ?)
             ON CONFLICT (path) DO NOTHING`,
          );
          const insertJob = stmt(
            `INSERT INTO Jobs (evaluation, name, build, system)
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
          );

          let created = 0;
          let known = 0;
          const fresh: { id: number; inputs: string[] }[] = [];
          for (const job of jobs) {
            checkJob(job);
            let id = buildIdByDerivation(job.derivation);
            // Dedup by output path: a derivation whose outputs all belong
            // to registered builds needs no build of its own.
            if (
              id === undefined && job.outputs.length > 0 &&
              job.outputs.every((output) =>
                outputOwner(output.path) !== undefined
              )
            ) {
              id = outputOwner(job.outputs[0].path);
            }
            if (id === undefined) {
              const row = insertBuild.get(
                job.derivation,
                evaluation,
                specification,
                job.name,
                job.system,
                job.nixName,
                priority,
                integer("register builds", "maxSilent", job.maxSilent),
                integer("register builds", "timeout", job.timeout),
                options.now,
              ) as Row;
              id = Number(row.id);
              for (const output of job.outputs) {
                insertOutput.run(output.path, job.derivation, output.name);
              }
              created++;
              fresh.push({ id, inputs: job.inputs });
            } else {
              known++;
            }
            insertJob.run(evaluation, job.name, id, job.system);
          }

          // After every build of the batch exists, so that inputs among the
          // batch resolve as well as those of earlier evaluations.
          const insertDependencies = stmt(
            `INSERT INTO BuildDependencies (source, target)
             SELECT ?1, b.id FROM Builds b
             WHERE b.derivation IN (SELECT value FROM json_each(?2))
               AND b.id <> ?1
             ON CONFLICT DO NOTHING`,
          );
          for (const { id, inputs } of fresh) {
            if (inputs.length > 0) {
              insertDependencies.run(id, JSON.stringify(inputs));
            }
          }
          return { created, known };
        })
      );
    },

    getBuild(id: number) {
      return settle(() => buildById(id));
    },

    getBuildByDerivation(derivation: string) {
      return settle(() =>
        selectBuilds("WHERE b.derivation = ?", [derivation])[0] ?? null
      );
    },

    latestBuilds(filter: BuildFilter, limit: number) {
      return settle(() => {
        const { clauses, params } = filterClauses(filter);
        return selectBuilds(
          `WHERE b.status >= 0${clauses}`,
          [...params, checkLimit("list latest builds", limit)],
          "ORDER BY b.evaluation DESC, b.id DESC LIMIT ?",
        );
      });
    },

    queue(filter: BuildFilter, limit: number) {
      return settle(() => {
        const { clauses, params } = filterClauses(filter);
        return selectBuilds(
          `WHERE b.status < 0${clauses}`,
          [...params, checkLimit("list the queue", limit)],
          `ORDER BY b.status DESC, b.priority, b.timestamp, b.id LIMIT ?`,
        );
      });
    },

    buildDependencies(id: number) {
      return settle(() =>
        (stmt(
          "SELECT target FROM BuildDependencies WHERE source = ? ORDER BY target",
        ).all(id) as Row[]).map((row) => Number(row.target))
      );
    },

    countBuildsByStatus(filter: BuildFilter = {}) {
      return settle(() => {
        const { clauses, params } = filterClauses(filter);
        const rows = stmt(
          `SELECT b.status, count(*) AS n FROM Builds b WHERE 1${clauses}
           GROUP BY b.status ORDER BY b.status`,
        ).all(...params) as Row[];
        return new Map(
          rows.map((row) => [Number(row.status) as BuildStatus, Number(row.n)]),
        );
      });
    },

    popBuild(worker: string, systems: string[], now: number) {
      return settle(() =>
        transaction(() => {
          // Every system's head, then the best of them: the order is global
          // across systems (case C04), not per system in random order.
          let best: Row | undefined;
          for (const system of new Set(systems)) {
            const candidate = dispatchCandidate(system);
            if (candidate !== undefined && isBefore(candidate, best)) {
              best = candidate;
            }
          }
          if (best === undefined) return null;
          stmt(
            `UPDATE Builds SET status = -3, worker = ?, starttime = ?
             WHERE id = ? AND status = -2`,
          ).run(worker, now, Number(best.id));
          return buildById(Number(best.id));
        })
      );
    },

    markStarted(derivation: string, worker: string, log: string, now: number) {
      return settle(() =>
        Number(
          stmt(
            `UPDATE Builds SET status = -1, starttime = ?, log = ?
             WHERE derivation = ? AND worker = ? AND status IN (-3, -1)`,
          ).run(now, log, derivation, worker).changes,
        ) > 0
      );
    },

    completeBuild(
      derivation: string,
      status: BuildStatus,
      options: { worker?: string; now: number },
    ) {
      return settle((): CompleteResult => {
        if (!FINAL_STATUSES.has(status)) {
          throw new RangeError(
            `Cannot complete build ${
              JSON.stringify(truncate(derivation))
            }: status ${JSON.stringify(status)} is not a final status`,
          );
        }
        return transaction(() => {
          const row = stmt(
            `SELECT id, specification, job_name, evaluation, status, worker
             FROM Builds WHERE derivation = ?`,
          ).get(derivation) as Row | undefined;
          const unchanged = { changed: false, dependentsFailed: 0 };
          if (row === undefined || Number(row.status) >= 0) return unchanged;
          if (
            options.worker !== undefined &&
            (row.worker !== options.worker || Number(row.status) === -2)
          ) {
            return unchanged;
          }

          const previous = stmt(
            `SELECT status FROM Builds
             WHERE specification = ? AND job_name = ? AND evaluation < ?
               AND status >= 0
             ORDER BY evaluation DESC, id DESC LIMIT 1`,
          ).get(row.specification, row.job_name, row.evaluation) as
            | Row
            | undefined;
          const lastStatus = previous === undefined
            ? null
            : Number(previous.status);
          stmt(
            `UPDATE Builds SET status = ?, stoptime = ?, last_status = ?,
               weather = ? WHERE id = ?`,
          ).run(
            status,
            options.now,
            lastStatus,
            weatherOf(status, lastStatus),
            Number(row.id),
          );

          let dependentsFailed = 0;
          if (status !== BuildStatus.succeeded) {
            dependentsFailed = Number(
              stmt(FAIL_DEPENDENTS_SQL).run({
                id: Number(row.id),
                now: options.now,
              }).changes,
            );
          }
          return { changed: true, dependentsFailed };
        });
      });
    },

    requeueBuild(derivation: string, _now: number) {
      return settle(() =>
        Number(
          stmt(
            `UPDATE Builds SET status = -2, worker = NULL, starttime = 0
             WHERE derivation = ? AND status IN (-3, -1)`,
          ).run(derivation).changes,
        ) > 0
      );
    },

    requeueWorkerBuilds(worker: string, _now: number) {
      return settle(() => transaction(() => requeueWorker(worker)));
    },

    upsertWorker(worker: Worker) {
      return settle(() => {
        checkName("save worker", worker.name);
        stmt(
          `INSERT INTO Workers (name, address, machine, systems, last_seen)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (name) DO UPDATE SET address = excluded.address,
             machine = excluded.machine, systems = excluded.systems,
             last_seen = excluded.last_seen`,
        ).run(
          worker.name,
          worker.address,
          worker.machine,
          JSON.stringify(worker.systems),
          worker.lastSeen,
        );
      });
    },

    touchWorker(name: string, now: number) {
      return settle(() =>
        Number(
          stmt("UPDATE Workers SET last_seen = ? WHERE name = ?").run(now, name)
            .changes,
        ) > 0
      );
    },

    getWorker(name: string) {
      return settle(() => {
        const row = stmt("SELECT * FROM Workers WHERE name = ?").get(name) as
          | Row
          | undefined;
        return row === undefined ? null : rowToWorker(row);
      });
    },

    listWorkers() {
      return settle(() =>
        (stmt("SELECT * FROM Workers ORDER BY name").all() as Row[]).map(
          rowToWorker,
        )
      );
    },

    removeWorker(name: string, _now: number) {
      return settle(() =>
        transaction(() => {
          requeueWorker(name);
          stmt("DELETE FROM Workers WHERE name = ?").run(name);
        })
      );
    },

    expireWorkers(cutoff: number, _now: number) {
      return settle(() =>
        transaction(() => {
          const names = (stmt(
            "SELECT name FROM Workers WHERE last_seen < ? ORDER BY name",
          ).all(cutoff) as Row[]).map((row) => String(row.name));
          for (const name of names) {
            requeueWorker(name);
            stmt("DELETE FROM Workers WHERE name = ?").run(name);
          }
          return names;
        })
      );
    },

    close() {
      return settle(() => {
        statements.clear();
        if (db.isOpen) db.close();
      });
    },
  };
}

/** Runs synchronous work as a Promise, turning a throw into a rejection. */
function settle<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
}

/** SQL conditions (each starting with " AND") and their parameters. */
function filterClauses(
  filter: BuildFilter,
): { clauses: string; params: SQLInputValue[] } {
  let clauses = "";
  const params: SQLInputValue[] = [];
  if (filter.specification !== undefined) {
    clauses += " AND b.specification = ?";
    params.push(filter.specification);
  }
  if (filter.job !== undefined) {
    clauses += " AND b.job_name = ?";
    params.push(filter.job);
  }
  if (filter.system !== undefined) {
    clauses += " AND b.system = ?";
    params.push(filter.system);
  }
  if (filter.evaluation !== undefined) {
    // The evaluation's jobs, including builds an older evaluation created.
    clauses += " AND b.id IN (SELECT build FROM Jobs WHERE evaluation = ?)";
    params.push(filter.evaluation);
  }
  if (filter.worker !== undefined) {
    clauses += " AND b.worker = ?";
    params.push(filter.worker);
  }
  return { clauses, params };
}

/** Whether dispatch candidate `a` goes before `b` (priority, age, id). */
function isBefore(a: Row, b: Row | undefined): boolean {
  if (b === undefined) return true;
  for (const key of ["priority", "timestamp", "id"]) {
    const delta = Number(a[key]) - Number(b[key]);
    if (delta !== 0) return delta < 0;
  }
  return false;
}

/** The weather of a new final status given the job's previous one. */
function weatherOf(status: number, last: number | null): Weather {
  if (status < 0 || last === null) return Weather.unknown;
  if (status === 0) {
    return last === 0 ? Weather.stillSucceeding : Weather.newSuccess;
  }
  return last === 0 ? Weather.newFailure : Weather.stillFailing;
}

function checkName(action: string, name: string): void {
  if (typeof name !== "string" || name.length === 0) {
    throw new TypeError(
      `Cannot ${action}: name ${JSON.stringify(name)} is empty`,
    );
  }
}

function checkJob(job: NewJob): void {
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
}

function integer(action: string, field: string, value: number): number {
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(
      `Cannot ${action}: ${field} ${JSON.stringify(value)} is not an integer`,
    );
  }
  return value;
}

function checkLimit(action: string, limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(
      `Cannot ${action}: limit ${
        JSON.stringify(limit)
      } is not a non-negative integer`,
    );
  }
  return limit;
}

function truncate(text: string, max = 200): string {
  return text.length > max ? text.slice(0, max) + "…" : text;
}

function rowToSpecification(row: Row): Specification {
  return {
    name: String(row.name),
    build: JSON.parse(String(row.build)),
    channels: JSON.parse(String(row.channels)),
    buildOutputs: JSON.parse(String(row.build_outputs)),
    notifications: JSON.parse(String(row.notifications)),
    period: Number(row.period),
    priority: Number(row.priority),
    systems: JSON.parse(String(row.systems)),
    isActive: Number(row.is_active) !== 0,
  };
}

function rowToEvaluation(row: Row): Evaluation {
  return {
    id: Number(row.id),
    specification: String(row.specification),
    status: Number(row.status) as EvaluationStatus,
    timestamp: Number(row.timestamp),
    checkouttime: Number(row.checkouttime),
    evaltime: Number(row.evaltime),
  };
}

function rowToBuild(row: Row): Build {
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
    lastStatus: row.last_status === null ? null : Number(row.last_status),
    weather: Number(row.weather) as Weather,
    priority: Number(row.priority),
    maxSilent: Number(row.max_silent),
    timeout: Number(row.timeout),
    timestamp: Number(row.timestamp),
    starttime: Number(row.starttime),
    stoptime: Number(row.stoptime),
    outputs: JSON.parse(String(row.outputs ?? "[]")),
  };
}

function rowToWorker(row: Row): Worker {
  return {
    name: String(row.name),
    address: String(row.address),
    machine: String(row.machine),
    systems: JSON.parse(String(row.systems)),
    lastSeen: Number(row.last_seen),
  };
}
