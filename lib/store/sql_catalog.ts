// Store procedures on specifications, evaluations, workers and listings.
//
// Choices every backend shares (the contract tests pin them): a filter on
// `evaluation` selects the evaluation's jobs, including builds an older
// evaluation created; latest builds come newest evaluation first, then
// newest id; countBuildsByStatus lists only statuses that occur.

import { StoreError } from "./types.ts";
import { all, chunks, get, run } from "./sql_query.ts";
import {
  BUILD_COLUMNS,
  checkLimit,
  checkName,
  integer,
  rowToBuild,
  rowToEvaluation,
  rowToSpecification,
} from "./rows.ts";
import type { Dialect, Row, Step } from "./sql_query.ts";
import type {
  Build,
  BuildFilter,
  BuildSearch,
  BuildStatus,
  Checkout,
  EvaluationOwner,
  EvaluationStatus,
  Specification,
  Weather,
} from "./types.ts";

/** Builds matching `where` (on `Builds b`), with their outputs. */
export function* selectBuilds(
  d: Dialect,
  where: string,
  params: unknown[],
  tail = "",
): Step<Build[]> {
  const rows = yield* all(
    `SELECT ${BUILD_COLUMNS}, ${d.outputsColumn} AS outputs,
       ${d.productsColumn} AS products
     FROM Builds b ${where} ${tail}`,
    params,
  );
  return rows.map(rowToBuild);
}

/** The build `id`, or null. */
export function* buildById(d: Dialect, id: number): Step<Build | null> {
  return (yield* selectBuilds(d, "WHERE b.id = ?", [id]))[0] ?? null;
}

/** Filters on a column that an index holds in latestBuilds's order. */
type OrderedFilter = "specification" | "system" | "worker";

/**
 * SQL conditions (each starting with " AND") and their parameters. The
 * conditions of the `unindexed` filters are written so that no index can
 * serve them: the planners then read the builds through another index.
 */
export function filterClauses(
  filter: BuildFilter,
  unindexed: ReadonlySet<OrderedFilter> = new Set(),
): { clauses: string; params: unknown[] } {
  let clauses = "";
  const params: unknown[] = [];
  // `|| ''` leaves the value (and NULL) as it is, but not the index.
  const equals = (key: OrderedFilter, column: string) =>
    unindexed.has(key) ? ` AND ${column} || '' = ?` : ` AND ${column} = ?`;
  if (filter.id !== undefined) {
    clauses += " AND b.id = ?";
    params.push(filter.id);
  }
  if (filter.specification !== undefined) {
    clauses += equals("specification", "b.specification");
    params.push(filter.specification);
  }
  if (filter.job !== undefined) {
    clauses += " AND b.job_name = ?";
    params.push(filter.job);
  }
  if (filter.system !== undefined) {
    clauses += equals("system", "b.system");
    params.push(filter.system);
  }
  if (filter.evaluation !== undefined) {
    // The evaluation's jobs, including builds an older evaluation created.
    clauses += " AND b.id IN (SELECT build FROM Jobs WHERE evaluation = ?)";
    params.push(filter.evaluation);
  }
  if (filter.beforeEvaluation !== undefined) {
    clauses += " AND b.evaluation < ?";
    params.push(filter.beforeEvaluation);
  }
  if (filter.worker !== undefined) {
    clauses += equals("worker", "b.worker");
    params.push(filter.worker);
  }
  if (filter.derivation !== undefined) {
    clauses += " AND b.derivation = ?";
    params.push(filter.derivation);
  }
  if (filter.weathers !== undefined) {
    clauses += ` AND b.weather IN (${weatherList(filter.weathers)})`;
  }
  return { clauses, params };
}

/**
 * `weathers` as SQL integer literals (the list is short and typed; a
 * parameter list would differ between SQLite and PostgreSQL).
 * @throws {RangeError} for a value that is not a weather code.
 */
function weatherList(weathers: readonly Weather[]): string {
  if (weathers.length === 0) return "NULL";
  for (const weather of weathers) {
    if (!Number.isInteger(weather) || weather < -1 || weather > 3) {
      throw new RangeError(
        `Cannot filter builds on weather ${JSON.stringify(weather)}`,
      );
    }
  }
  return weathers.join(", ");
}

export function* upsertSpecification(
  _d: Dialect,
  spec: Specification,
): Step<void> {
  checkName("save specification", spec.name);
  yield* run(
    `INSERT INTO Specifications (name, build, channels, build_outputs,
       notifications, period, priority, systems, is_active)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET build = excluded.build,
       channels = excluded.channels,
       build_outputs = excluded.build_outputs,
       notifications = excluded.notifications,
       period = excluded.period, priority = excluded.priority,
       systems = excluded.systems, is_active = excluded.is_active`,
    [
      spec.name,
      JSON.stringify(spec.build),
      JSON.stringify(spec.channels),
      JSON.stringify(spec.buildOutputs),
      JSON.stringify(spec.notifications),
      integer("save specification", "period", spec.period),
      integer("save specification", "priority", spec.priority),
      JSON.stringify(spec.systems),
      spec.isActive ? 1 : 0,
    ],
  );
}

export function* getSpecification(
  _d: Dialect,
  name: string,
): Step<Specification | null> {
  const row = yield* get("SELECT * FROM Specifications WHERE name = ?", [name]);
  return row === undefined ? null : rowToSpecification(row);
}

export function* listSpecifications(_d: Dialect): Step<Specification[]> {
  return (yield* all("SELECT * FROM Specifications ORDER BY name")).map(
    rowToSpecification,
  );
}

/**
 * Builds read and deleted by one statement of {@link deleteSpecification}:
 * each deletion cascades to dependencies, jobs, outputs and products, so
 * one statement over all of a large specification's builds (millions on a
 * main branch) outlasts PostgreSQL's query deadline, and on SQLite holds
 * the event loop for as long; reading all their ids first would hold tens
 * of megabytes.
 */
export const DELETE_CHUNK = 1000;

/**
 * Deletes a specification, keeping dependents' counts of pending inputs.
 * Its builds are read and deleted a chunk at a time, evaluation by
 * evaluation: a build's creating evaluation is indexed with its id, so
 * each chunk is one index range (a range on the specification alone would
 * sort all the builds left at every chunk).
 */
export function* deleteSpecification(
  d: Dialect,
  name: string,
): Step<boolean> {
  let affected = false;
  for (let evaluations = yield* evaluationsWithBuilds(name, 0);;) {
    for (const evaluation of evaluations) {
      affected = (yield* deleteEvaluationBuilds(d, evaluation, name)) ||
        affected;
    }
    if (evaluations.length < DELETE_CHUNK) break;
    evaluations = yield* evaluationsWithBuilds(name, evaluations.at(-1)!);
  }
  const deleted =
    (yield* run("DELETE FROM Specifications WHERE name = ?", [name])) > 0;
  if (affected && d.notifyQueue !== "") yield* all(d.notifyQueue);
  return deleted;
}

/** Up to DELETE_CHUNK ids of `name`'s evaluations after `after` that created builds. */
function* evaluationsWithBuilds(
  name: string,
  after: number,
): Step<number[]> {
  return (yield* all(
    `SELECT e.id FROM Evaluations e
     WHERE e.specification = ? AND e.id > ?
       AND EXISTS (SELECT 1 FROM Builds b WHERE b.evaluation = e.id)
     ORDER BY e.id LIMIT ${DELETE_CHUNK}`,
    [name, after],
  )).map((row) => Number(row.id));
}

/**
 * Deletes the builds `evaluation` created, DELETE_CHUNK at a time, and
 * recounts the pending inputs of builds of other specifications that
 * depended on them; true when there were such builds.
 */
function* deleteEvaluationBuilds(
  d: Dialect,
  evaluation: number,
  specification: string,
): Step<boolean> {
  let affected = false;
  for (let after = 0;;) {
    const part = (yield* all(
      `SELECT id FROM Builds WHERE evaluation = ? AND id > ?
       ORDER BY id LIMIT ${DELETE_CHUNK}`,
      [evaluation, after],
    )).map((row) => Number(row.id));
    if (part.length === 0) return affected;
    const list = JSON.stringify(part);
    // Builds of other specifications lose dependencies with the cascade.
    const dependents = (yield* all(
      `SELECT DISTINCT d.source FROM BuildDependencies d
       JOIN Builds s ON s.id = d.source
       WHERE d.target IN ${d.intList} AND s.specification <> ?`,
      [list, specification],
    )).map((row) => Number(row.source));
    if (d.name === "postgres") {
      // The rows deleted and those recounted locked together, in id order
      // (sql_build_locks.ts). FOR UPDATE, the lock a DELETE takes: after a
      // weaker one, the DELETE would have one more lock to wait for.
      yield* all(
        `SELECT id FROM Builds WHERE id IN ${d.intList}
         ORDER BY id FOR UPDATE`,
        [JSON.stringify([...part, ...dependents])],
      );
    }
    yield* run(`DELETE FROM Builds WHERE id IN ${d.intList}`, [list]);
    for (const dependent of chunks(dependents)) {
      affected = true;
      yield* run(
        `UPDATE Builds SET pending_deps = ${PENDING_COUNT_SQL}
         WHERE id IN ${d.intList}`,
        [JSON.stringify(dependent)],
      );
    }
    if (part.length < DELETE_CHUNK) return affected;
    after = part.at(-1)!;
  }
}

/** The number of dependencies of `Builds` that have not succeeded. */
export const PENDING_COUNT_SQL = `(SELECT count(*) FROM BuildDependencies pd
  JOIN Builds pt ON pt.id = pd.target
  WHERE pd.source = Builds.id AND pt.status <> 0)`;

export function* addEvaluation(
  _d: Dialect,
  specification: string,
  checkouts: Checkout[],
  now: number,
  owner: EvaluationOwner | null = null,
): Step<number> {
  const spec = yield* get(
    "SELECT 1 AS found FROM Specifications WHERE name = ?",
    [
      specification,
    ],
  );
  if (spec === undefined) {
    throw new StoreError(
      `Cannot add evaluation of specification ${
        JSON.stringify(specification)
      }: no such specification`,
      "not-found",
      specification,
    );
  }
  const row = (yield* get(
    `INSERT INTO Evaluations (specification, status, timestamp,
       checkouttime, evaltime, owner_host, owner_pid, owner_start, heartbeat)
     VALUES (?, -1, ?, ?, 0, ?, ?, ?, ?) RETURNING id`,
    [
      specification,
      now,
      now,
      owner?.host ?? null,
      owner?.pid ?? null,
      owner?.started ?? null,
      owner === null ? null : now,
    ],
  )) as Row;
  const id = Number(row.id);
  for (const [position, checkout] of checkouts.entries()) {
    yield* run(
      `INSERT INTO Checkouts (evaluation, channel, specification,
         revision, directory, timestamp, position)
       VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (evaluation, channel) DO UPDATE SET
         revision = excluded.revision, directory = excluded.directory`,
      [
        id,
        checkout.channel,
        specification,
        checkout.revision,
        checkout.directory,
        now,
        position,
      ],
    );
  }
  return id;
}

/**
 * Sets an evaluation's status; a finished one (status >= 0) records when
 * it finished. Parameters: status, status, now, id.
 */
export const SET_EVALUATION_STATUS_SQL =
  `UPDATE Evaluations SET status = CAST(? AS integer),
     evaltime = CASE WHEN ? >= 0 THEN CAST(? AS bigint) ELSE evaltime END
   WHERE id = ?`;

export function* setEvaluationStatus(
  _d: Dialect,
  id: number,
  status: EvaluationStatus,
  now: number,
): Step<void> {
  const changes = yield* run(SET_EVALUATION_STATUS_SQL, [
    status,
    status,
    now,
    id,
  ]);
  if (changes === 0) {
    throw new StoreError(
      `Cannot set status of evaluation ${id}: no such evaluation`,
      "not-found",
      id,
    );
  }
}

export function* getEvaluation(_d: Dialect, id: number) {
  const row = yield* get("SELECT * FROM Evaluations WHERE id = ?", [id]);
  return row === undefined ? null : rowToEvaluation(row);
}

function rowToCheckout(row: Row): Checkout {
  return {
    channel: String(row.channel),
    revision: String(row.revision),
    directory: String(row.directory),
  };
}

export function* getEvaluationCheckouts(
  _d: Dialect,
  id: number,
): Step<Checkout[]> {
  return (yield* all(
    `SELECT channel, revision, directory FROM Checkouts
     WHERE evaluation = ? ORDER BY position`,
    [id],
  )).map(rowToCheckout);
}

export function* latestCheckouts(
  _d: Dialect,
  specification: string,
): Step<Checkout[]> {
  return (yield* all(
    `SELECT c.channel, c.revision, c.directory FROM Checkouts c
     WHERE c.specification = ? AND c.evaluation =
       (SELECT max(n.evaluation) FROM Checkouts n
        WHERE n.specification = c.specification AND n.channel = c.channel)
     ORDER BY c.channel`,
    [specification],
  )).map(rowToCheckout);
}

export function* listEvaluations(
  _d: Dialect,
  options: { specification?: string; limit: number },
) {
  const limit = checkLimit("list evaluations", options.limit);
  const rows = options.specification === undefined
    ? yield* all("SELECT * FROM Evaluations ORDER BY id DESC LIMIT ?", [limit])
    : yield* all(
      `SELECT * FROM Evaluations WHERE specification = ?
       ORDER BY id DESC LIMIT ?`,
      [options.specification, limit],
    );
  return rows.map(rowToEvaluation);
}

export function* listJobs(
  d: Dialect,
  evaluation: number,
  options: { names?: string[]; system?: string } = {},
): Step<{ name: string; build: number; status: BuildStatus }[]> {
  let where = "j.evaluation = ?";
  const params: unknown[] = [evaluation];
  if (options.names !== undefined) {
    where += ` AND j.name IN ${d.textList}`;
    params.push(JSON.stringify(options.names));
  }
  if (options.system !== undefined) {
    where += " AND j.system = ?";
    params.push(options.system);
  }
  return (yield* all(
    `SELECT j.name, j.build, b.status FROM Jobs j
     JOIN Builds b ON b.id = j.build WHERE ${where} ORDER BY j.name`,
    params,
  )).map((row) => ({
    name: String(row.name),
    build: Number(row.build),
    status: Number(row.status) as BuildStatus,
  }));
}

/**
 * True when `filter` names a job or an evaluation: a bounded set of
 * builds (a job's, at most one an evaluation; an evaluation's jobs), which
 * a listing reads through its own index and sorts, rather than walking an
 * index in the listing's order until enough of them came by (every build
 * of the walk, when few or none match).
 */
function boundedByFilter(filter: BuildFilter): boolean {
  return filter.job !== undefined || filter.evaluation !== undefined;
}

/**
 * The most matching builds a probe of {@link walkedFilter} counts: the
 * index of a filter that matches fewer is walked, and then reads at most
 * that many entries.
 */
export const FILTER_PROBE_LIMIT = 2000;

/**
 * Of two or more filters whose indexes hold latestBuilds's order, the one
 * whose index to walk: the one matching fewest finished builds, counted
 * up to {@link FILTER_PROBE_LIMIT} (the first, in the order worker,
 * specification, system, when all match more). Needed on SQLite, which
 * plans without statistics and took any of them: a jobset's rare system
 * read every build of the jobset. PostgreSQL's statistics choose.
 */
function* walkedFilter(
  d: Dialect,
  filter: BuildFilter,
): Step<OrderedFilter | null> {
  const present = (["worker", "specification", "system"] as const)
    .filter((key) => filter[key] !== undefined);
  if (d.name !== "sqlite" || present.length < 2) return null;
  let best: { key: OrderedFilter; count: number } | null = null;
  for (const key of present) {
    const { clauses, params } = filterClauses({ [key]: filter[key] });
    const row = yield* get(
      `SELECT count(*) AS n FROM (SELECT 1 FROM Builds b
         WHERE b.status >= 0${clauses} LIMIT ${FILTER_PROBE_LIMIT})`,
      params,
    );
    const count = Number(row?.n ?? 0);
    if (best === null || count < best.count) best = { key, count };
  }
  return best?.key ?? null;
}

export function* latestBuilds(d: Dialect, filter: BuildFilter, limit: number) {
  const tail = `LIMIT ${checkLimit("list latest builds", limit)}`;
  // The limit inline: with a parameter, PostgreSQL's generic plan does
  // not know it is small and sorts every finished build.
  if (!boundedByFilter(filter)) {
    // The index of the filter's column in this order, if any (Builds_
    // finished_specification, _system, Builds_worker), walked until the
    // limit.
    const walked = yield* walkedFilter(d, filter);
    const others = (["specification", "system", "worker"] as const)
      .filter((key) => walked !== null && key !== walked);
    const { clauses, params } = filterClauses(filter, new Set(others));
    return yield* selectBuilds(
      d,
      `WHERE b.status >= 0${clauses}`,
      params,
      `ORDER BY b.evaluation DESC, b.id DESC ${tail}`,
    );
  }
  const { clauses, params } = filterClauses(filter);
  return yield* selectSorted(
    d,
    `b.status >= 0${clauses}`,
    params,
    "b.evaluation + 0 DESC, b.id + 0 DESC",
    tail,
  );
}

/**
 * The builds matching `where` (on `Builds b`) sorted on `order`, an order
 * of expressions that no index holds: the planners then read the builds
 * through the index of a condition and sort them. Ids first, columns of
 * the `tail`'s rows after: the outputs and products of every matching
 * build, computed before the sort, made an evaluation's 50,000 finished
 * builds take 350 ms instead of 20.
 */
function* selectSorted(
  d: Dialect,
  where: string,
  params: unknown[],
  order: string,
  tail: string,
): Step<Build[]> {
  return yield* selectBuilds(
    d,
    `WHERE b.id IN (SELECT b.id FROM Builds b WHERE ${where}
                    ORDER BY ${order} ${tail})`,
    params,
    `ORDER BY ${order}`,
  );
}

export function* queue(d: Dialect, filter: BuildFilter, limit: number) {
  // The pending builds in dispatch order (Builds_pending), filtered as they
  // come: at most the whole queue is read. An index of the specification
  // would have the planners read every build of it, finished ones too, and
  // sort those pending, so its condition is kept off the indexes. Bounded
  // filters are read through their own indexes and sorted, as in
  // latestBuilds.
  const { clauses, params } = filterClauses(
    filter,
    new Set(["specification"]),
  );
  const tail = `LIMIT ${checkLimit("list the queue", limit)}`;
  if (!boundedByFilter(filter)) {
    return yield* selectBuilds(
      d,
      `WHERE b.status < 0${clauses}`,
      params,
      `ORDER BY b.status DESC, b.priority, b.timestamp, b.id ${tail}`,
    );
  }
  return yield* selectSorted(
    d,
    `b.status < 0${clauses}`,
    params,
    "b.status + 0 DESC, b.priority + 0, b.timestamp + 0, b.id + 0",
    tail,
  );
}

export function* buildDependencies(_d: Dialect, id: number): Step<number[]> {
  return (yield* all(
    "SELECT target FROM BuildDependencies WHERE source = ? ORDER BY target",
    [id],
  )).map((row) => Number(row.target));
}

export function* pendingDependencies(_d: Dialect, id: number) {
  return (yield* all(
    `SELECT t.id, t.status, t.system FROM BuildDependencies d
     JOIN Builds t ON t.id = d.target
     WHERE d.source = ? AND t.status <> 0 ORDER BY t.id`,
    [id],
  )).map((row) => ({
    id: Number(row.id),
    status: Number(row.status) as BuildStatus,
    system: String(row.system),
  }));
}

export function* countBuildsByStatus(_d: Dialect, filter: BuildFilter = {}) {
  const { clauses, params } = filterClauses(filter);
  const rows = yield* all(
    `SELECT b.status, count(*) AS n FROM Builds b WHERE 1 = 1${clauses}
     GROUP BY b.status ORDER BY b.status`,
    params,
  );
  return new Map(
    rows.map((row) => [Number(row.status) as BuildStatus, Number(row.n)]),
  );
}

/**
 * Builds matching `search`, newest id first (see Store.searchBuilds). The
 * name matches in any case, its `%`, `_` and `\` as themselves.
 */
export function* searchBuilds(
  d: Dialect,
  search: BuildSearch,
  limit: number,
): Step<Build[]> {
  const tail = `ORDER BY b.id DESC LIMIT ${checkLimit("search builds", limit)}`;
  const clauses: string[] = [];
  const params: unknown[] = [];
  const where = (clause: string, ...values: unknown[]) => {
    clauses.push(clause);
    params.push(...values);
  };
  if (search.specification !== undefined) {
    where("b.specification = ?", search.specification);
  }
  if (search.system !== undefined) where("b.system = ?", search.system);
  if (search.status !== undefined) {
    if (search.status < 0) where("b.status < 0");
    else where("b.status = ?", search.status);
  }
  if (search.namePrefix !== "") {
    const pattern = search.namePrefix.toLowerCase().replace(/[%_\\]/g, "\\$&") +
      "%";
    where(
      "(lower(b.nix_name) LIKE ? ESCAPE '\\' OR lower(b.job_name) LIKE ? ESCAPE '\\')",
      pattern,
      pattern,
    );
  }
  if (search.beforeId !== undefined) where("b.id < ?", search.beforeId);
  const condition = clauses.length === 0
    ? ""
    : `WHERE ${clauses.join(" AND ")}`;
  return yield* selectBuilds(d, condition, params, tail);
}

export function* queueLengthBySystem(_d: Dialect) {
  const rows = yield* all(
    `SELECT system, count(*) AS n FROM Builds WHERE status = -2
     GROUP BY system ORDER BY system`,
  );
  return new Map(rows.map((row) => [String(row.system), Number(row.n)]));
}
