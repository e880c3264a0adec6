// Latency of the API's build filters on rare and absent values, at a
// million builds: `deno run -A bench/filter_bench.ts build|measure DB`.
//
// `build` makes the database with the bench's generator (bench/dag.ts,
// registered through the store as `deno task bench` does), then gives it
// the shape of a farm that has run for a while, which registration alone
// cannot: the builds of all evaluations but the last two finished (one in
// ten failed) by eight workers, through one UPDATE, not a million
// completions. A second specification adds the rare values: six jobs on
// powerpc64le-linux, three of them finished by worker "rare-worker".
// `measure` opens the database (upgrading its schema) and times each
// route through the web app's handler. DB is a SQLite file, or a
// PostgreSQL URL whose schema "lorica_filters" holds the database.

import postgres from "postgres";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { makeJobs } from "./dag.ts";
import { benchSpecification } from "./bench_spec.ts";
import { fixed, percentile } from "./stats.ts";
import { withWebApp } from "./api_bench.ts";
import type { Store } from "../lib/store/types.ts";

const SCHEMA = "lorica_filters";
const EVALUATIONS = 20;
const JOBS_PER_EVALUATION = 50_000;
const RARE_SYSTEM = "powerpc64le-linux";
const SAMPLES = 20;

const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}
function progress(text: string): void {
  Deno.stderr.writeSync(encoder.encode(`[filters] ${text}\n`));
}

const [command, database, sizeText] = Deno.args;
const quick = sizeText === "--quick";
const evaluations = quick ? 4 : EVALUATIONS;
const isPostgres = /^postgres(ql)?:/.test(database ?? "");

function open(): Promise<Store> {
  return isPostgres
    ? openPostgresStore(database, { schema: SCHEMA })
    : Promise.resolve(openSqliteStore(database));
}

// Run once the builds exist: the farm's history, in plain SQL.
const FINISH_SQL = [
  `UPDATE Builds SET status = CASE WHEN id % 10 = 0 THEN 1 ELSE 0 END,
     worker = 'worker-' || CAST(id % 8 AS text), starttime = evaluation,
     stoptime = evaluation + 1, pending_deps = 0
   WHERE evaluation <= ${evaluations - 2}`,
  `UPDATE Builds SET pending_deps = 0 WHERE specification = 'rare'`,
  `UPDATE Builds SET status = 0, worker = 'rare-worker'
   WHERE specification = 'rare' AND job_name IN
     ('rare-0.${RARE_SYSTEM}', 'rare-1.${RARE_SYSTEM}', 'rare-2.${RARE_SYSTEM}')`,
  `UPDATE Builds SET status = -3, worker = 'rare-worker'
   WHERE specification = 'rare' AND job_name = 'rare-3.${RARE_SYSTEM}'`,
];

async function build(): Promise<void> {
  const store = await open();
  try {
    await store.upsertSpecification(benchSpecification());
    for (let salt = 1; salt <= evaluations; salt++) {
      const evaluation = await store.addEvaluation("bench", [], salt);
      await store.registerBuilds(
        evaluation,
        makeJobs(JOBS_PER_EVALUATION, { salt }),
        { priority: 9, now: salt },
      );
      progress(`evaluation ${evaluation} registered`);
    }
    await store.upsertSpecification(benchSpecification("rare", [RARE_SYSTEM]));
    const rare = await store.addEvaluation("rare", [], evaluations + 1);
    const jobs = makeJobs(6, { salt: 9001, systems: [RARE_SYSTEM] })
      .map((job, i) => ({ ...job, name: `rare-${i}.${RARE_SYSTEM}` }));
    await store.registerBuilds(rare, jobs, {
      priority: 9,
      now: evaluations + 1,
    });
  } finally {
    await store.close();
  }
  if (isPostgres) {
    const sql = postgres(database, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(`SET search_path TO ${SCHEMA}`);
      for (const statement of FINISH_SQL) await sql.unsafe(statement);
      await sql.unsafe("VACUUM ANALYZE Builds");
    } finally {
      await sql.end({ timeout: 1 });
    }
  } else {
    const db = new DatabaseSync(database);
    try {
      for (const statement of FINISH_SQL) db.exec(statement);
    } finally {
      db.close();
    }
  }
}

/** The routes measured: each filter and combination, rare and common. */
function routes(): string[] {
  const last = evaluations;
  const old = 3;
  const rare = evaluations + 1;
  const oldJob = `pkg-${old}-17.x86_64-linux`;
  const pendingJob = `pkg-${last}-17.x86_64-linux`;
  const filters = [
    "",
    `system=${RARE_SYSTEM}`,
    "system=x86_64-linux",
    "system=i686-linux",
    "jobset=rare",
    "jobset=bench",
    "jobset=none",
    `job=${oldJob}`,
    `job=${pendingJob}`,
    "job=none",
    `evaluation=${rare}`,
    `evaluation=${old}`,
    `evaluation=${last}`,
    "worker=rare-worker",
    "worker=worker-3",
    "worker=none",
    "id=17",
    "oldevaluation=2",
    `jobset=rare&system=${RARE_SYSTEM}`,
    `jobset=bench&system=${RARE_SYSTEM}`,
    `jobset=bench&job=${oldJob}`,
    `jobset=rare&job=${oldJob}`,
    `jobset=bench&worker=rare-worker`,
    `jobset=rare&worker=worker-3`,
    `system=x86_64-linux&worker=rare-worker`,
    `system=${RARE_SYSTEM}&worker=worker-3`,
    `evaluation=${old}&system=${RARE_SYSTEM}`,
    `evaluation=${last}&system=${RARE_SYSTEM}`,
    `evaluation=${old}&worker=rare-worker`,
    `evaluation=${rare}&worker=rare-worker`,
    `evaluation=${old}&jobset=rare`,
    `job=${oldJob}&system=${RARE_SYSTEM}`,
    `oldevaluation=${rare}&system=${RARE_SYSTEM}`,
  ];
  const list: string[] = [];
  for (const path of ["/api/latestbuilds", "/api/queue"]) {
    for (const filter of filters) {
      list.push(`${path}?nr=100${filter === "" ? "" : `&${filter}`}`);
    }
  }
  list.push(
    `/search?query=system:${RARE_SYSTEM}`,
    "/search?query=spec:rare",
    `/search?query=spec:bench+system:${RARE_SYSTEM}`,
    `/search?query=status:failed+system:${RARE_SYSTEM}`,
    `/search?query=status:pending+system:${RARE_SYSTEM}`,
    `/eval/${rare}/dashboard?system=${RARE_SYSTEM}`,
    `/eval/${old}/dashboard?system=${RARE_SYSTEM}`,
    `/eval/${old}/dashboard?system=x86_64-linux`,
    `/api/jobs?evaluation=${old}&system=${RARE_SYSTEM}`,
    `/api/queue/reasons?nr=100&system=${RARE_SYSTEM}`,
    `/eval/${rare}`,
    `/eval/${old}`,
    "/jobset/rare",
    `/machine/rare-worker`,
  );
  return list;
}

async function measure(): Promise<void> {
  const start = performance.now();
  const store = await open();
  progress(`opened in ${fixed(performance.now() - start)} ms`);
  const only = Deno.env.get("LORICA_FILTERS_ONLY");
  try {
    await withWebApp(store, (handle) => timeRoutes(handle, only));
  } finally {
    await store.close();
  }
}

async function timeRoutes(
  handle: (request: Request) => Promise<Response>,
  only: string | undefined,
): Promise<void> {
  for (const path of routes()) {
    if (only !== undefined && !path.includes(only)) continue;
    const times: number[] = [];
    let status = 0;
    let size = 0;
    for (let i = 0; i < SAMPLES + 1; i++) {
      const begin = performance.now();
      const response = await handle(
        new Request(`http://127.0.0.1${path}`, {
          headers: {
            accept: path.startsWith("/api/") ? "application/json" : "text/html",
          },
        }),
      );
      const body = await response.text();
      const elapsed = performance.now() - begin;
      status = response.status;
      size = body.startsWith("[") ? JSON.parse(body).length : body.length;
      if (i > 0) times.push(elapsed);
      // A route slower than a second is not sampled twenty times.
      if (elapsed > 1000 && i > 0) break;
    }
    say(
      `${fixed(percentile(times, 50), 1).padStart(9)} ms  ${
        String(status).padStart(3)
      } ${String(size).padStart(7)}  ${path}`,
    );
  }
}

if (command === "build") await build();
else if (command === "measure") await measure();
else {
  progress("usage: filter_bench.ts build|measure DATABASE [--quick]");
  Deno.exit(2);
}
