// The server side of the ZMTP dispatch benchmark, in a process of its own so
// that its memory is measured alone. Configuration: JSON {database, schema?}
// in LORICA_BENCH_DISPATCH (the environment, not the command line that `ps`
// shows everyone: the database URL may hold a password).
// Prints {"port": N}, then on "stop" from stdin prints its peak RSS and exits.

import { openSqliteStore } from "../lib/store/sqlite.ts";
import { openPostgresStore } from "../lib/store/postgres.ts";
import { serveDispatcher } from "./farm_sim.ts";
import { rssMb } from "./stats.ts";

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
for await (const chunk of lines) {
  if (chunk.includes("stop")) break;
}
clearInterval(sampler);
peak = Math.max(peak, rssMb());
await served.close();
await store.close();
print({ peakRssMb: peak });

function print(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}
