// `deno task bench`: the measures of issue 8 on SQLite and, when
// LORICA_BENCH_POSTGRES or LORICA_TEST_POSTGRES names a server, PostgreSQL.
// Prints a table; a full run also writes BENCHMARKS.md. `--quick` shrinks
// every size for a smoke run (and writes nothing).

import postgres from "postgres";
import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { makeJobs } from "./dag.ts";
import { registerInChunks } from "../lib/store/chunked_registration.ts";
import { benchSpecification } from "./bench_spec.ts";
import { apiLatencies } from "./api_bench.ts";
import { logThroughput } from "./log_bench.ts";
import { idleWorkerRss, RSS_SAMPLES } from "./worker_rss.ts";
import { serveDispatcher, simulateWorkers } from "./farm_sim.ts";
import { startDispatchProcess } from "./dispatch_process.ts";
import { cpuMs, fixed, markdownTable, percentile, rssMb } from "./stats.ts";
import { diskSyncLatency, SYNC_SAMPLES } from "./disk_sync.ts";
import { type MachinePace, machinePace } from "./cpu_reference.ts";
import type { ResultRow } from "./stats.ts";
import { type Build, BuildStatus, type Store } from "../lib/store/types.ts";

const quick = Deno.args.includes("--quick");
const postgresUrl = Deno.env.get("LORICA_BENCH_POSTGRES") ??
  Deno.env.get("LORICA_TEST_POSTGRES");

// Quick runs still queue enough builds that the DAG's ready frontier
// outlasts the ZMTP measure: with 10,000, the workers soon waited for
// dependencies and the dispatch figure (some 200/s) measured the graph.
const SIZES = quick
  ? {
    queued: 50_000,
    evaluation: 5_000,
    pops: 2_000,
    zmtpSeconds: 3,
    apiSamples: 50,
    endToEnd: 500,
    logMb: 1,
  }
  : {
    queued: 1_000_000,
    evaluation: 50_000,
    pops: 20_000,
    zmtpSeconds: 10,
    apiSamples: 200,
    endToEnd: 2_000,
    logMb: 10,
  };
const ZMTP_WORKERS = 100;
/**
 * The fixed request rate of the second paced measure: each of the 100
 * workers finishing a build every 100 ms, far more than a farm of real
 * builds asks for.
 */
const STEADY_RATE = 1_000;
const END_TO_END_WORKERS = 4;
const LOG_UPLOADS = 20;
const POSTGRES_POPPERS = 8;
const TARGET = {
  sqliteDispatch: 10_000,
  postgresDispatch: 5_000,
  requestWorkP99Ms: 5,
  apiP99Ms: 50,
  registrationS: 10,
  serverRssMb: 300,
  idleWorkerRssMb: 80,
};

const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}
function progress(text: string): void {
  Deno.stderr.writeSync(encoder.encode(`[bench] ${text}\n`));
}

const SPEC = benchSpecification();

interface Backend {
  name: "sqlite" | "postgres";
  /** A fresh empty store, and what the dispatch server process opens. */
  open(tag: string): Promise<{ store: Store; config: object }>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const dir = Deno.makeTempDirSync({ prefix: "lorica-bench-" });
  return {
    name: "sqlite",
    open(tag) {
      const database = `${dir}/${tag}.sqlite`;
      return Promise.resolve({
        store: openSqliteStore(database),
        config: { database },
      });
    },
    cleanup() {
      Deno.removeSync(dir, { recursive: true });
      return Promise.resolve();
    },
  };
}

function postgresBackend(url: string): Backend {
  const prefix = `lorica_bench_${Date.now().toString(36)}`;
  const schemas: string[] = [];
  return {
    name: "postgres",
    async open(tag) {
      const schema = `${prefix}_${tag}`;
      schemas.push(schema);
      return {
        store: await openPostgresStore(url, { schema }),
        config: { database: url, schema },
      };
    },
    async cleanup() {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        for (const schema of schemas) {
          await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        }
      } finally {
        await sql.end({ timeout: 1 });
      }
    },
  };
}

/** Registers evaluations of random DAGs until `total` builds exist. */
async function populate(store: Store, total: number, size: number) {
  await store.upsertSpecification(SPEC);
  const times: number[] = [];
  for (let salt = 1; (salt - 1) * size < total; salt++) {
    const jobs = makeJobs(Math.min(size, total - (salt - 1) * size), { salt });
    const evaluation = await store.addEvaluation("bench", [], salt);
    const start = performance.now();
    await store.registerBuilds(evaluation, jobs, { priority: 9, now: salt });
    times.push(performance.now() - start);
    if (salt % 5 === 0) {
      progress(`registered ${salt * size} builds (${fixed(times.at(-1)!)} ms)`);
    }
  }
  return times;
}

/**
 * Seconds to register one more evaluation of `size` jobs as the evaluation
 * runner does, in chunks with rests between them, as populate()'s
 * evaluation number `salt` would be.
 */
async function chunkedRegistration(store: Store, size: number, salt: number) {
  const jobs = makeJobs(size, { salt });
  const evaluation = await store.addEvaluation("bench", [], salt);
  const start = performance.now();
  await registerInChunks(store, evaluation, jobs, {
    priority: 9,
    now: () => salt,
  });
  return (performance.now() - start) / 1000;
}

/** Pops `count` builds with `callers` concurrent callers; builds/s. */
async function storeDispatch(store: Store, count: number, callers: number) {
  const popped: Build[] = [];
  const start = performance.now();
  await Promise.all(Array.from({ length: callers }, async (_, caller) => {
    while (popped.length < count) {
      const build = await store.popBuild(`store-${caller}`, [
        "x86_64-linux",
      ], 100);
      if (build === null) return;
      popped.push(build);
    }
  }));
  const popRate = popped.length / ((performance.now() - start) / 1000);
  const completeStart = performance.now();
  let next = 0;
  await Promise.all(Array.from({ length: callers }, async () => {
    while (next < popped.length) {
      const build = popped[next++];
      await store.completeBuild(build.derivation, next % 10 === 0 ? 1 : 0, {
        worker: build.worker!,
        now: 101,
      });
    }
  }));
  const completeRate = popped.length /
    ((performance.now() - completeStart) / 1000);
  return { popRate, completeRate, popped: popped.length };
}

/** Builds popped per store batch in the group-commit measure. */
const GROUP_SIZE = 100;

/**
 * Pops `count` builds for `size` requests per store batch, with one
 * `popBuilds` as the dispatcher serves a turn's requests; builds/s. They
 * are then completed (not timed), so that the next measures find their
 * dependents ready as before.
 */
async function groupedPops(store: Store, count: number, size: number) {
  const popped: Build[] = [];
  const requests = Array.from({ length: size }, (_, i) => ({
    worker: `grouped-${i}`,
    systems: ["x86_64-linux"],
  }));
  const start = performance.now();
  while (popped.length < count) {
    const got = await store.batch(async (tx) =>
      (await tx.popBuilds(requests, 100)).filter((build) => build !== null)
    );
    popped.push(...got);
    if (got.length < size) break;
  }
  const rate = popped.length / ((performance.now() - start) / 1000);
  for (const build of popped) {
    await store.completeBuild(build.derivation, BuildStatus.succeeded, {
      worker: build.worker!,
      now: 101,
    });
  }
  return rate;
}

/**
 * Runs the ZMTP dispatch benchmark against a server process: `seconds` of
 * workers asking as fast as they are served (the dispatch rate), then
 * `seconds` of the same workers asking at half that rate in all (the
 * request-work latency of a server that keeps up), then `seconds` at
 * {@link STEADY_RATE} in all.
 */
async function zmtpDispatch(config: object, seconds: number) {
  const server = await startDispatchProcess(config);
  const phases = async () => {
    const phase = (intervalMs?: number) =>
      simulateWorkers(server.port, ZMTP_WORKERS, {
        stop: AbortSignal.timeout(seconds * 1000),
        intervalMs,
      });
    const serverCpuBefore = Number((await server.command("cpu")).cpuMs);
    const workersCpuBefore = cpuMs();
    const saturated = await phase();
    const workersCpu = cpuMs() - workersCpuBefore;
    const serverCpu = Number((await server.command("cpu")).cpuMs) -
      serverCpuBefore;
    const rate = saturated.builds / (saturated.elapsedMs / 1000);
    const pacedRate = rate / 2;
    const paced = await phase(ZMTP_WORKERS / pacedRate * 1000);
    const steady = await phase(ZMTP_WORKERS / STEADY_RATE * 1000);
    const perBuildUs = (ms: number) => ms * 1000 / saturated.builds;
    return {
      rate,
      serverCpuUs: perBuildUs(serverCpu),
      workersCpuUs: perBuildUs(workersCpu),
      p50: percentile(saturated.latencies, 50),
      p99: percentile(saturated.latencies, 99),
      pacedRate,
      pacedP50: percentile(paced.latencies, 50),
      pacedP99: percentile(paced.latencies, 99),
      steadyP50: percentile(steady.latencies, 50),
      steadyP99: percentile(steady.latencies, 99),
    };
  };
  let measured;
  try {
    measured = await phases();
  } catch (error) {
    await server.stop().catch(() => {});
    throw error;
  }
  return { ...measured, peakRssMb: await server.stop() };
}

/** Every build of a fresh evaluation through the dispatcher; builds/s. */
async function endToEnd(store: Store, builds: number) {
  await store.upsertSpecification(SPEC);
  const evaluation = await store.addEvaluation("bench", [], 1);
  await store.registerBuilds(
    evaluation,
    makeJobs(builds, { salt: 4242 }),
    { priority: 9, now: 1 },
  );
  const served = await serveDispatcher(store);
  try {
    const stop = new AbortController();
    const guard = setTimeout(() => stop.abort(), 300_000);
    const stats = await simulateWorkers(served.port, END_TO_END_WORKERS, {
      stop: stop.signal,
      total: builds,
      idleMs: 2,
    });
    clearTimeout(guard);
    return stats.builds / (stats.elapsedMs / 1000);
  } finally {
    await served.close();
  }
}

async function benchBackend(backend: Backend, rows: ResultRow[]) {
  const name = backend.name;
  const dispatchTarget = name === "sqlite"
    ? TARGET.sqliteDispatch
    : TARGET.postgresDispatch;
  const add = (
    measure: string,
    value: string,
    target = "",
    met: boolean | null = null,
  ) => {
    rows.push({ backend: name, measure, value, target, met });
    say(
      `${name.padEnd(9)} ${measure.padEnd(44)} ${value.padStart(12)}  ${
        target ? `target ${target}` : ""
      }`,
    );
  };

  progress(`${name}: registering ${SIZES.queued} builds`);
  const { store, config } = await backend.open("main");
  // The last evaluation is the runner's chunked registration, below.
  const registration = await populate(
    store,
    SIZES.queued - SIZES.evaluation,
    SIZES.evaluation,
  );
  const worst = Math.max(...registration) / 1000;
  const median = percentile(registration, 50) / 1000;
  add(
    `register a ${SIZES.evaluation}-job evaluation (median / worst of ${registration.length})`,
    `${fixed(median, 2)} / ${fixed(worst, 2)} s`,
    `<= ${TARGET.registrationS} s`,
    worst <= TARGET.registrationS,
  );
  // The evaluation runner's path: chunks of its own transactions, resting
  // between them so that dispatch goes on (chunked_registration.ts). Timed
  // on an idle server, where the rests are pure cost. Its builds complete
  // the queue.
  progress(`${name}: chunked registration`);
  const chunked = await chunkedRegistration(
    store,
    SIZES.evaluation,
    registration.length + 1,
  );
  add(
    `register a ${SIZES.evaluation}-job evaluation in the runner's chunks`,
    `${fixed(chunked, 2)} s`,
    `<= ${TARGET.registrationS} s`,
    chunked <= TARGET.registrationS,
  );

  progress(`${name}: store dispatch`);
  const callers = name === "sqlite" ? 1 : POSTGRES_POPPERS;
  const dispatch = await storeDispatch(store, SIZES.pops, callers);
  add(
    `store popBuild at ${SIZES.queued} queued (${callers} caller${
      callers > 1 ? "s" : ""
    }, a transaction each)`,
    `${fixed(dispatch.popRate)} /s`,
  );
  add(
    "store completeBuild",
    `${fixed(dispatch.completeRate)} /s`,
  );
  const grouped = await groupedPops(store, SIZES.pops, GROUP_SIZE);
  add(
    `store popBuilds, ${GROUP_SIZE} requests per batch (as the dispatcher)`,
    `${fixed(grouped)} /s`,
    `>= ${dispatchTarget} /s`,
    grouped >= dispatchTarget,
  );

  progress(`${name}: API`);
  const api = await apiLatencies(store, SIZES.queued, SIZES.apiSamples);
  for (const [route, { p50, p99, status }] of api) {
    add(
      `API ${route} p50 / p99${status === 200 ? "" : ` (HTTP ${status})`}`,
      `${fixed(p50, 1)} / ${fixed(p99, 1)} ms`,
      `p99 <= ${TARGET.apiP99Ms} ms`,
      status === 200 && p99 <= TARGET.apiP99Ms,
    );
  }
  await store.close();

  progress(`${name}: ZMTP dispatch, ${ZMTP_WORKERS} workers`);
  const zmtp = await zmtpDispatch(config, SIZES.zmtpSeconds);
  add(
    `ZMTP dispatch, ${ZMTP_WORKERS} workers`,
    `${fixed(zmtp.rate)} /s`,
    `>= ${dispatchTarget} /s`,
    zmtp.rate >= dispatchTarget,
  );
  // What bounds the rate on this machine: both processes share its cores.
  add(
    "ZMTP dispatch, CPU a build: server / simulated workers",
    `${fixed(zmtp.serverCpuUs)} / ${fixed(zmtp.workersCpuUs)} µs`,
  );
  // Saturated, a request waits behind every other worker's messages: by
  // Little's law its latency is about workers / rate, whatever the server
  // does per request. Shown, but the target is judged at a load served.
  add(
    "ZMTP request-work p50 / p99, saturated (closed loop)",
    `${fixed(zmtp.p50, 1)} / ${fixed(zmtp.p99, 1)} ms`,
  );
  add(
    `ZMTP request-work p50 / p99, paced at ${fixed(zmtp.pacedRate)} /s`,
    `${fixed(zmtp.pacedP50, 1)} / ${fixed(zmtp.pacedP99, 1)} ms`,
    `p99 <= ${TARGET.requestWorkP99Ms} ms`,
    zmtp.pacedP99 <= TARGET.requestWorkP99Ms,
  );
  add(
    `ZMTP request-work p50 / p99, paced at ${STEADY_RATE} /s`,
    `${fixed(zmtp.steadyP50, 1)} / ${fixed(zmtp.steadyP99, 1)} ms`,
    `p99 <= ${TARGET.requestWorkP99Ms} ms`,
    zmtp.steadyP99 <= TARGET.requestWorkP99Ms,
  );
  add(
    "server RSS (peak, dispatching)",
    `${fixed(zmtp.peakRssMb)} MB`,
    `<= ${TARGET.serverRssMb} MB`,
    zmtp.peakRssMb <= TARGET.serverRssMb,
  );

  progress(`${name}: end to end`);
  const fresh = await backend.open("e2e");
  try {
    const rate = await endToEnd(fresh.store, SIZES.endToEnd);
    add(
      `end to end: ${SIZES.endToEnd} builds, ${END_TO_END_WORKERS} workers`,
      `${fixed(rate)} /s`,
    );
  } finally {
    await fresh.store.close();
  }
}

function machineFacts(): string[] {
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  const memory = Number(/MemTotal:\s+(\d+)/.exec(meminfo)?.[1] ?? 0) / 1024 /
    1024;
  let cpu = "unknown";
  try {
    cpu = /model name\s*:\s*(.*)/.exec(
      Deno.readTextFileSync("/proc/cpuinfo"),
    )?.[1] ?? cpu;
  } catch {
    // Not Linux: the model stays unknown.
  }
  return [
    `- Date: ${new Date().toISOString()}`,
    `- Code: ${codeVersion()}`,
    `- CPU: ${cpu}, ${navigator.hardwareConcurrency} cores (nproc)`,
    `- Memory: ${memory.toFixed(1)} GiB`,
    `- OS: ${Deno.build.os} ${Deno.osRelease()}`,
    `- Deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
  ];
}

/** A machine pace for a line of text. */
function showPace(pace: MachinePace): string {
  return `a fixed JavaScript workload ${fixed(pace.computeMs)} ms, a read` +
    ` from memory ${fixed(pace.memoryNs)} ns`;
}

/**
 * The commit measured, and whether the tree had changes besides; "unknown"
 * outside a git checkout (a vendored copy).
 */
function codeVersion(): string {
  const git = (...args: string[]) => {
    const result = new Deno.Command("git", {
      args,
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!result.success) throw new Error(`git ${args.join(" ")} failed`);
    return new TextDecoder().decode(result.stdout).trim();
  };
  try {
    const commit = git("rev-parse", "--short=12", "HEAD");
    const changed = git("status", "--porcelain", "--untracked-files=no");
    return changed === "" ? `commit ${commit}` : `commit ${commit}, changed`;
  } catch {
    return "unknown (not a git checkout)";
  }
}

/** The PostgreSQL server's version and the settings that move its figures. */
async function postgresFacts(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const settings: string[] = [];
    for (
      const name of ["fsync", "synchronous_commit", "shared_buffers"]
    ) {
      const [row] = await sql.unsafe(`SHOW ${name}`);
      settings.push(`${name}=${row[name]}`);
    }
    const [{ server_version }] = await sql.unsafe("SHOW server_version");
    return `- PostgreSQL ${server_version} on the same machine (${
      settings.join(", ")
    })`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function main() {
  const rows: ResultRow[] = [];
  const backends: Backend[] = [sqliteBackend()];
  if (postgresUrl !== undefined) backends.push(postgresBackend(postgresUrl));
  else progress("PostgreSQL skipped: set LORICA_BENCH_POSTGRES to a URL");
  const facts = machineFacts();
  if (postgresUrl !== undefined) facts.push(await postgresFacts(postgresUrl));
  progress("disk flush latency");
  const sync = await diskSyncLatency();
  facts.push(
    `- Disk: an 8 KiB append and fdatasync p50 / p99 / worst ${
      fixed(sync.p50, 2)
    } / ${fixed(sync.p99, 2)} / ${fixed(sync.max)} ms (${SYNC_SAMPLES} in the` +
      " temporary directory; a PostgreSQL commit waits for one)",
  );
  say(
    `disk fdatasync p50 / p99 / worst: ${fixed(sync.p50, 2)} / ${
      fixed(sync.p99, 2)
    } / ${fixed(sync.max)} ms`,
  );
  progress("machine pace");
  const paceBefore = machinePace();
  say(`machine pace: ${showPace(paceBefore)}`);
  const started = performance.now();
  for (const backend of backends) {
    try {
      await benchBackend(backend, rows);
    } finally {
      await backend.cleanup();
    }
  }
  progress("log channel");
  const logs = await logThroughput(LOG_UPLOADS, SIZES.logMb);
  rows.push({
    backend: "-",
    measure: `log channel, ${LOG_UPLOADS} uploads of ${SIZES.logMb} MB`,
    value: `${fixed(logs.mbPerSecond, 1)} MB/s${
      logs.failed > 0 ? ` (${logs.failed} failed)` : ""
    }`,
    target: "",
    met: null,
  });
  say(
    `log channel, ${LOG_UPLOADS} uploads: ${fixed(logs.mbPerSecond, 1)} MB/s`,
  );
  progress("idle worker");
  const worker = await idleWorkerRss({
    timeoutMs: quick ? 60_000 : 180_000,
    // V8 gives memory back some seconds after the last allocation burst.
    settleMs: 15_000,
  });
  rows.push({
    backend: "-",
    measure: `idle worker RSS (15 s after the demo, median of ${RSS_SAMPLES}${
      worker.idle ? "" : ", builds still running"
    })`,
    value: `${fixed(worker.rssMb)} MB (${fixed(worker.rangeMb[0])}-${
      fixed(worker.rangeMb[1])
    })`,
    target: `<= ${TARGET.idleWorkerRssMb} MB`,
    met: worker.idle && worker.rssMb <= TARGET.idleWorkerRssMb,
  });
  say(
    `idle worker RSS: ${fixed(worker.rssMb)} MB (samples ${
      fixed(worker.rangeMb[0])
    }-${fixed(worker.rangeMb[1])})`,
  );
  const minutes = (performance.now() - started) / 60000;
  const paceAfter = machinePace();
  facts.push(
    `- Pace (bench/cpu_reference.ts): before the run ${
      showPace(paceBefore)
    }; after it ${showPace(paceAfter)}. This virtual machine's pace` +
      " drifts: two runs' figures compare only where their paces do",
  );
  say("");
  say(markdownTable(rows));
  say(`\nbench process peak-ish RSS now: ${fixed(rssMb())} MB`);
  say(`total time: ${minutes.toFixed(1)} min`);
  if (quick) {
    progress("quick run: BENCHMARKS.md left as it is");
    return;
  }
  const text = [
    "# Benchmarks",
    "",
    "Written by `deno task bench` (bench/main.ts); figures from one run.",
    "",
    "## Machine",
    "",
    ...facts,
    `- Run time: ${minutes.toFixed(1)} min`,
    "",
    "## Results",
    "",
    markdownTable(rows),
    "",
    "## What is measured",
    "",
    `- Queue: ${SIZES.queued} builds registered as evaluations of ${SIZES.evaluation}`,
    "  random DAG jobs (30% without inputs, others 1-4 inputs, mostly recent",
    "  jobs), through `registerBuilds`; the registration row gives the median",
    "  and the slowest of those evaluations (the target is on the slowest; on",
    "  PostgreSQL it varies with autovacuum and checkpoints running meanwhile).",
    "  The last evaluation of that size is registered as the evaluation",
    "  runner does it: in chunks of 1,000 jobs, each its own transaction, with",
    "  a rest as long as the chunk between two (dispatch goes on meanwhile).",
    `- Store dispatch: ${SIZES.pops} \`popBuild\` calls at that size (SQLite: one`,
    `  caller; PostgreSQL: ${POSTGRES_POPPERS} concurrent callers), then the same`,
    "  number of `completeBuild` (1 in 10 a failure); then one `popBuilds` of",
    `  ${GROUP_SIZE} requests per \`Store.batch\` (one commit each), as the`,
    "  dispatcher serves the work requests of one turn together.",
    "- API: `createWebApp`'s handler called directly (no socket), JSON",
    "  `/api/queue?nr=100`, `/api/latestbuilds?nr=100`, `/build/<random id>` and",
    "  `/events/rss` (the 100 newest builds that changed their job's result).",
    `- ZMTP dispatch: the real Dispatcher and ZMTP ROUTER in a server process of`,
    `  its own, ${ZMTP_WORKERS} simulated workers (DEALER sockets, real protocol:`,
    "  worker-ready, worker-request-work, build-started, build-succeeded) in",
    `  the bench process for ${SIZES.zmtpSeconds} s, each asking again as soon as`,
    "  it is done; outputs are not downloaded (a stand-in fetcher records the",
    "  success). Then as long again with each worker asking at a fixed interval",
    "  (random start), half the measured rate in all: the latency of a server",
    `  that keeps up; and as long again at ${STEADY_RATE} requests a second in all.`,
    "  A paced request's latency counts from when it was due when its worker",
    "  is behind schedule (the server's doing), else from when it was sent (a",
    "  timer firing late is the bench process's doing). Saturated, a",
    "  request waits behind the other workers' messages, so its latency is",
    "  about workers / rate (Little's law) and says little about the server's",
    "  work per request. RSS is the server process's peak over the three.",
    "  The CPU a build is the CPU time the server process (all its threads)",
    "  and the bench process (the simulated workers) used during the",
    "  saturated measure, over the builds dispatched: on this machine's",
    `  ${navigator.hardwareConcurrency} cores, which they share (with PostgreSQL's`,
    "  backends, when it is the store), no rate above cores x 1,000,000 / the",
    "  sum of the two µs is possible.",
    `- End to end: a fresh ${SIZES.endToEnd}-job DAG evaluation built by ${END_TO_END_WORKERS}`,
    "  simulated workers through an in-process dispatcher, dependencies first.",
    `- Logs: ${LOG_UPLOADS} concurrent uploads of ${SIZES.logMb} MB of build-log text`,
    "  into one receiver (lib/protocol/log_channel.ts), uncompressed MB/s.",
    "- Idle worker: the demo farm with one real `worker.ts` process (two",
    "  sessions) under a real server; once the queue is empty and 15 s more, the",
    `  worker process's VmRSS, the median of ${RSS_SAMPLES} samples a second apart`,
    "  (range in brackets; its `guix publish` is a separate process). The",
    "  worker's modules are transpiled first (`worker.ts --version`), as a",
    "  compiled binary or a restarted worker finds them: loading them for the",
    "  first time costs some 6 MB more.",
    "",
  ].join("\n");
  const file = new URL("../BENCHMARKS.md", import.meta.url);
  Deno.writeTextFileSync(file, text);
  // Written as the formatter would, so that `deno fmt --check` stays clean.
  new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", file.pathname],
    stdout: "null",
    stderr: "null",
  }).outputSync();
  progress("BENCHMARKS.md written");
}

await main();
