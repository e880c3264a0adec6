// The server side of the ZMTP dispatch benchmark, in a process of its own so
// that its memory is measured alone. Configuration: JSON {database, schema?}
// in LORICA_BENCH_DISPATCH (the environment, not the command line that `ps`
// shows everyone: the database URL may hold a password).
// Prints {"port": N}, then reads lines from stdin: "jobs COUNT SALT" makes
// a random evaluation of COUNT jobs and prints {"jobs": COUNT}; "register
// [CHUNK]" registers them while it dispatches, as the evaluation runner
// does (CHUNK jobs a chunk, the runner's number without it, 0 for one
// transaction), and prints {"registeredMs": N, "created": N, "turns": N,
// "turnP99Ms": N, "turnMaxMs": N} (the dispatcher turns during the
// registration, and how long they took, waits included); "cpu" prints
// {"cpuMs": N}, the CPU time the process (all its threads) has used so
// far; "stop" prints its peak RSS and exits.

import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { serveDispatcher } from "./farm_sim.ts";
import { makeJobs } from "./dag.ts";
import { benchSpecification } from "./bench_spec.ts";
import { cpuMs, percentile, rssMb } from "./stats.ts";
import { registerInChunks } from "../lib/store/chunked_registration.ts";
import type { NewJob, Store } from "../lib/store/types.ts";

const { database, schema } = JSON.parse(
  Deno.env.get("LORICA_BENCH_DISPATCH") ?? "{}",
) as {
  database: string;
  schema?: string;
};
const store = database.startsWith("postgres")
  ? await openPostgresStore(database, { schema })
  : openSqliteStore(database, {
    backgroundCheckpoints: true,
    backgroundScans: true,
  });
// How long each store batch (a dispatcher turn) took, its wait for the
// transaction included, while a registration runs.
const turnMs: number[] = [];
let timingTurns = false;
/** The turns begun during the registration and not yet over. */
const timedTurns = new Set<Promise<unknown>>();
const served = await serveDispatcher({
  ...store,
  batch(work, options) {
    const turn = store.batch(work, options);
    if (!timingTurns) return turn;
    const start = performance.now();
    const timed = turn.finally(() => {
      turnMs.push(performance.now() - start);
      timedTurns.delete(timed);
    });
    timedTurns.add(timed);
    return timed;
  },
});
let peak = rssMb();
const sampler = setInterval(() => peak = Math.max(peak, rssMb()), 100);
print({ port: served.port });

const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let pending = "";
let jobs: NewJob[] = [];
let salt = 0;
read: for await (const chunk of lines) {
  pending += chunk;
  let end: number;
  while ((end = pending.indexOf("\n")) >= 0) {
    const [command, ...args] = pending.slice(0, end).trim().split(/\s+/);
    pending = pending.slice(end + 1);
    if (command === "stop") break read;
    if (command === "cpu") print({ cpuMs: cpuMs() });
    if (command === "jobs") {
      // Made apart from the registration: 50,000 take the event loop for
      // some 300 ms, which is not the registration's doing.
      salt = Number(args[1]);
      jobs = makeJobs(Number(args[0]), { salt });
      print({ jobs: jobs.length });
    }
    if (command === "register") {
      const chunk = args.length === 0 ? undefined : Number(args[0]);
      turnMs.length = 0;
      timingTurns = true;
      const registered = await registerEvaluation(store, jobs, salt, chunk);
      timingTurns = false;
      // The turn that waited for the registration's last commit.
      await Promise.allSettled(timedTurns);
      print({
        ...registered,
        turns: turnMs.length,
        turnP99Ms: percentile(turnMs, 99),
        turnMaxMs: Math.max(...turnMs),
      });
    }
  }
}
clearInterval(sampler);
peak = Math.max(peak, rssMb());
await served.close();
await store.close();
print({ peakRssMb: peak });

/**
 * Registers `jobs` as a new evaluation as the evaluation runner does
 * (while started, renewing its heartbeat): in chunks of `chunk` jobs [the
 * runner's], or in one transaction (0).
 */
async function registerEvaluation(
  store: Store,
  jobs: NewJob[],
  salt: number,
  chunk?: number,
): Promise<{ registeredMs: number; created: number }> {
  await store.upsertSpecification(benchSpecification());
  const evaluation = await store.addEvaluation("bench", [], salt);
  const start = performance.now();
  const options = { priority: 9, whileStarted: true };
  const { created } = chunk === 0
    ? await store.registerBuilds(evaluation, jobs, { ...options, now: salt })
    : await registerInChunks(store, evaluation, jobs, {
      ...options,
      now: () => salt,
      chunkJobs: chunk,
    });
  return { registeredMs: performance.now() - start, created };
}

function print(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}
