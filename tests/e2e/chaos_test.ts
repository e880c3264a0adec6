// Chaos: the demo farm (a server and two workers, real processes) while the
// server or a worker is SIGKILLed at random moments and restarted. After
// each round no build is lost, and a killed worker's builds leave
// "submitted"/"started" within the worker timeout; the final outcome equals
// a calm run's (demo/expected.json). Seeded: LORICA_CHAOS_SEED=<n> replays
// the kill schedule, LORICA_CHAOS_ROUNDS=<n> changes its length (default 30).

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath as fromFileUrl } from "node:url";
import { startFarm } from "../../demo/farm.ts";
import { compareOutcome, readProgress } from "../../demo/report.ts";

const DEMO = fromFileUrl(new URL("../../demo", import.meta.url));
const WORKER_TIMEOUT = 30;
// Expiry is noticed at the next sweep (a quarter of the timeout); the
// rest is room for a loaded CI machine.
const REQUEUE_BOUND_MS = (WORKER_TIMEOUT * 1.25 + 15) * 1000;

function prng(seed: number) {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

interface Row {
  derivation: string;
  status: number;
  worker: string | null;
}

/** Every build row, read-only (the server keeps writing meanwhile). */
function readBuilds(database: string): Row[] {
  try {
    const db = new DatabaseSync(database, { readOnly: true });
    try {
      return db.prepare("SELECT derivation, status, worker FROM Builds")
        .all() as unknown as Row[];
    } finally {
      db.close();
    }
  } catch {
    return []; // Not created yet.
  }
}

/** The session names of the running incarnation of a worker role. */
async function sessionNames(logFile: string): Promise<string[]> {
  const text = await Deno.readTextFile(logFile).catch(() => "");
  const starts = [...text.matchAll(/worker started .*?sessions=([^\s]+)/g)];
  return starts.length === 0 ? [] : starts[starts.length - 1][1].split(",");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name:
    "chaos: SIGKILLed servers and workers lose no build, hold none without a live worker, and end as a calm run",
  async fn() {
    const fixed = Deno.env.get("LORICA_CHAOS_SEED");
    const seed = fixed ? Number(fixed) : Math.floor(Math.random() * 2 ** 31);
    const rounds = Number(Deno.env.get("LORICA_CHAOS_ROUNDS") ?? 30);
    // deno-lint-ignore no-console
    console.log(`chaos seed ${seed} (replay: LORICA_CHAOS_SEED=${seed})`);
    const random = prng(seed);
    const expected: Record<string, string> = JSON.parse(
      await Deno.readTextFile(`${DEMO}/expected.json`),
    );
    const farm = await startFarm({
      specFile: `${DEMO}/demo-spec.scm`,
      scenarioFile: `${DEMO}/scenario.json`,
      workers: [
        { systems: ["x86_64-linux"], sessions: 2 },
        { systems: ["i686-linux"], sessions: 2 },
      ],
      webPort: 0,
      requestPeriod: 1,
      workerTimeout: WORKER_TIMEOUT,
    });
    // Session names of killed worker processes, and when they must be free.
    const dead: { names: Set<string>; by: number; round: number }[] = [];
    const seen = new Set<string>();
    const problems: string[] = [];

    function check(round: number) {
      const rows = readBuilds(farm.database);
      // No build lost: a derivation once recorded stays recorded.
      const now = new Set(rows.map((r) => r.derivation));
      for (const drv of seen) {
        if (!now.has(drv) && rows.length > 0) {
          problems.push(`round ${round}: build ${drv} disappeared`);
        }
      }
      for (const drv of now) seen.add(drv);
      // None submitted or started on a dead worker past the timeout.
      for (const corpse of dead) {
        if (Date.now() < corpse.by) continue;
        for (const row of rows) {
          if (
            (row.status === -1 || row.status === -3) && row.worker !== null &&
            corpse.names.has(row.worker)
          ) {
            problems.push(
              `round ${round}: ${row.derivation} still ${row.status} on ${row.worker}, killed in round ${corpse.round}`,
            );
          }
        }
      }
    }

    try {
      for (let round = 1; round <= rounds; round++) {
        await sleep(300 + random(2200));
        const role = ["server", "worker1", "worker2"][random(3)];
        if (role !== "server") {
          dead.push({
            names: new Set(await sessionNames(farm.logFile(role))),
            by: Date.now() + REQUEUE_BOUND_MS,
            round,
          });
        }
        await farm.kill(role, "SIGKILL");
        await sleep(random(1000));
        await farm.restart(role);
        check(round);
      }
      // Let the farm finish, still checking the invariants.
      const total = Object.keys(expected).length;
      let progress = await readProgress(farm.webUrl);
      for (let i = 0; i < 400; i++) {
        if (
          progress.pending.length === 0 &&
          progress.finished.length >= total &&
          dead.every((corpse) => Date.now() >= corpse.by)
        ) break;
        await sleep(1000);
        check(rounds + 1);
        progress = await readProgress(farm.webUrl);
      }
      check(rounds + 1);
      assert.deepEqual(problems, []);
      assert.deepEqual(compareOutcome(progress.finished, expected), []);
      for (const role of farm.roles) {
        assert.ok(farm.running(role), `${role} still running`);
      }
    } finally {
      await farm.stop();
      if (Deno.env.get("LORICA_CHAOS_KEEP")) {
        // deno-lint-ignore no-console
        console.log(`farm kept in ${farm.root}`);
      } else {
        await Deno.remove(farm.root, { recursive: true }).catch(() => {});
      }
    }
  },
});
