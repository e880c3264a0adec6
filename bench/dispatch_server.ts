// The server side of the ZMTP dispatch benchmark, in a process of its own so
// that its memory is measured alone. Configuration: JSON {database, schema?}
// in LORICA_BENCH_DISPATCH (the environment, not the command line that `ps`
// shows everyone: the database URL may hold a password).
// Prints {"port": N}, then reads lines from stdin: "register JOBS SALT"
// registers a random evaluation of JOBS jobs while it dispatches, as the
// evaluation runner does, and prints {"registeredMs": N, "created": N};
// "stop" prints its peak RSS and exits.

import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { serveDispatcher } from "./farm_sim.ts";
import { makeJobs } from "./dag.ts";
import { benchSpecification } from "./bench_spec.ts";
import { rssMb } from "./stats.ts";
import type { Store } from "../lib/store/types.ts";

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
const served = await serveDispatcher(store);
let peak = rssMb();
const sampler = setInterval(() => peak = Math.max(peak, rssMb()), 100);
print({ port: served.port });

const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let pending = "";
read: for await (const chunk of lines) {
  pending += chunk;
  let end: number;
  while ((end = pending.indexOf("\n")) >= 0) {
    const [command, ...args] = pending.slice(0, end).trim().split(/\s+/);
    pending = pending.slice(end + 1);
    if (command === "stop") break read;
    if (command === "register") {
      print(await registerEvaluation(store, Number(args[0]), Number(args[1])));
    }
  }
}
clearInterval(sampler);
peak = Math.max(peak, rssMb());
await served.close();
await store.close();
print({ peakRssMb: peak });

/**
 * Registers a random evaluation of `count` jobs as the evaluation runner
 * does (while started, renewing its heartbeat), the jobs made beforehand.
 */
async function registerEvaluation(
  store: Store,
  count: number,
  salt: number,
): Promise<{ registeredMs: number; created: number }> {
  const jobs = makeJobs(count, { salt });
  await store.upsertSpecification(benchSpecification());
  const evaluation = await store.addEvaluation("bench", [], salt);
  const start = performance.now();
  const { created } = await store.registerBuilds(evaluation, jobs, {
    priority: 9,
    now: salt,
    whileStarted: true,
  });
  return { registeredMs: performance.now() - start, created };
}

function print(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}
