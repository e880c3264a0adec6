// The SQLite schema: Cuirass's tables (cuirass.md §6) adapted to SQLite.
//
// Differences from Cuirass, all deliberate:
// - Structured columns (specification fields, worker systems) hold JSON, not
//   Guile `write` text or comma-joined strings.
// - Builds.specification copies the creating evaluation's specification, so
//   filters and the weather lookup need no join.
// - Jobs is keyed by (evaluation, name), so two job names sharing one
//   derivation (case C18) both keep their row; Jobs.status is not cached (no
//   trigger): join Builds instead.
// - Checkouts is keyed by (evaluation, channel) and keeps every checkout the
//   caller records; Cuirass's (specification, revision) key is an index here.
// - Builds.pending_deps counts the build's dependencies that have not
//   succeeded; the dispatch index holds only scheduled builds with none, so
//   taking the next build reads one index entry per system (issue 8).
// - Every index of Builds that holds the status costs a page write on each
//   status change, so there are only those that queries need.
// - Evaluations records who runs a started evaluation (owner_host,
//   owner_pid, owner_start) and when it last said it still does
//   (heartbeat, seconds): servers sharing the database decide from these
//   which started evaluations a dead server left (evaluation_owner.ts).
//   NULL for rows written before them. Records and the API never show them.
// - Evaluations.canceled marks an evaluation an administrator canceled: one
//   canceled while it ran ends aborted, and is not evaluated again as the
//   interrupted ones are.
// - Workers.timeout is the worker timeout of the server that last heard
//   the worker (wrote its row): a row is gone once silent for its own
//   timeout, whichever server sweeps, so that servers sharing the database
//   with different timeouts do not expire each other's workers. NULL for
//   rows written before it: each sweeping server judges those by its own.
// - Partial indexes serve the dispatcher (dispatchable builds per system,
//   in dispatch order), the queue (pending builds) and the latest builds.

/** The version the schema below creates; SchemaVersion holds it. */
export const SCHEMA_VERSION = 14;

/** Creates every table and index of version {@link SCHEMA_VERSION}. */
export const SCHEMA_SQL = `
CREATE TABLE SchemaVersion (
  version INTEGER NOT NULL
);

CREATE TABLE Specifications (
  name          TEXT NOT NULL PRIMARY KEY,
  build         TEXT NOT NULL,
  channels      TEXT NOT NULL,
  build_outputs TEXT NOT NULL,
  notifications TEXT NOT NULL,
  period        INTEGER NOT NULL DEFAULT 0,
  priority      INTEGER NOT NULL DEFAULT 9,
  systems       TEXT NOT NULL,
  is_active     INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE Evaluations (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  specification TEXT NOT NULL
                REFERENCES Specifications(name) ON DELETE CASCADE,
  status        INTEGER NOT NULL,
  timestamp     INTEGER NOT NULL,
  checkouttime  INTEGER NOT NULL,
  evaltime      INTEGER NOT NULL,
  owner_host    TEXT,
  owner_pid     INTEGER,
  owner_start   TEXT,
  heartbeat     INTEGER,
  -- 1 once an administrator canceled it: not resumed as an interrupted one.
  canceled      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX Evaluations_specification_id
  ON Evaluations(specification, id DESC);
-- The started evaluations a server looks over when it starts.
CREATE INDEX Evaluations_started ON Evaluations(id) WHERE status = -1;

CREATE TABLE Checkouts (
  evaluation    INTEGER NOT NULL
                REFERENCES Evaluations(id) ON DELETE CASCADE,
  channel       TEXT NOT NULL,
  specification TEXT NOT NULL,
  revision      TEXT NOT NULL,
  directory     TEXT NOT NULL,
  timestamp     INTEGER NOT NULL,
  -- Order of the checkouts within their evaluation.
  position      INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (evaluation, channel)
);
CREATE INDEX Checkouts_specification_revision
  ON Checkouts(specification, revision);

CREATE TABLE Builds (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  derivation    TEXT NOT NULL UNIQUE,
  evaluation    INTEGER NOT NULL
                REFERENCES Evaluations(id) ON DELETE CASCADE,
  specification TEXT NOT NULL,
  job_name      TEXT NOT NULL,
  system        TEXT NOT NULL,
  worker        TEXT,
  nix_name      TEXT NOT NULL,
  log           TEXT NOT NULL DEFAULT '',
  status        INTEGER NOT NULL,
  last_status   INTEGER,
  weather       INTEGER NOT NULL DEFAULT -1,
  priority      INTEGER NOT NULL DEFAULT 0,
  max_silent    INTEGER NOT NULL DEFAULT 0,
  timeout       INTEGER NOT NULL DEFAULT 0,
  timestamp     INTEGER NOT NULL,
  starttime     INTEGER NOT NULL DEFAULT 0,
  stoptime      INTEGER NOT NULL DEFAULT 0,
  pending_deps  INTEGER NOT NULL DEFAULT 0
);
-- Dispatch: per system, dispatchable builds in the order they go out.
CREATE INDEX Builds_ready
  ON Builds(system, priority, timestamp, id)
  WHERE status = -2 AND pending_deps = 0;
-- /api/queue: pending builds, running ones first.
CREATE INDEX Builds_pending
  ON Builds(status DESC, priority, timestamp, id) WHERE status < 0;
-- /api/latestbuilds: finished builds, newest evaluation first.
CREATE INDEX Builds_finished
  ON Builds(evaluation DESC, id DESC) WHERE status >= 0;
CREATE INDEX Builds_finished_specification
  ON Builds(specification, evaluation DESC, id DESC) WHERE status >= 0;
-- /api/latestbuilds?system=S: a system's finished builds in that order.
-- Without it, a system with few builds had every finished build read.
-- An entry is written when a build finishes, none while it is dispatched.
CREATE INDEX Builds_finished_system
  ON Builds(system, evaluation DESC, id DESC) WHERE status >= 0;
-- /events/rss: the builds that changed their job's result (new success 0,
-- new failure 1), newest first. Few builds: a scan of Builds_finished for
-- them read every finished build when there were fewer than 100.
CREATE INDEX Builds_weather_changes
  ON Builds(evaluation DESC, id DESC) WHERE weather IN (0, 1);
CREATE INDEX Builds_weather_changes_specification
  ON Builds(specification, evaluation DESC, id DESC) WHERE weather IN (0, 1);
CREATE INDEX Builds_evaluation ON Builds(evaluation);
CREATE INDEX Builds_status_system ON Builds(status, system);
-- Weather (previous result of a job) and job history.
CREATE INDEX Builds_specification_job
  ON Builds(specification, job_name, evaluation DESC);
CREATE INDEX Builds_job_name ON Builds(job_name);
-- A worker's builds (the worker filter), and those it holds now. Apart,
-- because a status change rewrites the entries of every index holding the
-- status: Builds_worker gets one entry per build, when it is handed out,
-- and only the small Builds_held follows the build's start and end.
-- Builds_worker in /api/latestbuilds's order: the newest 100 of a worker
-- are read, not all its builds sorted. The status in Builds_held's key
-- (free: its entries follow every status change anyway) keeps the planner
-- on it, not on the larger Builds_worker, for a worker's held builds.
CREATE INDEX Builds_worker ON Builds(worker, evaluation DESC, id DESC)
  WHERE worker IS NOT NULL;
CREATE INDEX Builds_held ON Builds(worker, status)
  WHERE status < 0 AND worker IS NOT NULL;

-- "source depends on target".
CREATE TABLE BuildDependencies (
  source INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  target INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  PRIMARY KEY (source, target)
) WITHOUT ROWID;
CREATE INDEX BuildDependencies_target ON BuildDependencies(target, source);

CREATE TABLE Jobs (
  evaluation INTEGER NOT NULL REFERENCES Evaluations(id) ON DELETE CASCADE,
  name       TEXT NOT NULL,
  build      INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  system     TEXT NOT NULL,
  PRIMARY KEY (evaluation, name)
);
CREATE INDEX Jobs_build ON Jobs(build);
CREATE INDEX Jobs_name ON Jobs(name);

CREATE TABLE Outputs (
  path       TEXT NOT NULL PRIMARY KEY,
  derivation TEXT NOT NULL
             REFERENCES Builds(derivation) ON DELETE CASCADE,
  name       TEXT NOT NULL
);
CREATE INDEX Outputs_derivation ON Outputs(derivation);

CREATE TABLE BuildProducts (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  build     INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  type      TEXT NOT NULL,
  file_size INTEGER NOT NULL,
  checksum  TEXT NOT NULL,
  path      TEXT NOT NULL,
  UNIQUE (build, path)
);

CREATE TABLE Notifications (
  id    INTEGER PRIMARY KEY AUTOINCREMENT,
  type  TEXT NOT NULL,
  build INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  -- When a sender took it (seconds), until it is sent; NULL while queued.
  claimed_at INTEGER
);
CREATE INDEX Notifications_build ON Notifications(build);

CREATE TABLE Metrics (
  field     TEXT NOT NULL,
  type      INTEGER NOT NULL,
  value     REAL NOT NULL,
  timestamp INTEGER NOT NULL,
  PRIMARY KEY (field, type)
);

CREATE TABLE Workers (
  name      TEXT NOT NULL PRIMARY KEY,
  address   TEXT NOT NULL,
  machine   TEXT NOT NULL,
  systems   TEXT NOT NULL,
  last_seen INTEGER NOT NULL,
  -- Seconds of silence after which the worker is gone (see above).
  timeout   INTEGER
);
CREATE INDEX Workers_last_seen ON Workers(last_seen);
-- The sweep's rows past their own deadline; the sweep must write the
-- expression as here for SQLite to use it (sql_workers.ts expireWorkers).
CREATE INDEX Workers_deadline ON Workers(last_seen + timeout);

-- jobs_key is the SHA-256 of jobs (sorted names, each once), so that the
-- same names are saved once; NULL for dashboards saved before it. The
-- least recently used (last_used, seconds; 0 before it) go when the
-- table is full (sql_dashboards.ts).
CREATE TABLE Dashboards (
  id            TEXT NOT NULL PRIMARY KEY,
  specification TEXT NOT NULL
                REFERENCES Specifications(name) ON DELETE CASCADE,
  jobs          TEXT NOT NULL,
  jobs_key      TEXT,
  last_used     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX Dashboards_jobs_key ON Dashboards(specification, jobs_key);
CREATE INDEX Dashboards_last_used ON Dashboards(last_used, id);

-- When the dispatcher last stopped cleanly: worker silence is counted only
-- while a dispatcher listens (see sql_workers.ts resumeWorkerClock).
CREATE TABLE DispatcherStops (
  stopped_at INTEGER NOT NULL
);

-- Output fetches owed: successes reported, their outputs not fetched yet;
-- resumed at the next start (see sql_fetches.ts).
CREATE TABLE InterruptedFetches (
  derivation TEXT NOT NULL,
  worker     TEXT NOT NULL,
  url        TEXT NOT NULL,
  PRIMARY KEY (derivation, worker)
);
`;

/** Upgrades: `MIGRATIONS[n]` turns a version n-1 database into version n. */
export const MIGRATIONS: Readonly<Record<number, string>> = {
  2: `
ALTER TABLE Builds ADD COLUMN pending_deps INTEGER NOT NULL DEFAULT 0;
UPDATE Builds SET pending_deps =
  (SELECT count(*) FROM BuildDependencies d JOIN Builds t ON t.id = d.target
   WHERE d.source = Builds.id AND t.status <> 0);
DROP INDEX Builds_dispatch;
CREATE INDEX Builds_ready
  ON Builds(system, priority, timestamp, id)
  WHERE status = -2 AND pending_deps = 0;
DROP INDEX Builds_status;
CREATE INDEX Builds_status_system ON Builds(status, system);
DROP INDEX Builds_evaluation_status;
CREATE INDEX Builds_evaluation ON Builds(evaluation);
DROP INDEX Builds_stoptime;
ALTER TABLE Checkouts ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
UPDATE Checkouts SET position = rowid;
`,
  3: `-- When the dispatcher last stopped cleanly: worker silence is counted only
-- while a dispatcher listens (see sql_workers.ts resumeWorkerClock).
CREATE TABLE DispatcherStops (
  stopped_at INTEGER NOT NULL
);
`,
  4: `DROP INDEX Builds_worker;
CREATE INDEX Builds_worker ON Builds(worker) WHERE worker IS NOT NULL;
CREATE INDEX Builds_held ON Builds(worker)
  WHERE status < 0 AND worker IS NOT NULL;
`,
  // No query looks builds up by nix_name (search filters a window of
  // recent builds): the index only cost every insert.
  5: `DROP INDEX IF EXISTS Builds_nix_name;
`,
  6: `-- Output fetches a clean stop interrupted, taken back at the next start
-- (see sql_fetches.ts).
CREATE TABLE InterruptedFetches (
  derivation TEXT NOT NULL,
  worker     TEXT NOT NULL,
  url        TEXT NOT NULL,
  PRIMARY KEY (derivation, worker)
);
`,
  7: `-- /events/rss: the builds that changed their job's result (new success 0,
-- new failure 1), newest first. Few builds: a scan of Builds_finished for
-- them read every finished build when there were fewer than 100.
CREATE INDEX Builds_weather_changes
  ON Builds(evaluation DESC, id DESC) WHERE weather IN (0, 1);
CREATE INDEX Builds_weather_changes_specification
  ON Builds(specification, evaluation DESC, id DESC) WHERE weather IN (0, 1);
`,
  // /api/latestbuilds?worker=W sorted every build of W (the worker filter
  // came with Cuirass's API): Builds_worker now holds them in its order,
  // and Builds_held keys on the status too so that held builds still use it.
  8: `DROP INDEX Builds_worker;
CREATE INDEX Builds_worker ON Builds(worker, evaluation DESC, id DESC)
  WHERE worker IS NOT NULL;
DROP INDEX Builds_held;
CREATE INDEX Builds_held ON Builds(worker, status)
  WHERE status < 0 AND worker IS NOT NULL;
`,
  // Notifications were deleted as a sender took them: a crash lost the
  // ones under way. They are now claimed, and deleted once sent.
  9: `ALTER TABLE Notifications ADD COLUMN claimed_at INTEGER;
`,
  // /api/dashboard/register saved a new row for every call: anyone could
  // fill the database. The same names are now saved once, and the table
  // is bounded, dropping the least recently used.
  10: `ALTER TABLE Dashboards ADD COLUMN jobs_key TEXT;
ALTER TABLE Dashboards ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX Dashboards_jobs_key ON Dashboards(specification, jobs_key);
CREATE INDEX Dashboards_last_used ON Dashboards(last_used, id);
`,
  // /api/latestbuilds?system=S read every finished build when S had few.
  11: `CREATE INDEX Builds_finished_system
  ON Builds(system, evaluation DESC, id DESC) WHERE status >= 0;
`,
  // A server starting up aborted the evaluations other live servers
  // sharing the database ran, when their state directories differed: who
  // runs an evaluation, and since when it is silent, is now in its row.
  12: `ALTER TABLE Evaluations ADD COLUMN owner_host TEXT;
ALTER TABLE Evaluations ADD COLUMN owner_pid INTEGER;
ALTER TABLE Evaluations ADD COLUMN owner_start TEXT;
ALTER TABLE Evaluations ADD COLUMN heartbeat INTEGER;
CREATE INDEX Evaluations_started ON Evaluations(id) WHERE status = -1;
`,
  // Canceling an evaluation still registering its builds (in chunks) left
  // the chunks after the cancel to be registered and built; a canceled
  // evaluation now ends, and is not taken for an interrupted one.
  13: `ALTER TABLE Evaluations ADD COLUMN canceled INTEGER NOT NULL DEFAULT 0;
`,
  // Servers sharing the database expired each other's workers at the
  // shortest of their worker timeouts: each row now records the timeout
  // of the server that heard the worker. Rows from before keep none.
  14: `ALTER TABLE Workers ADD COLUMN timeout INTEGER;
CREATE INDEX Workers_deadline ON Workers(last_seen + timeout);
`,
};
