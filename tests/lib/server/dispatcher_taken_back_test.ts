// A cancel or restart made by another process sharing the database (a web
// front end) reaches no worker directly: the dispatcher looks every few
// seconds for builds it believes connected Lorica workers hold that the
// database no longer has held by them, and sends those workers
// build-cancel.

import assert from "node:assert/strict";
import postgres from "postgres";
import {
  BuildStatus,
  type Holding,
  type Store,
} from "../../../lib/store/types.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import {
  LORICA_FEATURES,
  type Message,
} from "../../../lib/protocol/messages.ts";
import {
  eventually,
  FakeWorker,
  type Fixture,
  job,
  loricaWorker,
  startFixture,
  startWork,
  WatchedTurns,
  within,
} from "./_dispatch_fixture.ts";
import {
  assertAcknowledged,
  assertReleased,
  resultOf,
  withLoricaWorkers,
} from "./_lorica_workers.ts";
import type { Dispatcher } from "../../../lib/server/dispatcher.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";

/** The dispatcher's default time between two looks. */
const LOOK_MS = 5000;

/** What the dispatcher asked of `stillHeld`, look after look. */
class Looks {
  readonly asked: Holding[][] = [];
  done = 0;
  #reading = () => {};
  readonly #read = new Promise<void>((resolve) => this.#reading = resolve);

  /** Resolves once a look begins to read the store. */
  read(): Promise<void> {
    return this.#read;
  }

  /** `store`, its `stillHeld` recorded. */
  watch(store: Store): Store {
    const watched: Store = Object.create(store);
    watched.stillHeld = async (holdings) => {
      this.asked.push([...holdings]);
      this.#reading();
      try {
        return await store.stillHeld(holdings);
      } finally {
        this.done++;
      }
    };
    return watched;
  }
}

/**
 * A pause in a store call, for the test to line something up behind it:
 * once armed, the next call to pass through it waits there until thawed.
 */
class Stall {
  #thawed: Promise<void> | null = null;
  #thaw = () => {};
  #reach = () => {};
  /** Resolves once a call waits in the stall. */
  readonly reached = new Promise<void>((resolve) => this.#reach = resolve);

  /** Makes the next call to pass wait, until `thaw()`. */
  arm(): void {
    this.#thawed = new Promise((resolve) => this.#thaw = resolve);
  }

  /** Lets the call waiting (or the next one armed for) go on. */
  thaw(): void {
    this.#thaw();
  }

  /** Where a store call passes: it waits there if armed. */
  async pass(): Promise<void> {
    const thawed = this.#thawed;
    if (thawed === null) return;
    this.#thawed = null;
    this.#reach();
    await thawed;
  }
}

/** The next message `worker` gets after everything already sent to it. */
async function nextAfterSync(worker: FakeWorker): Promise<Message> {
  await worker.send({ type: "worker-request-info" });
  return await worker.next();
}

/** Every message already sent to `worker`. */
async function allSentTo(worker: FakeWorker): Promise<Message[]> {
  await worker.send({ type: "worker-request-info" });
  const messages: Message[] = [];
  for (;;) {
    const message = await worker.next();
    if (message.type === "server-info") return messages;
    messages.push(message);
  }
}

/**
 * Lets time reach the dispatcher's next look, and waits for it to end: its
 * loop waits for the one after (it waits for nothing else within a look's
 * time, as asserted first).
 */
async function nextLook(f: Fixture): Promise<void> {
  assert.equal(f.clock.sleepersDueWithin(LOOK_MS), 1, "the look's wait alone");
  await f.clock.advance(LOOK_MS);
  await eventually(() => f.clock.sleepersDueWithin(LOOK_MS) === 1, "a look");
}

/**
 * What the dispatcher sees of `store`: its batches, while `fail.next` is
 * set, rolled back once their work is done (and `fail.next` cleared).
 */
function failingOnce(fail: { next: boolean }) {
  return (store: Store): Store => {
    const seen: Store = Object.create(store);
    seen.batch = (work, options) =>
      store.batch(async (tx) => {
        const result = await work(tx);
        if (fail.next) {
          fail.next = false;
          throw new Error("commit refused (injected)");
        }
        return result;
      }, options);
    return seen;
  };
}

/** Waits for a turn to be rolled back and not replayed. */
async function notCommitted(f: Fixture, before: number): Promise<void> {
  await eventually(
    () =>
      f.lines.filter((l) => l.startsWith("error turn not committed ")).length >
        before,
    "a turn not committed",
  );
}

/** What another process does to the build of `drv` on the shared store. */
const elsewhere: Record<
  string,
  (store: Store, drv: string, evaluation: number) => Promise<unknown>
> = {
  cancelBuild: async (store, drv) =>
    await store.cancelBuild((await store.getBuildByDerivation(drv))!.id, 9),
  restartBuild: async (store, drv) =>
    await store.restartBuild((await store.getBuildByDerivation(drv))!.id, 9),
  cancelEvaluation: (store, _drv, evaluation) =>
    store.cancelEvaluation(evaluation, 9),
  restartEvaluation: (store, _drv, evaluation) =>
    store.restartEvaluation(evaluation, 9),
  requeueBuild: (store, drv) => store.requeueBuild(drv, 9),
};

for (const [action, act] of Object.entries(elsewhere)) {
  Deno.test({
    name:
      `${action}() by another process on the database: the Lorica worker building the build gets build-cancel at the dispatcher's next look`,
    fn: () =>
      withLoricaWorkers(["BUSY"], async (f, [worker]) => {
        // Another process's store on the same database file.
        const other = openSqliteStore(f.database);
        try {
          await f.addJobs([job("a", 1), job("b", 2)]);
          const drv = await startWork(worker, f);
          await act(other, drv, f.evaluation);
          await f.clock.advance(LOOK_MS);
          assert.deepEqual(await worker.next(), { type: "build-cancel", drv });
          assert.ok(
            f.lines.some((l) =>
              l.startsWith("info build taken back ") &&
              l.includes("worker=BUSY") && l.includes(drv)
            ),
            f.lines.join("\n"),
          );
          // Let go of: its late result is checked against the store.
          await assertReleased(f, worker, drv);
          assert.equal((await nextAfterSync(worker)).type, "server-info");
          // Told once: the next look finds nothing to take back.
          await f.clock.advance(LOOK_MS);
          assert.equal((await nextAfterSync(worker)).type, "server-info");
        } finally {
          await other.close();
        }
      }),
  });
}

Deno.test({
  name:
    "a look sends nothing for a build still held, and asks nothing about a Cuirass worker's",
  async fn() {
    const looks = new Looks();
    const f = await startFixture({
      storeSeenByDispatcher: (store) => looks.watch(store),
    });
    const lorica = await loricaWorker(f.port, "LORICA");
    const cuirass = await FakeWorker.connect(f.port, { name: "CUIRASS" });
    try {
      await cuirass.ready();
      await f.addJobs([job("a", 1), job("b", 2)]);
      const held = await startWork(lorica, f);
      const canceled = await startWork(cuirass, f);
      await f.store.cancelBuild(
        (await f.store.getBuildByDerivation(canceled))!.id,
        9,
      );
      await f.clock.advance(LOOK_MS);
      await eventually(() => looks.done === 1, "the look");
      assert.deepEqual(looks.asked, [[{ worker: "LORICA", derivation: held }]]);
      assert.equal((await nextAfterSync(lorica)).type, "server-info");
      assert.equal(await f.status(held), BuildStatus.started);
      assert.ok(!f.lines.some((l) => l.includes("build taken back")));
    } finally {
      await Promise.all([lorica.close(), cuirass.close()]);
      await f.close();
    }
  },
});

Deno.test({
  name:
    "a look waits for the turn under way: a failure being recorded is not taken for a build taken back",
  async fn() {
    // On SQLite, reads see the writes of the turn under way: between
    // recording a failure and letting go of the build, a look would find
    // the build failed while the dispatcher still counts it as the
    // worker's.
    const looks = new Looks();
    const turns = new WatchedTurns();
    // Once the failure is recorded.
    const stall = new Stall();
    const storeSeenByDispatcher = (store: Store) => {
      const seen = looks.watch(store);
      seen.batch = (work, options) =>
        store.batch((tx) => {
          const inside: Store = Object.create(tx);
          inside.completeBuild = async (...args) => {
            const result = await tx.completeBuild(...args);
            await stall.pass();
            return result;
          };
          return work(inside);
        }, options);
      return seen;
    };
    // BUSY's build keeps something to look at once the failure is recorded.
    await withLoricaWorkers(["FAILING", "BUSY"], async (f, [worker, busy]) => {
      await f.addJobs([job("a", 1), job("b", 2)]);
      const drv = await startWork(worker, f);
      await startWork(busy, f);
      stall.arm();
      await worker.send(resultOf("build-failed", drv));
      await stall.reached;
      await f.clock.advance(LOOK_MS);
      // The look either asks for its place behind the turn, as it should,
      // or reads the store in the middle of it: the turn goes on only once
      // one of the two happened, however long it takes.
      const first = await Promise.race([
        turns.queued().then(() => "waits for the turn"),
        looks.read().then(() => "reads in the middle of the turn"),
      ]);
      assert.equal(first, "waits for the turn");
      stall.thaw();
      await eventually(() => looks.done > 0, "the look");
      // The failure's ack, and no build-cancel.
      await assertAcknowledged(worker, drv, "recorded");
      assert.equal((await nextAfterSync(worker)).type, "server-info");
      assert.equal(await f.status(drv), BuildStatus.failed);
      assert.ok(
        !f.lines.some((l) => l.includes("build taken back")),
        f.lines.join("\n"),
      );
    }, { turns, storeSeenByDispatcher });
  },
});

/** Waits until some connection of the server LISTENs on `channel`. */
async function listening(channel: string): Promise<void> {
  const sql = postgres(TEST_POSTGRES_URL!, { max: 1, onnotice: () => {} });
  try {
    await eventually(async () =>
      (await sql.unsafe(
        `SELECT 1 FROM pg_stat_activity WHERE query ILIKE $1`,
        [`listen %${channel}%`],
      )).length > 0, `a LISTEN on ${channel}`);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

Deno.test({
  name:
    `cancelEvaluation() by a web front end on the same PostgreSQL database reaches the Lorica worker at once, its NOTIFY waking the dispatcher's look${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    const url = TEST_POSTGRES_URL!;
    const schema = `lorica_taken_back_${Deno.pid}_${Date.now().toString(36)}`;
    const f = await startFixture({
      store: await openPostgresStore(url, { schema }),
    });
    const web = await openPostgresStore(url, { schema });
    const worker = await loricaWorker(f.port, "PGWORKER");
    try {
      await f.addJobs([job("a", 1), job("b", 2)]);
      const drv = await startWork(worker, f);
      await listening(`lorica_held_${schema}`);
      assert.equal((await web.cancelEvaluation(f.evaluation, 9)).changed, 2);
      // Told by NOTIFY, the dispatcher looks at once: no time passes here.
      assert.deepEqual(
        await within(worker.next(), 10_000, "the build-cancel"),
        { type: "build-cancel", drv },
      );
    } finally {
      await worker.close();
      await web.close();
      await f.close();
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await sql.end({ timeout: 1 });
      }
    }
  },
});

Deno.test({
  name:
    "a worker that asks for work again is not believed to build what it was handed before: nothing is taken back from it",
  fn: () =>
    withLoricaWorkers(["AGAIN"], async (f, [worker]) => {
      const [drv] = await f.addJobs([job("a", 1)]);
      assert.equal((await worker.requestWork(1)).type, "build");
      // Elsewhere meanwhile: requeued, and handed to another worker.
      assert.equal(await f.store.requeueBuild(drv, 9), true);
      assert.equal(
        (await f.store.popBuild("OTHER", ["x86_64-linux"], 9))?.derivation,
        drv,
      );
      // Its reply lost, say: the worker asks again, building nothing.
      assert.equal((await worker.requestWork(2)).type, "no-build");
      await f.clock.advance(LOOK_MS);
      assert.equal((await nextAfterSync(worker)).type, "server-info");
      assert.ok(
        !f.lines.some((l) => l.includes("build taken back")),
        f.lines.join("\n"),
      );
    }),
});

Deno.test({
  name:
    "a build a worker registers holding (a server restarted under it) is taken back too when canceled elsewhere",
  async fn() {
    const f = await startFixture();
    const worker = await FakeWorker.connect(f.port, { name: "RESUMED" });
    try {
      const [drv] = await f.addJobs([job("a", 1), job("b", 2)]);
      // Handed to it by the server before its restart, as the database says.
      assert.equal(
        (await f.store.popBuild("RESUMED", ["x86_64-linux"], 1))?.derivation,
        drv,
      );
      await worker.send({
        type: "lorica-hello",
        version: 1,
        features: LORICA_FEATURES,
      });
      assert.equal((await worker.next()).type, "lorica-welcome");
      await worker.ready({ holding: [drv] });
      assert.equal((await nextAfterSync(worker)).type, "server-info");
      assert.equal(await f.status(drv), BuildStatus.submitted);
      await f.store.cancelEvaluation(f.evaluation, 9);
      await f.clock.advance(LOOK_MS);
      assert.deepEqual(await worker.next(), { type: "build-cancel", drv });
    } finally {
      await worker.close();
      await f.close();
    }
  },
});

Deno.test({
  name:
    "a turn rolled back leaves believed held the builds handed out before it: a cancel by another process after it still reaches the worker",
  async fn() {
    const fail = { next: false };
    await withLoricaWorkers(
      ["BUSY", "BYSTANDER"],
      async (f, [worker, bystander]) => {
        const other = openSqliteStore(f.database);
        try {
          await f.addJobs([job("a", 1), job("b", 2)]);
          const drv = await startWork(worker, f);
          assert.equal((await nextAfterSync(bystander)).type, "server-info");
          // Any turn: this one answers another worker, and is rolled back.
          fail.next = true;
          await bystander.send({ type: "worker-request-info" });
          await notCommitted(f, 0);
          await elsewhere.cancelBuild(other, drv, f.evaluation);
          await nextLook(f);
          assert.deepEqual(await allSentTo(worker), [
            { type: "build-cancel", drv },
          ], f.lines.join("\n"));
        } finally {
          await other.close();
        }
      },
      { storeSeenByDispatcher: failingOnce(fail) },
    );
  },
});

Deno.test({
  name:
    "a build handed out in a turn rolled back is not believed held: nothing is taken back from the worker that never got it",
  async fn() {
    const fail = { next: false };
    await withLoricaWorkers(["UNLUCKY"], async (f, [worker]) => {
      const [drv] = await f.addJobs([job("a", 1)]);
      // Its registration's turn is over.
      assert.equal((await nextAfterSync(worker)).type, "server-info");
      fail.next = true;
      await worker.send({
        type: "worker-request-work",
        name: worker.name,
        requestId: 1,
      });
      await notCommitted(f, 0);
      assert.equal(await f.status(drv), BuildStatus.scheduled);
      await nextLook(f);
      // The request was answered with no build: nothing was handed out.
      assert.deepEqual(await allSentTo(worker), [
        { type: "no-build", requestId: 1 },
      ]);
      assert.ok(
        !f.lines.some((l) => l.includes("build taken back")),
        f.lines.join("\n"),
      );
    }, { storeSeenByDispatcher: failingOnce(fail) });
  },
});

/** A cancel or restart made through the dispatcher (the web's, say). */
const here: Record<
  "cancelBuild" | "restartBuild" | "cancelEvaluation" | "restartEvaluation",
  (dispatcher: Dispatcher, id: number, evaluation: number) => Promise<unknown>
> = {
  cancelBuild: (dispatcher, id) => dispatcher.cancelBuild(id),
  restartBuild: (dispatcher, id) => dispatcher.restartBuild(id),
  cancelEvaluation: (dispatcher, _id, evaluation) =>
    dispatcher.cancelEvaluation(evaluation),
  restartEvaluation: (dispatcher, _id, evaluation) =>
    dispatcher.restartEvaluation(evaluation),
};

for (const [action, act] of Object.entries(here)) {
  Deno.test({
    name:
      `${action}() through the dispatcher while a look is due tells the worker once`,
    async fn() {
      const looks = new Looks();
      const turns = new WatchedTurns();
      // Once the store's change is written.
      const stall = new Stall();
      const storeSeenByDispatcher = (store: Store) => {
        const seen = looks.watch(store);
        const change = store[action as keyof typeof here] as (
          ...args: unknown[]
        ) => Promise<unknown>;
        Object.assign(seen, {
          [action]: async (...args: unknown[]) => {
            const result = await change.apply(store, args);
            await stall.pass();
            return result;
          },
        });
        return seen;
      };
      await withLoricaWorkers(["BUSY"], async (f, [worker]) => {
        await f.addJobs([job("a", 1), job("b", 2)]);
        const drv = await startWork(worker, f);
        const id = (await f.store.getBuildByDerivation(drv))!.id;
        stall.arm();
        const acting = act(f.dispatcher, id, f.evaluation);
        await stall.reached;
        // The look comes between the store's change and what the
        // dispatcher does next: it reads the store then (before the fix),
        // or waits for the change to be done with.
        await f.clock.advance(LOOK_MS);
        await Promise.race([turns.queued(), looks.read()]);
        stall.thaw();
        await acting;
        await eventually(
          () => f.clock.sleepersDueWithin(LOOK_MS) === 1,
          "the look's end",
        );
        assert.deepEqual(await allSentTo(worker), [
          { type: "build-cancel", drv },
        ], f.lines.join("\n"));
      }, { turns, storeSeenByDispatcher });
    },
  });
}
