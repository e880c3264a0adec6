// `deno run --allow-all bench/registration_pause.ts`: how long workers'
// requests for work wait while a large evaluation registers (issue 8).
// A dispatch server process (dispatch_server.ts) over a SQLite database of
// --queued builds serves --workers simulated workers asking at --rate
// requests a second in all; after --settle seconds it makes the jobs of an
// evaluation, and --settle seconds later registers that
// evaluation of --jobs jobs, as the evaluation runner does (in chunks of
// --chunk jobs: 0 for one transaction, as before issue 8). Prints the
// request-work latencies of requests due before, during and after the
// registration. With LORICA_BENCH_POSTGRES, on PostgreSQL instead.

import { parseArgs } from "node:util";
import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { makeJobs } from "./dag.ts";
import { benchSpecification } from "./bench_spec.ts";
import { simulateWorkers } from "./farm_sim.ts";
import { startDispatchProcess } from "./dispatch_process.ts";
import { fixed, percentile } from "./stats.ts";
import type { Store } from "../lib/store/types.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    queued: { type: "string", default: "200000" },
    jobs: { type: "string", default: "50000" },
    workers: { type: "string", default: "100" },
    rate: { type: "string", default: "1000" },
    settle: { type: "string", default: "3" },
    chunk: { type: "string" },
    help: { type: "boolean", default: false },
  },
});
if (flags.help) {
  say(
    "registration_pause.ts [--queued N] [--jobs N] [--workers N] [--rate R] [--settle S] [--chunk N]",
  );
  Deno.exit(0);
}
const queued = Number(flags.queued);
const jobs = Number(flags.jobs);
const workers = Number(flags.workers);
const rate = Number(flags.rate);
const settleMs = Number(flags.settle) * 1000;
const postgresUrl = Deno.env.get("LORICA_BENCH_POSTGRES");

const dir = Deno.makeTempDirSync({ prefix: "lorica-pause-" });
const schema = `lorica_pause_${Date.now().toString(36)}`;
const config = postgresUrl === undefined
  ? { database: `${dir}/pause.sqlite` }
  : { database: postgresUrl, schema };
try {
  const store = postgresUrl === undefined
    ? openSqliteStore(config.database)
    : await openPostgresStore(postgresUrl, { schema });
  progress(`queueing ${queued} builds`);
  await populate(store, queued, 50_000);
  await store.close();

  const server = await startDispatchProcess(config);
  try {
    const stop = new AbortController();
    const asking = simulateWorkers(server.port, workers, {
      stop: stop.signal,
      intervalMs: workers / rate * 1000,
    });
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    const making = performance.now();
    await server.command(`jobs ${jobs} 1000`);
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    progress(`registering ${jobs} jobs`);
    const start = performance.now();
    const answer = await server.command(`register ${flags.chunk ?? ""}`);
    const end = performance.now();
    await new Promise((resolve) => setTimeout(resolve, settleMs));
    stop.abort();
    const stats = await asking;
    say(
      `registration: ${fixed(Number(answer.registeredMs))} ms in the server ` +
        `(${answer.created} builds), ${fixed(end - start)} ms seen here`,
    );
    say(
      `turns during it: ${answer.turns}, p99 ${
        fixed(Number(answer.turnP99Ms), 1)
      } ms, longest ${fixed(Number(answer.turnMaxMs), 1)} ms (waits included)`,
    );
    const windows: [string, (at: number) => boolean][] = [
      // Not while the server made the jobs: that holds its event loop,
      // as no registration does.
      ["before", (at) => at < making],
      ["during", (at) => at >= start && at < end],
      ["after", (at) => at >= end],
    ];
    for (const [name, within] of windows) {
      const latencies = stats.latencies.filter((_, i) =>
        within(stats.askedAt[i])
      );
      say(
        `${name.padEnd(6)} requests ${String(latencies.length).padStart(6)}` +
          `  p50 ${fixed(percentile(latencies, 50), 1)} ms` +
          `  p99 ${fixed(percentile(latencies, 99), 1)} ms` +
          `  max ${fixed(Math.max(...latencies), 1)} ms`,
      );
    }
  } finally {
    await server.stop();
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
  if (postgresUrl !== undefined) await dropSchema(postgresUrl, schema);
}

/** Registers evaluations of `size` random jobs until `total` builds exist. */
async function populate(store: Store, total: number, size: number) {
  await store.upsertSpecification(benchSpecification());
  for (let salt = 1; (salt - 1) * size < total; salt++) {
    const count = Math.min(size, total - (salt - 1) * size);
    const evaluation = await store.addEvaluation("bench", [], salt);
    await store.registerBuilds(evaluation, makeJobs(count, { salt }), {
      priority: 9,
      now: salt,
    });
  }
}

async function dropSchema(url: string, name: string): Promise<void> {
  const { default: postgres } = await import("postgres");
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

function say(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

function progress(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`[pause] ${text}\n`));
}
