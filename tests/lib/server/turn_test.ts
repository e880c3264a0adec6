// serveTurn() against a real SQLite store: one commit per turn, replies
// after it, a failing write that costs only its own message, and a batch
// rolled back for a conflict served again whole.

import assert from "node:assert/strict";
import {
  MAX_TURN_CONFLICT_RETRIES,
  serveTurn,
  type TurnHandlers,
} from "../../../lib/server/turn.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { createLogger, holdingLogger } from "../../../lib/log.ts";
import {
  BuildStatus,
  EvaluationStatus,
  type Store,
  StoreError,
} from "../../../lib/store/types.ts";
import { drv, job, specification } from "../store/store_contract.ts";
import type { Message } from "../../../lib/protocol/messages.ts";
import type { RouterMessage } from "../../../lib/zmtp/router.ts";

/** A turn's messages: each frame names what its handler does. */
function messages(...actions: string[]): RouterMessage[] {
  return actions.map((action, i) => ({
    routingId: new Uint8Array([i]),
    peerAddress: "127.0.0.1",
    frames: [new TextEncoder().encode(action)],
  }));
}

async function withStore(
  body: (store: Store, evaluation: number) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "lorica-turn-" });
  const store = openSqliteStore(`${dir}/db.sqlite`);
  try {
    await store.upsertSpecification(specification("s"));
    const evaluation = await store.addEvaluation("s", [], 1);
    await store.registerBuilds(evaluation, [job("a"), job("b")], {
      priority: 9,
      now: 1,
    });
    await body(store, evaluation);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Handlers over `store`: "pop" pops a build and replies with it, "bad"
 * writes to an evaluation that does not exist. Records the batches'
 * options, what was sent and the log.
 */
function handlersOver(store: Store, evaluation: number) {
  const lines: string[] = [];
  const sent: string[] = [];
  const batches: (boolean | undefined)[] = [];
  let rollbacks = 0;
  const seen: Store = Object.create(store);
  seen.batch = (work, options) => {
    batches.push(options?.optimistic);
    return store.batch(work, options);
  };
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const handlerLog = holdingLogger(logger);
  const handlers: TurnHandlers = {
    store: seen,
    logger,
    handlerLog,
    async handle(message, turn) {
      const action = new TextDecoder().decode(message.frames[0]);
      if (action === "bad") {
        await turn.store.setEvaluationStatus(
          evaluation + 9,
          EvaluationStatus.succeeded,
          2,
        );
        return;
      }
      const build = await turn.store.popBuild("w", ["x86_64-linux"], 2);
      handlerLog.info("popped", { drv: build?.derivation });
      turn.reply({
        routingId: message.routingId,
        message: { type: "no-build", requestId: build?.id ?? 0 },
      });
    },
    send(_routingId, message: Message) {
      sent.push(JSON.stringify(message));
      return Promise.resolve(true);
    },
    rolledBack: () => rollbacks++,
  };
  return { handlers, lines, sent, batches, rollbacks: () => rollbacks };
}

Deno.test("serveTurn() commits a turn once, optimistically, then replies", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    assert.equal(await serveTurn(messages("pop", "pop"), t.handlers), true);
    assert.deepEqual(t.batches, [true]);
    assert.equal(t.sent.length, 2);
    assert.equal(t.rollbacks(), 0);
    for (const base of ["a", "b"]) {
      assert.equal(
        (await store.getBuildByDerivation(drv(base)))?.status,
        BuildStatus.submitted,
      );
    }
    assert.equal(t.lines.filter((l) => l.startsWith("info popped")).length, 2);
  });
});

Deno.test("serveTurn(): a failing write replays the turn with savepoints; the others keep theirs", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    assert.equal(
      await serveTurn(messages("pop", "bad", "pop"), t.handlers),
      true,
    );
    assert.deepEqual(t.batches, [true, false]);
    assert.equal(t.rollbacks(), 1, "caches dropped once, before the replay");
    // Replies of the committed attempt only: two, not four.
    assert.equal(t.sent.length, 2);
    for (const base of ["a", "b"]) {
      assert.equal(
        (await store.getBuildByDerivation(drv(base)))?.status,
        BuildStatus.submitted,
      );
    }
    assert.equal(
      t.lines.filter((line) => line.startsWith("info turn replayed")).length,
      1,
    );
    // Only what the committed attempt did is logged.
    assert.equal(t.lines.filter((l) => l.startsWith("info popped")).length, 2);
    const failed = t.lines.filter((line) =>
      line.startsWith("error message handling failed")
    );
    assert.equal(failed.length, 1, "the failure logged once, not per attempt");
    assert.ok(failed[0].includes(`${evaluation + 9}`));
  });
});

Deno.test("serveTurn(): a turn that cannot commit sends nothing and drops the caches", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    const failing: Store = Object.create(t.handlers.store);
    failing.batch = (work, options) =>
      t.handlers.store.batch(async (tx) => {
        await work(tx);
        throw new Error("disk I/O error");
      }, options);
    const handlers = { ...t.handlers, store: failing };
    const served = await serveTurn(messages("pop"), handlers);
    assert.ok(served !== true && /disk I\/O error/.test(String(served.error)));
    assert.deepEqual(t.sent, []);
    assert.equal(t.rollbacks(), 1);
    assert.ok(!t.lines.some((l) => l.startsWith("info popped")));
    assert.equal(
      (await store.getBuildByDerivation(drv("a")))?.status,
      BuildStatus.scheduled,
    );
    assert.ok(
      t.lines.some((line) =>
        line.startsWith("error turn not committed messages=1") &&
        line.includes("disk I/O error")
      ),
    );
  });
});

Deno.test("serveTurn(): finish runs once after every message, in the batch, before the replies; what it throws is logged", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    const order: string[] = [];
    const handle = t.handlers.handle;
    let failFinish = false;
    const handlers: TurnHandlers = {
      ...t.handlers,
      async handle(message, turn) {
        order.push("message");
        await handle(message, turn);
      },
      async finish(turn) {
        order.push(`finish after ${t.sent.length} sent`);
        await turn.store.markStarted(drv("a"), "w", "/log", 3);
        if (failFinish) throw new Error("finish bug");
      },
    };
    assert.equal(await serveTurn(messages("pop", "pop"), handlers), true);
    assert.deepEqual(order, ["message", "message", "finish after 0 sent"]);
    assert.equal(t.sent.length, 2);
    // Its write commits with the turn's.
    assert.equal(
      (await store.getBuildByDerivation(drv("a")))?.status,
      BuildStatus.started,
    );

    failFinish = true;
    assert.equal(await serveTurn(messages("pop"), handlers), true);
    assert.equal(t.sent.length, 3, "the message's reply still goes out");
    assert.ok(
      t.lines.some((line) =>
        line.startsWith("error turn finish failed") &&
        line.includes("finish bug")
      ),
    );
  });
});

Deno.test("serveTurn(): after-commit actions run once the turn commits, those of a discarded attempt never", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    const ran: string[] = [];
    const handle = t.handlers.handle;
    let attempt = 0;
    const handlers: TurnHandlers = {
      ...t.handlers,
      async handle(message, turn) {
        const action = new TextDecoder().decode(message.frames[0]);
        const tag = `${action} in attempt ${attempt}`;
        turn.afterCommit(() => ran.push(`${tag}, ${t.sent.length} sent`));
        await handle(message, turn);
      },
      rolledBack() {
        attempt++;
        t.handlers.rolledBack();
      },
    };
    // The optimistic attempt fails on "bad" and is replayed.
    assert.equal(await serveTurn(messages("pop", "bad"), handlers), true);
    assert.deepEqual(ran, [
      "pop in attempt 1, 0 sent",
      "bad in attempt 1, 0 sent",
    ]);

    ran.length = 0;
    const failing: Store = Object.create(handlers.store);
    failing.batch = (work, options) =>
      handlers.store.batch(async (tx) => {
        await work(tx);
        throw new Error("disk I/O error");
      }, options);
    assert.notEqual(
      await serveTurn(messages("pop"), { ...handlers, store: failing }),
      true,
    );
    assert.deepEqual(ran, []);
  });
});

/** What npm:postgres rejects a statement with that PostgreSQL chose as a deadlock's victim. */
function deadlockDetected(): Error {
  return Object.assign(new Error("deadlock detected"), {
    name: "PostgresError",
    severity: "ERROR",
    code: "40P01",
  });
}

/**
 * `store` whose batches, once `work` is done, fail as long as `failure`
 * returns an error for their number (1, 2, …).
 */
function failingBatches(
  store: Store,
  failure: (batch: number) => Error | null,
): Store {
  let count = 0;
  const failing: Store = Object.create(store);
  failing.batch = (work, options) =>
    store.batch(async (tx) => {
      const result = await work(tx);
      const error = failure(++count);
      if (error !== null) throw error;
      return result;
    }, options);
  return failing;
}

Deno.test("serveTurn(): a turn whose batch is rolled back for a deadlock is served again whole, not dropped", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    const handlers = {
      ...t.handlers,
      store: failingBatches(
        t.handlers.store,
        (n) => n === 1 ? deadlockDetected() : null,
      ),
    };
    assert.equal(await serveTurn(messages("pop", "pop"), handlers), true);
    assert.deepEqual(t.batches, [true, true]);
    assert.equal(t.rollbacks(), 1, "caches dropped once, before the retry");
    assert.equal(t.sent.length, 2, "the replies of the committed attempt");
    for (const base of ["a", "b"]) {
      assert.equal(
        (await store.getBuildByDerivation(drv(base)))?.status,
        BuildStatus.submitted,
      );
    }
    const retried = t.lines.filter((l) => l.startsWith("warn turn retried"));
    assert.equal(retried.length, 1);
    assert.match(retried[0], /messages=2 retry=1 .*deadlock detected/);
    assert.equal(t.lines.filter((l) => l.startsWith("info popped")).length, 2);
    assert.ok(!t.lines.some((l) => l.startsWith("error")), t.lines.join("\n"));
  });
});

Deno.test("serveTurn(): a write rolled back for a deadlock has the turn served again whole before any replay with savepoints", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    // What an optimistic batch fails with when one of its writes was the
    // deadlock's victim.
    const aborted = new StoreError(
      "Optimistic batch aborted by a failing write: deadlock detected",
      "batch-aborted",
      "write",
      { cause: deadlockDetected() },
    );
    const handlers = {
      ...t.handlers,
      store: failingBatches(t.handlers.store, (n) => n === 1 ? aborted : null),
    };
    assert.equal(await serveTurn(messages("pop", "pop"), handlers), true);
    assert.deepEqual(t.batches, [true, true], "no replay with savepoints");
    assert.equal(t.sent.length, 2);
    assert.ok(!t.lines.some((l) => l.startsWith("info turn replayed")));
    assert.equal(
      t.lines.filter((l) => l.startsWith("warn turn retried")).length,
      1,
    );
  });
});

Deno.test("serveTurn(): a turn rolled back for conflicts again and again is served a bounded number of times, then not committed", async () => {
  await withStore(async (store, evaluation) => {
    const t = handlersOver(store, evaluation);
    const handlers = {
      ...t.handlers,
      store: failingBatches(t.handlers.store, () => deadlockDetected()),
    };
    const served = await serveTurn(messages("pop"), handlers);
    assert.ok(
      served !== true && /deadlock detected/.test(String(served.error)),
    );
    assert.deepEqual(
      t.batches,
      Array(MAX_TURN_CONFLICT_RETRIES + 1).fill(true),
    );
    assert.equal(t.rollbacks(), MAX_TURN_CONFLICT_RETRIES + 1);
    assert.deepEqual(t.sent, []);
    assert.equal(
      (await store.getBuildByDerivation(drv("a")))?.status,
      BuildStatus.scheduled,
    );
    assert.equal(
      t.lines.filter((l) => l.startsWith("warn turn retried")).length,
      MAX_TURN_CONFLICT_RETRIES,
    );
    assert.ok(t.lines.some((l) => l.startsWith("error turn not committed")));
  });
});
