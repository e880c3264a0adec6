// serveTurn() on PostgreSQL, when LORICA_TEST_POSTGRES names a server: a
// turn whose batch PostgreSQL picks as a real deadlock's victim is served
// again whole, every message's write kept.

import assert from "node:assert/strict";
import postgres from "postgres";
import { serveTurn, type TurnHandlers } from "../../../lib/server/turn.ts";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import { createLogger, holdingLogger } from "../../../lib/log.ts";
import { BuildStatus, type Store } from "../../../lib/store/types.ts";
import { drv, job, specification } from "../store/store_contract.ts";
import { eventuallyWaiting } from "../store/_postgres_gates.ts";
import type { RouterMessage } from "../../../lib/zmtp/router.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";

Deno.test({
  name:
    `serveTurn() serves again whole a turn whose write PostgreSQL aborted to break a deadlock${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    const schema = `lorica_turn_test_${Date.now().toString(36)}_${Deno.pid}`;
    const sql = postgres(TEST_POSTGRES_URL!, {
      max: 2,
      onnotice: () => {},
      connection: { search_path: schema },
    });
    let store: Store | undefined;
    try {
      store = await openPostgresStore(TEST_POSTGRES_URL!, { schema });
      await store.upsertSpecification(specification("s"));
      const evaluation = await store.addEvaluation("s", [], 1);
      await store.registerBuilds(evaluation, [job("a"), job("b")], {
        priority: 9,
        now: 1,
      });
      for (const name of ["a", "b"]) {
        assert.equal(
          (await store.popBuild("w", ["x86_64-linux"], 2))
            ?.jobName,
          name,
        );
      }
      const t = startingHandlers(store);

      // The other transaction holds "b"; the turn starts "a", then waits
      // for "b"; the other then asks for "a". The turn, waiting first, is
      // the first to look for a deadlock, and PostgreSQL aborts it.
      const other = holdThenAsk(sql, drv("b"), drv("a"));
      let served: ReturnType<typeof serveTurn> | undefined;
      try {
        const pid = await other.holding;
        served = serveTurn(messages("a", "b"), t.handlers);
        served.catch(() => {});
        await eventuallyWaiting(sql, [pid], 1);
        other.ask();
        await other.done;
        assert.equal(await served, true);
      } finally {
        other.ask();
        await Promise.allSettled([other.done, served]);
      }

      assert.deepEqual(t.batches, [true, true], "served again whole");
      for (const name of ["a", "b"]) {
        assert.equal(
          (await store.getBuildByDerivation(drv(name)))?.status,
          BuildStatus.started,
          name,
        );
      }
      const retried = t.lines.filter((l) => l.startsWith("warn turn retried"));
      assert.equal(retried.length, 1, t.lines.join("\n"));
      assert.match(retried[0], /deadlock detected/);
      assert.ok(
        !t.lines.some((l) => l.startsWith("error")),
        t.lines.join("\n"),
      );
    } finally {
      await store?.close();
      await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await sql.end({ timeout: 1 });
    }
  },
});

/** A turn's messages: each frame names the build its handler starts. */
function messages(...names: string[]): RouterMessage[] {
  return names.map((name, i) => ({
    routingId: new Uint8Array([i]),
    peerAddress: "127.0.0.1",
    frames: [new TextEncoder().encode(name)],
  }));
}

/**
 * Handlers over `store` that record each message's build as started by
 * worker "w"; they record the batches' options and the log.
 */
function startingHandlers(store: Store) {
  const lines: string[] = [];
  const batches: (boolean | undefined)[] = [];
  const seen: Store = Object.create(store);
  seen.batch = (work, options) => {
    batches.push(options?.optimistic);
    return store.batch(work, options);
  };
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const handlers: TurnHandlers = {
    store: seen,
    logger,
    handlerLog: holdingLogger(logger),
    async handle(message, turn) {
      const name = new TextDecoder().decode(message.frames[0]);
      const started = await turn.store.markStarted(
        drv(name),
        "w",
        `/${name}.log`,
        3,
      );
      assert.equal(started, true, name);
    },
    send: () => Promise.resolve(true),
    rolledBack: () => {},
  };
  return { handlers, lines, batches };
}

/** A transaction of the test's own, see {@link holdThenAsk}. */
interface Other {
  /** Its backend's pid, once it holds the first build. */
  holding: Promise<number>;
  /** Lets it ask for the second build. */
  ask(): void;
  /** Its end, once it got the second build too (and let both go). */
  done: Promise<void>;
}

/**
 * Holds the build of `first`; once asked, locks that of `second` as well,
 * then commits. Its own deadlock check waits long, so that the other
 * transaction of a deadlock is the one PostgreSQL aborts.
 */
function holdThenAsk(sql: postgres.Sql, first: string, second: string): Other {
  let ask = () => {};
  const asked = new Promise<void>((resolve) => ask = resolve);
  let held = (_pid: number) => {};
  const holding = new Promise<number>((resolve) => held = resolve);
  const lock = "SELECT id FROM Builds WHERE derivation = $1 FOR NO KEY UPDATE";
  const done = sql.begin(async (tx) => {
    await tx.unsafe("SET LOCAL deadlock_timeout = '20s'");
    const [{ pid }] = await tx.unsafe("SELECT pg_backend_pid() AS pid");
    await tx.unsafe(lock, [first]);
    held(Number(pid));
    await asked;
    await tx.unsafe(lock, [second]);
  }).then(() => {});
  return {
    holding: Promise.race([holding, done.then(() => -1)]),
    ask,
    done,
  };
}
