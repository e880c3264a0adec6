// The PostgreSQL schema: the same tables as sqlite_schema.ts, in
// PostgreSQL's types.
//
// Differences from the SQLite schema: ids are SERIAL, times BIGINT;
// Outputs has an id so that a build's outputs keep their order; names that
// lists are sorted by use the "C" collation, so that both backends sort
// alike whatever the cluster's locale.

/** The version the schema below creates; SchemaVersion holds it. */
export const POSTGRES_SCHEMA_VERSION = 13;

// The bookkeeping of a success for its build's direct dependents (each
// waits for one input less; true when one of them became dispatchable),
// which the one-statement success (sql_builds.ts) calls once it holds the
// build. VOLATILE, so that the UPDATE in it reads with a snapshot taken
// when it runs, not with the calling statement's: that one predates the
// wait for the build's lock, and misses any dependent registered by a
// transaction that committed meanwhile (its count of inputs pending would
// never drop to 0). PL/pgSQL keeps the UPDATE's plan across calls, where
// a SQL function is planned again at each.
const INPUT_SUCCEEDED_SQL = `
CREATE OR REPLACE FUNCTION input_succeeded(input INTEGER) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  woke BOOLEAN;
BEGIN
  WITH adjusted AS (
    UPDATE Builds b SET pending_deps = b.pending_deps - 1
    WHERE b.id IN (SELECT l.id FROM Builds l
                   WHERE l.id IN (SELECT d.source FROM BuildDependencies d
                                  WHERE d.target = input)
                   ORDER BY l.id FOR NO KEY UPDATE)
    RETURNING b.status, b.pending_deps)
  SELECT coalesce(bool_or(status = -2 AND pending_deps = 0), false)
    INTO woke FROM adjusted;
  RETURN woke;
END
$$;
`;

/** Creates every table and index of version {@link POSTGRES_SCHEMA_VERSION}. */
export const POSTGRES_SCHEMA_SQL = `
CREATE TABLE SchemaVersion (
  version INTEGER NOT NULL
);

CREATE TABLE Specifications (
  name          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
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
  id            SERIAL PRIMARY KEY,
  specification TEXT COLLATE "C" NOT NULL
                REFERENCES Specifications(name) ON DELETE CASCADE,
  status        INTEGER NOT NULL,
  timestamp     BIGINT NOT NULL,
  checkouttime  BIGINT NOT NULL,
  evaltime      BIGINT NOT NULL,
  -- Who runs a started evaluation, and when it last said so (seconds).
  owner_host    TEXT,
  owner_pid     INTEGER,
  owner_start   TEXT,
  heartbeat     BIGINT,
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
  channel       TEXT COLLATE "C" NOT NULL,
  specification TEXT COLLATE "C" NOT NULL,
  revision      TEXT NOT NULL,
  directory     TEXT NOT NULL,
  timestamp     BIGINT NOT NULL,
  position      INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (evaluation, channel)
);
CREATE INDEX Checkouts_specification_channel
  ON Checkouts(specification, channel, evaluation DESC);

CREATE TABLE Builds (
  id            SERIAL PRIMARY KEY,
  derivation    TEXT NOT NULL UNIQUE,
  evaluation    INTEGER NOT NULL
                REFERENCES Evaluations(id) ON DELETE CASCADE,
  specification TEXT COLLATE "C" NOT NULL,
  job_name      TEXT COLLATE "C" NOT NULL,
  system        TEXT COLLATE "C" NOT NULL,
  worker        TEXT,
  nix_name      TEXT NOT NULL,
  log           TEXT NOT NULL DEFAULT '',
  status        INTEGER NOT NULL,
  last_status   INTEGER,
  weather       INTEGER NOT NULL DEFAULT -1,
  priority      INTEGER NOT NULL DEFAULT 0,
  max_silent    INTEGER NOT NULL DEFAULT 0,
  timeout       INTEGER NOT NULL DEFAULT 0,
  timestamp     BIGINT NOT NULL,
  starttime     BIGINT NOT NULL DEFAULT 0,
  stoptime      BIGINT NOT NULL DEFAULT 0,
  pending_deps  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX Builds_ready
  ON Builds(system, priority, timestamp, id)
  WHERE status = -2 AND pending_deps = 0;
CREATE INDEX Builds_pending
  ON Builds(status DESC, priority, timestamp, id) WHERE status < 0;
CREATE INDEX Builds_finished
  ON Builds(evaluation DESC, id DESC) WHERE status >= 0;
CREATE INDEX Builds_finished_specification
  ON Builds(specification, evaluation DESC, id DESC) WHERE status >= 0;
-- /api/latestbuilds?system=S: a system's finished builds in that order
-- (a row version enters it only when its build finished).
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
CREATE INDEX Builds_specification_job
  ON Builds(specification, job_name, evaluation DESC);
CREATE INDEX Builds_job_name ON Builds(job_name);
-- A worker's builds in /api/latestbuilds's order (the newest 100 of a
-- worker are read, not all its builds sorted), and apart the builds it
-- holds now, keyed on the status so that the planner takes the small one.
CREATE INDEX Builds_worker ON Builds(worker, evaluation DESC, id DESC)
  WHERE worker IS NOT NULL;
CREATE INDEX Builds_held ON Builds(worker, status)
  WHERE status < 0 AND worker IS NOT NULL;

CREATE TABLE BuildDependencies (
  source INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  target INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  PRIMARY KEY (source, target)
);
CREATE INDEX BuildDependencies_target ON BuildDependencies(target, source);

CREATE TABLE Jobs (
  evaluation INTEGER NOT NULL REFERENCES Evaluations(id) ON DELETE CASCADE,
  name       TEXT COLLATE "C" NOT NULL,
  build      INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  system     TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (evaluation, name)
);
CREATE INDEX Jobs_build ON Jobs(build);
CREATE INDEX Jobs_name ON Jobs(name);

CREATE TABLE Outputs (
  id         SERIAL,
  path       TEXT NOT NULL PRIMARY KEY,
  derivation TEXT NOT NULL
             REFERENCES Builds(derivation) ON DELETE CASCADE,
  name       TEXT NOT NULL
);
CREATE INDEX Outputs_derivation ON Outputs(derivation, id);

CREATE TABLE BuildProducts (
  id        SERIAL PRIMARY KEY,
  build     INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  type      TEXT NOT NULL,
  file_size BIGINT NOT NULL,
  checksum  TEXT NOT NULL,
  path      TEXT NOT NULL,
  UNIQUE (build, path)
);

CREATE TABLE Notifications (
  id    SERIAL PRIMARY KEY,
  type  TEXT NOT NULL,
  build INTEGER NOT NULL REFERENCES Builds(id) ON DELETE CASCADE,
  -- When a sender took it (seconds), until it is sent; NULL while queued.
  claimed_at BIGINT
);
CREATE INDEX Notifications_build ON Notifications(build);

CREATE TABLE Metrics (
  field     TEXT NOT NULL,
  type      INTEGER NOT NULL,
  value     DOUBLE PRECISION NOT NULL,
  timestamp BIGINT NOT NULL,
  PRIMARY KEY (field, type)
);

CREATE TABLE Workers (
  name      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  address   TEXT NOT NULL,
  machine   TEXT NOT NULL,
  systems   TEXT NOT NULL,
  last_seen BIGINT NOT NULL,
  -- Seconds of silence after which the worker is gone: the worker timeout
  -- of the server that last heard it; NULL in rows from before it.
  timeout   BIGINT
);
CREATE INDEX Workers_last_seen ON Workers(last_seen);
-- The sweep's rows past their own deadline (sql_workers.ts expireWorkers).
CREATE INDEX Workers_deadline ON Workers((last_seen + timeout));

-- jobs_key is the SHA-256 of jobs (sorted names, each once), so that the
-- same names are saved once; NULL for dashboards saved before it. The
-- least recently used (last_used, seconds; 0 before it) go when the
-- table is full (sql_dashboards.ts).
CREATE TABLE Dashboards (
  id            TEXT NOT NULL PRIMARY KEY,
  specification TEXT COLLATE "C" NOT NULL
                REFERENCES Specifications(name) ON DELETE CASCADE,
  jobs          TEXT NOT NULL,
  jobs_key      TEXT,
  last_used     BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX Dashboards_jobs_key ON Dashboards(specification, jobs_key);
CREATE INDEX Dashboards_last_used ON Dashboards(last_used, id);

-- When the dispatcher last stopped cleanly: worker silence is counted only
-- while a dispatcher listens (see sql_workers.ts resumeWorkerClock).
CREATE TABLE DispatcherStops (
  stopped_at BIGINT NOT NULL
);

-- Output fetches owed: successes reported, their outputs not fetched yet;
-- resumed at the next start (see sql_fetches.ts).
CREATE TABLE InterruptedFetches (
  derivation TEXT COLLATE "C" NOT NULL,
  worker     TEXT COLLATE "C" NOT NULL,
  url        TEXT NOT NULL,
  PRIMARY KEY (derivation, worker)
);
${INPUT_SUCCEEDED_SQL}`;

/** Upgrades: `POSTGRES_MIGRATIONS[n]` turns a version n-1 database into version n. */
export const POSTGRES_MIGRATIONS: Readonly<Record<number, string>> = {
  2: `-- When the dispatcher last stopped cleanly: worker silence is counted only
-- while a dispatcher listens (see sql_workers.ts resumeWorkerClock).
CREATE TABLE DispatcherStops (
  stopped_at BIGINT NOT NULL
);
`,
  // No query looks builds up by nix_name (search filters a window of
  // recent builds); on PostgreSQL every status change also inserted an
  // entry in it.
  3: `DROP INDEX IF EXISTS Builds_nix_name;
`,
  4: `-- Output fetches a clean stop interrupted, taken back at the next start
-- (see sql_fetches.ts).
CREATE TABLE InterruptedFetches (
  derivation TEXT COLLATE "C" NOT NULL,
  worker     TEXT COLLATE "C" NOT NULL,
  url        TEXT NOT NULL,
  PRIMARY KEY (derivation, worker)
);
`,
  5: `-- /events/rss: the builds that changed their job's result (new success 0,
-- new failure 1), newest first. Few builds: a scan of Builds_finished for
-- them read every finished build when there were fewer than 100.
CREATE INDEX Builds_weather_changes
  ON Builds(evaluation DESC, id DESC) WHERE weather IN (0, 1);
CREATE INDEX Builds_weather_changes_specification
  ON Builds(specification, evaluation DESC, id DESC) WHERE weather IN (0, 1);
`,
  // /api/latestbuilds?worker=W sorted every build of W. Every status
  // change is a new row version that enters each index anyway (no index-
  // free update here), so the held builds' own index costs an entry only
  // while a build is handed out or started.
  6: `DROP INDEX Builds_worker;
CREATE INDEX Builds_worker ON Builds(worker, evaluation DESC, id DESC)
  WHERE worker IS NOT NULL;
CREATE INDEX Builds_held ON Builds(worker, status)
  WHERE status < 0 AND worker IS NOT NULL;
`,
  // Notifications were deleted as a sender took them: a crash lost the
  // ones under way. They are now claimed, and deleted once sent.
  7: `ALTER TABLE Notifications ADD COLUMN claimed_at BIGINT;
`,
  // /api/dashboard/register saved a new row for every call: anyone could
  // fill the database. The same names are now saved once, and the table
  // is bounded, dropping the least recently used.
  8: `ALTER TABLE Dashboards ADD COLUMN jobs_key TEXT;
ALTER TABLE Dashboards ADD COLUMN last_used BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX Dashboards_jobs_key ON Dashboards(specification, jobs_key);
CREATE INDEX Dashboards_last_used ON Dashboards(last_used, id);
`,
  // /api/latestbuilds?system=S read every finished build when S had few.
  9: `CREATE INDEX Builds_finished_system
  ON Builds(system, evaluation DESC, id DESC) WHERE status >= 0;
`,
  // A server starting up aborted the evaluations other live servers
  // sharing the database ran, when their state directories differed: who
  // runs an evaluation, and since when it is silent, is now in its row.
  10: `ALTER TABLE Evaluations ADD COLUMN owner_host TEXT;
ALTER TABLE Evaluations ADD COLUMN owner_pid INTEGER;
ALTER TABLE Evaluations ADD COLUMN owner_start TEXT;
ALTER TABLE Evaluations ADD COLUMN heartbeat BIGINT;
CREATE INDEX Evaluations_started ON Evaluations(id) WHERE status = -1;
`,
  // Canceling an evaluation still registering its builds (in chunks) left
  // the chunks after the cancel to be registered and built; a canceled
  // evaluation now ends, and is not taken for an interrupted one.
  11: `ALTER TABLE Evaluations ADD COLUMN canceled INTEGER NOT NULL DEFAULT 0;
`,
  // Servers sharing the database expired each other's workers at the
  // shortest of their worker timeouts: each row now records the timeout
  // of the server that heard the worker. Rows from before keep none.
  12: `ALTER TABLE Workers ADD COLUMN timeout BIGINT;
CREATE INDEX Workers_deadline ON Workers((last_seen + timeout));
`,
  // A success that waited for its build's lock while a registration of a
  // dependent committed missed that dependent, which then waited for good.
  13: INPUT_SUCCEEDED_SQL,
};
