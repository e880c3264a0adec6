// Servers in local mode sharing one database, each with its own daemon
// (docs/deployment.md, section 5): each holds its builds under a name of
// its own, recovers only its own at a restart, and the builds of one that
// died for good go back to the queue after the worker timeout.

import assert from "node:assert/strict";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import type { GuixSpawner } from "../../../lib/guix/build_events.ts";
import { type Clock, epochSeconds } from "../../../lib/clock.ts";
import { LocalBuilder } from "../../../lib/server/local_builder.ts";
import {
  holderAddress,
  type HolderIdentity,
  MIN_WORKER_TIMEOUT_SECONDS,
  parseHolderAddress,
} from "../../../lib/server/local_holder.ts";
import { sweepOnce, SweepState } from "../../../lib/server/worker_sweeper.ts";
import { hostIdentityOf } from "../../../lib/server/evaluation_owner.ts";
import {
  type Build,
  buildStatusName,
  type Store,
} from "../../../lib/store/types.ts";
import { drv, job } from "../store/store_contract.ts";
import { eventually, FakeClock, within } from "./_dispatch_fixture.ts";
import { testSpecification } from "./_guix_fixture.ts";
import { type Backend, backends, sharedDatabase } from "./_shared_database.ts";

const SPEC = testSpecification("s");

/** No test here builds: a driver asked for is a mistake. */
const noGuix: GuixSpawner = (args) => {
  throw new Error(`guix ${args.join(" ")} was not expected`);
};

/**
 * A guix whose every run does `meanwhile` (other processes' writes, made
 * while the daemon is asked), then fails with status 1, saying nothing.
 */
function failingGuix(meanwhile: () => Promise<void>): GuixSpawner {
  return answeringGuix(async () => {
    await meanwhile();
    return { code: 1, stdout: "" };
  });
}

/** A guix whose every run prints and exits as `answer` says, once it has. */
function answeringGuix(
  answer: () => Promise<{ code: number; stdout: string }>,
): GuixSpawner {
  return () => {
    const answered = answer();
    const text = (read: (a: { stdout: string }) => string) =>
      new ReadableStream<Uint8Array>({
        async start(c) {
          const said = read(await answered.catch(() => ({ stdout: "" })));
          if (said !== "") c.enqueue(new TextEncoder().encode(said));
          c.close();
        },
      });
    return {
      pid: 0,
      stdout: text((a) => a.stdout),
      stderr: text(() => ""),
      stdin: null,
      status: answered.then(({ code }) => ({ code, signal: null })),
      kill: () => {},
    };
  };
}

/**
 * The two servers' database of a test (sharedDatabase()), closed, and on
 * PostgreSQL its schema dropped, when the test's `await using` ends.
 */
async function holderDatabase(backend: Backend) {
  const db = await sharedDatabase(backend, SPEC, "lorica_holder");
  return Object.assign(db, { [Symbol.asyncDispose]: () => db.close() });
}

/**
 * A guix whose runs fail, saying nothing, once the test lets the daemon
 * answer (`answer()`): `asked` says a batch is with the daemon, held there
 * while the test acts on the database.
 */
function heldDaemon() {
  const asked = Promise.withResolvers<void>();
  const answers = Promise.withResolvers<void>();
  const spawnGuix = failingGuix(async () => {
    asked.resolve();
    await answers.promise;
  });
  return { spawnGuix, asked: asked.promise, answer: () => answers.resolve() };
}

/**
 * Runs a server (pid 1 of host "box") on `store` until `signal`, guix
 * being `daemon`'s: the run, once its first batch is with the daemon
 * (wrapped: a promise returned alone would be awaited to its end).
 */
async function runWithBatchAtDaemon(
  store: Store,
  daemon: ReturnType<typeof heldDaemon>,
  signal: AbortSignal,
  lines?: string[],
): Promise<{ running: Promise<void> }> {
  const running = builder(store, {
    holder: processOf(1, new Set([1])),
    lines,
    spawnGuix: daemon.spawnGuix,
  }).run(signal);
  await within(daemon.asked, 10_000, "batch");
  return { running };
}

/**
 * Another server's sweep, as if every holder of `store` had been silent
 * forever: it expires every holder row.
 */
function expireEveryHolder(store: Store) {
  return store.expireWorkers(Number.MAX_SAFE_INTEGER, { timeoutSeconds: 120 });
}

/** A builder on `store` that takes `batchSize` builds at once. */
function builder(
  store: Store,
  options: {
    holder?: HolderIdentity;
    clock?: Clock;
    systems?: string[];
    lines?: string[];
    batchSize?: number;
    spawnGuix?: GuixSpawner;
    workerTimeoutSeconds?: number;
  } = {},
): LocalBuilder {
  const lines = options.lines;
  return new LocalBuilder({
    store,
    spawnGuix: options.spawnGuix ?? noGuix,
    clock: options.clock ?? new FakeClock(),
    logger: lines
      ? createLogger({ timestamps: false, sink: (l) => lines.push(l) })
      : silentLogger,
    logCacheDir: "/nonexistent/logs",
    storeDir: "/gnu/store",
    systems: options.systems ?? ["x86_64-linux"],
    batchSize: options.batchSize ?? 2,
    holder: options.holder,
    workerTimeoutSeconds: options.workerTimeoutSeconds,
  });
}

/**
 * Processes of one host "box" (or `host`) whose liveness is the set
 * `live`, as /proc would tell.
 */
function processOf(pid: number, live: Set<number>, host = "box") {
  return {
    self: { host: `${host} pid:[1]`, pid, started: "7" },
    hostName: host,
    isLive: (owner: { pid: number }) => Promise.resolve(live.has(owner.pid)),
  };
}

/** Registers `names` as builds of a new evaluation of SPEC. */
async function register(store: Store, names: string[]): Promise<void> {
  const id = await store.addEvaluation(SPEC.name, [], 1);
  await store.registerBuilds(id, names.map((name) => job(name)), {
    priority: 9,
    now: 1,
  });
}

async function state(store: Store, build: Build) {
  const now = (await store.getBuild(build.id))!;
  return { status: buildStatusName(now.status), worker: now.worker };
}

/**
 * `store` whose next pop after `holdNext()` waits: the gate returned says
 * when it is asked for (`asked`), and lets it go on (`release`).
 */
function withHeldPop(store: Store) {
  let hold: PromiseWithResolvers<void> | null = null;
  let asked = Promise.withResolvers<void>();
  const held: Store = {
    ...store,
    popBuilds: async (requests, now, options) => {
      const gate = hold;
      hold = null;
      if (gate !== null) {
        asked.resolve();
        await gate.promise;
      }
      return await store.popBuilds(requests, now, options);
    },
  };
  return {
    store: held,
    holdNext() {
      const gate = Promise.withResolvers<void>();
      hold = gate;
      asked = Promise.withResolvers<void>();
      return { asked: asked.promise, release: () => gate.resolve() };
    },
  };
}

Deno.test("holderAddress() is read back by parseHolderAddress(), host spaces and all", () => {
  const owner = { host: "box pid:[4026531836]", pid: 42, started: "" };
  assert.deepEqual(parseHolderAddress(holderAddress(owner, "ab12")), {
    owner,
    run: "ab12",
  });
  assert.equal(parseHolderAddress("127.0.0.1"), null);
});

for (const { name: backend, ignore, needs } of backends) {
  Deno.test({
    name:
      `LocalBuilder on ${backend}: of two servers of one host, the one restarting requeues its own builds at once under the same name, not the other's${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["a1", "a2", "b1", "b2"]);
      const live = new Set([1, 2]);
      const first = builder(db.a, { holder: processOf(1, live) });
      const second = builder(db.b, { holder: processOf(2, live) });
      const firsts = await first.takeBatch();
      const seconds = await second.takeBatch();
      assert.equal(firsts.length, 2);
      assert.equal(seconds.length, 2);
      const firstName = (await state(db.a, firsts[0])).worker;
      const secondName = (await state(db.a, seconds[0])).worker;
      assert.notEqual(firstName, secondName);
      assert.match(firstName!, /^local@box/);
      assert.match(secondName!, /^local@box/);

      // The first server dies and starts again, as process 3.
      live.delete(1);
      live.add(3);
      const again = builder(db.a, { holder: processOf(3, live) });
      assert.equal(await again.recover(), 2);
      for (const build of firsts) {
        assert.deepEqual(await state(db.a, build), {
          status: "scheduled",
          worker: null,
        });
      }
      for (const build of seconds) {
        assert.deepEqual(await state(db.a, build), {
          status: "submitted",
          worker: secondName,
        });
      }
      // Its builds are taken again under its old name.
      const retaken = await again.takeBatch();
      assert.deepEqual(
        retaken.map((build) => build.id).sort(),
        firsts.map((build) => build.id).sort(),
      );
      assert.equal((await state(db.a, retaken[0])).worker, firstName);
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: the builds of a server that died for good go back to the queue once its holder is silent for the worker timeout, through a live server's sweep${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const clock = new FakeClock();
      const abort = new AbortController();
      const lines: string[] = [];
      try {
        await register(db.a, ["d1", "d2"]);
        // A server on host "gone" takes both builds, then dies: it never
        // renews its holder again.
        const dead = builder(db.a, {
          clock,
          holder: processOf(1, new Set([1]), "gone"),
        });
        const held = await dead.takeBatch();
        assert.equal(held.length, 2);
        // A live server on host "here", building other systems: it never
        // takes the builds itself, and they stay scheduled once requeued.
        const live = builder(db.b, {
          clock,
          holder: processOf(2, new Set([2]), "here"),
          systems: ["aarch64-linux"],
          lines,
        });
        const running = live.run(abort.signal);
        // Its lane, its holder's renewal and its worker sweep all wait
        // for the clock once each has done its turn.
        const idle = (sleepers = 3) =>
          eventually(
            () => clock.sleepersDueWithin(30_000) >= sleepers,
            "the live server waiting for the clock",
          );
        const pass = async (seconds: number) => {
          for (let s = 0; s < seconds; s += 30) {
            await clock.advance(30_000);
            await idle();
          }
        };
        // Started: its lane has looked at the queue once.
        await idle(1);
        for (const build of held) {
          assert.deepEqual(await state(db.a, build), {
            status: "submitted",
            worker: "local@gone",
          });
        }
        await idle();
        assert.notEqual(await db.a.getWorker("local@here"), null);

        // 90 s: within the timeout (120 s), the sweeps leave them.
        await pass(90);
        assert.equal(
          (await state(db.a, held[0])).worker,
          "local@gone",
          lines.join("\n"),
        );
        await pass(60);
        for (const build of held) {
          assert.deepEqual(await state(db.a, build), {
            status: "scheduled",
            worker: null,
          });
        }
        assert.equal(await db.a.getWorker("local@gone"), null);
        assert.ok(
          lines.some((l) =>
            l.startsWith("warn worker expired worker=local@gone ")
          ),
          lines.join("\n"),
        );
        // The live server renewed its own row all along.
        const row = await db.a.getWorker("local@here");
        assert.ok(row !== null);
        assert.ok(clock.now() / 1000 - row.lastSeen <= 30, JSON.stringify(row));

        // A clean stop gives the name up.
        abort.abort();
        await within(running, 10_000, "the live server's stop");
        assert.equal(await db.a.getWorker("local@here"), null);
      } finally {
        abort.abort();
      }
    },
  });

  // Every server sharing the database sweeps: the row records the holder's
  // own --worker-timeout, but the sweep of an older version applies its
  // own, so a live holder's row must be renewed within the shortest
  // accepted, whatever the worker timeout of the server holding it.
  for (const holderTimeout of [undefined, 3600]) {
    const own = holderTimeout === undefined
      ? "the default worker timeout"
      : `a worker timeout of ${holderTimeout} s`;
    Deno.test({
      name:
        `LocalBuilder on ${backend}: a live server with ${own} keeps its holder row and its builds through the sweeps of a server with the shortest worker timeout accepted, each made at the worst moment (its renewal due, not yet written)${needs}`,
      ignore,
      async fn() {
        await using db = await holderDatabase(backend);
        const clock = new FakeClock();
        const abort = new AbortController();
        const lines: string[] = [];
        // Once the name is claimed, the live server's only writes of its
        // row are renewals: one held here shows when it falls due.
        let renewal: PromiseWithResolvers<void> | null = null;
        let renewalDue = false;
        const store: Store = {
          ...db.b,
          claimWorker: async (worker, expected) => {
            const gate = renewal;
            if (gate !== null) {
              renewalDue = true;
              await gate.promise;
            }
            return await db.b.claimWorker(worker, expected);
          },
        };
        try {
          await register(db.a, ["h1", "h2"]);
          const live = builder(store, {
            clock,
            holder: processOf(2, new Set([2]), "here"),
            lines,
            workerTimeoutSeconds: holderTimeout,
          });
          // The batch its daemon builds, held under its name meanwhile.
          const held = await live.takeBatch();
          assert.equal(held.length, 2);
          const name = await live.holderName();
          const running = live.run(abort.signal);
          // Its lane, its renewals and its own sweep wait for the clock.
          const settled = (what: string) =>
            eventually(
              () => renewalDue || clock.sleepersDueWithin(Infinity) >= 3,
              what,
            );
          await settled("the live server started");
          // The other server, in remote mode say, sweeping the database.
          const other = {
            store: db.a,
            clock,
            logger: createLogger({
              timestamps: false,
              sink: (l) => lines.push(l),
            }),
            timeoutSeconds: MIN_WORKER_TIMEOUT_SECONDS,
          };
          const sweeps = new SweepState();
          for (let renewals = 0; renewals < 3; renewals++) {
            const { lastSeen } = (await db.a.getWorker(name))!;
            renewal = Promise.withResolvers();
            renewalDue = false;
            // Second by second until the renewal falls due, or until the
            // row is older than the other server's timeout: a sweep then
            // takes it for dead.
            while (
              !renewalDue &&
              epochSeconds(clock) - lastSeen <= MIN_WORKER_TIMEOUT_SECONDS
            ) {
              await clock.advance(1000);
              await settled("the renewal due or the live server waiting");
            }
            assert.deepEqual(
              await sweepOnce(other, sweeps),
              [],
              `silent ${epochSeconds(clock) - lastSeen} s\n${lines.join("\n")}`,
            );
            assert.ok(renewalDue, "a renewal within the shortest timeout");
            const gate = renewal;
            renewal = null;
            renewalDue = false;
            gate.resolve();
            await settled("the renewal written");
          }
          for (const build of held) {
            assert.deepEqual(await state(db.a, build), {
              status: "submitted",
              worker: name,
            });
          }
          assert.ok(
            !lines.some((l) => l.startsWith("warn local holder lost ")),
            lines.join("\n"),
          );
          abort.abort();
          await within(running, 10_000, "the live server's stop");
        } finally {
          abort.abort();
          renewal?.resolve();
        }
      },
    });
  }

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a server whose holder row another expired (a silence past the timeout) claims a name again and holds its new builds under it${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const clock = new FakeClock();
      const abort = new AbortController();
      const lines: string[] = [];
      try {
        const live = builder(db.b, {
          clock,
          holder: processOf(2, new Set([2]), "here"),
          systems: ["aarch64-linux"],
          lines,
        });
        const running = live.run(abort.signal);
        await eventually(
          () => clock.sleepersDueWithin(30_000) >= 3,
          "the live server waiting for the clock",
        );
        const before = await db.a.getWorker("local@here");
        assert.ok(before !== null);
        // Another server took it for dead and removed its row.
        await expireEveryHolder(db.a);
        assert.equal(await db.a.getWorker("local@here"), null);
        await clock.advance(30_000);
        await eventually(
          async () => await db.a.getWorker("local@here") !== null,
          "the name claimed again",
        );
        assert.ok(
          lines.some((l) => l.startsWith("warn local holder lost ")),
          lines.join("\n"),
        );
        abort.abort();
        await within(running, 10_000, "the live server's stop");
        assert.equal(await db.a.getWorker("local@here"), null);
      } finally {
        abort.abort();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a server whose expired name another server claimed takes its next batch under a name of its own, never under that one${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["a1", "a2", "a3", "a4"]);
      const live = new Set([1, 3]);
      const lines: string[] = [];
      const first = builder(db.a, { holder: processOf(1, live), lines });
      const [taken] = await first.takeBatch();
      assert.equal((await state(db.a, taken)).worker, "local@box");
      // Taken for dead by another server's sweep (its builds requeued),
      // then its name claimed by a third server of the host.
      await expireEveryHolder(db.b);
      const third = builder(db.b, { holder: processOf(3, live) });
      assert.equal(await third.recover(), 0);
      const row = await db.b.getWorker("local@box");
      assert.equal(parseHolderAddress(row!.address)?.owner.pid, 3);
      // Two lanes find the name lost at once: one claim for both.
      const again = (await Promise.all([
        first.takeBatch(),
        first.takeBatch(),
      ])).flat();
      assert.equal(again.length, 4);
      assert.equal(
        lines.filter((l) => l.startsWith("warn local holder lost ")).length,
        1,
        lines.join("\n"),
      );
      for (const build of again) {
        assert.deepEqual(await state(db.a, build), {
          status: "submitted",
          worker: "local@box#2",
        });
      }
      assert.equal(
        (await db.a.queue({ worker: "local@box" }, 10)).length,
        0,
        "nothing held under the third server's name",
      );
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch whose claim ended (the name claimed again by a server restarted, which took its builds under the same name) neither records their results nor requeues them${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["c1", "c2"]);
      const live = new Set([1]);
      const answers: { code: number; stdout: string }[] = [];
      const first = builder(db.a, {
        holder: processOf(1, live),
        spawnGuix: answeringGuix(() => Promise.resolve(answers.shift()!)),
      });
      const taken = await first.takeBatch();
      assert.equal(taken.length, 2);
      // Taken for dead (as after a PID namespace's restart), the server's
      // name is claimed by process 2, which takes the builds again.
      live.delete(1);
      live.add(2);
      const second = builder(db.b, { holder: processOf(2, live) });
      assert.equal(await second.recover(), 2);
      assert.equal((await second.takeBatch()).length, 2);
      const name = await second.holderName();
      assert.equal(await first.holderName(), name, "one name, two claims");
      const held = { status: "submitted", worker: name };

      // The old batch finds both outputs valid: nothing is recorded.
      answers.push({
        code: 0,
        stdout: taken.map((b) => `(state "${b.derivation}" valid)\n`)
          .join(""),
      });
      const valid = await first.buildBatch(taken);
      assert.equal(valid.succeeded, 0);
      for (const build of taken) {
        assert.deepEqual(await state(db.a, build), held);
      }
      // The old batch's query fails: nothing is requeued.
      answers.push({ code: 1, stdout: "" });
      const failed = await first.buildBatch(taken);
      assert.equal(failed.interruption, "fault");
      assert.equal(failed.requeued, 0);
      for (const build of taken) {
        assert.deepEqual(await state(db.a, build), held);
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch asked for under a name while another lane claimed a name again (the row lost meanwhile) is taken under the new name, none left held under the old one${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const { store, holdNext } = withHeldPop(db.a);
      await register(db.a, ["a1", "a2", "a3", "a4"]);
      const live = new Set([1, 3]);
      const lines: string[] = [];
      const first = builder(store, { holder: processOf(1, live), lines });
      assert.equal(await first.holderName(), "local@box");
      // One lane reads the row its own and asks for a batch, slowly.
      const gate = holdNext();
      const slow = first.takeBatch();
      await gate.asked;
      // Meanwhile the row is expired and the name claimed by a third
      // server; another lane finds it lost and claims a name again.
      await expireEveryHolder(db.b);
      const third = builder(db.b, { holder: processOf(3, live) });
      assert.equal(await third.recover(), 0);
      const quick = await first.takeBatch();
      assert.equal(await first.holderName(), "local@box#2");
      gate.release();
      const late = await slow;
      assert.equal(
        (await db.a.queue({ worker: "local@box" }, 10)).length,
        0,
        "nothing held under the third server's name",
      );
      for (const build of [...quick, ...late]) {
        assert.deepEqual(await state(db.a, build), {
          status: "submitted",
          worker: "local@box#2",
        });
      }
      assert.equal(quick.length + late.length, 4);
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a name taken over by a third server between a lane's look at its row and its pop gets no build held under it; the next batch is taken under a name claimed again${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const live = new Set([1, 3]);
      // Once armed, the next pop comes after the row was expired and the
      // name claimed by a third server: after the lane's look at the row.
      let takeOver = false;
      const store: Store = {
        ...db.a,
        popBuilds: async (requests, now, options) => {
          if (takeOver) {
            takeOver = false;
            await expireEveryHolder(db.b);
            const third = builder(db.b, { holder: processOf(3, live) });
            assert.equal(await third.holderName(), "local@box");
          }
          return await db.a.popBuilds(requests, now, options);
        },
      };
      await register(db.a, ["a1", "a2"]);
      const first = builder(store, { holder: processOf(1, live) });
      assert.equal(await first.holderName(), "local@box");
      takeOver = true;
      assert.deepEqual(await first.takeBatch(), []);
      assert.equal(
        (await db.a.queue({ worker: "local@box" }, 10)).length,
        0,
        "nothing held under the third server's name",
      );
      const next = await first.takeBatch();
      assert.equal(next.length, 2);
      assert.equal(await first.holderName(), "local@box#2");
      for (const build of next) {
        assert.deepEqual(await state(db.a, build), {
          status: "submitted",
          worker: "local@box#2",
        });
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch whose claim ended while it was taken is left, not requeued: the builds a third server took under the name since stay its own${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const live = new Set([1, 3]);
      let third: LocalBuilder | null = null;
      let thirds: Build[] = [];
      let first: LocalBuilder | null = null;
      // Once armed, the pop returns only after its claim ended: the row
      // expired (its builds requeued), the name claimed by a third server
      // that took them, and the loss found by another lane of this one.
      let endClaim = false;
      const store: Store = {
        ...db.a,
        popBuilds: async (requests, now, options) => {
          const popped = await db.a.popBuilds(requests, now, options);
          if (endClaim) {
            endClaim = false;
            await expireEveryHolder(db.b);
            third = builder(db.b, { holder: processOf(3, live) });
            thirds = await third.takeBatch();
            assert.deepEqual(await first!.takeBatch(), []);
            assert.equal(await first!.holderName(), "local@box#2");
          }
          return popped;
        },
      };
      await register(db.a, ["a1", "a2"]);
      const lines: string[] = [];
      first = builder(store, { holder: processOf(1, live), lines });
      assert.equal(await first.holderName(), "local@box");
      endClaim = true;
      assert.deepEqual(await first.takeBatch(), []);
      assert.equal(thirds.length, 2);
      for (const build of thirds) {
        assert.deepEqual(await state(db.a, build), {
          status: "submitted",
          worker: "local@box",
        });
      }
      assert.ok(
        lines.some((l) =>
          l.startsWith("info local batch left worker=local@box builds=2")
        ),
        lines.join("\n"),
      );
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a lane's pop made under a claim that another lane ended by claiming the same name again takes nothing, and the lane takes its batch under the new claim: each claim has an address of its own${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const { store, holdNext } = withHeldPop(db.a);
      await register(db.a, ["a1", "a2", "a3", "a4"]);
      const first = builder(store, { holder: processOf(1, new Set([1])) });
      assert.equal(await first.holderName(), "local@box");
      const gate = holdNext();
      const slow = first.takeBatch();
      await gate.asked;
      // The row expires; another lane finds it gone and claims the same
      // name again, the first free one.
      await expireEveryHolder(db.b);
      const quick = await first.takeBatch();
      assert.equal(await first.holderName(), "local@box");
      assert.equal(quick.length, 2);
      gate.release();
      const late = await slow;
      assert.equal(late.length, 2);
      // Held under the name: the two lanes' batches, nothing else.
      assert.deepEqual(
        (await db.a.queue({ worker: "local@box" }, 10))
          .map((build) => build.id).sort(),
        [...quick, ...late].map((build) => build.id).sort(),
      );
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a lane that read the name just before another lane's regain, and finds the old row lost only once the regain is done, makes no second regain${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      // The reads of the row by LocalHolder.held() answer when the test
      // says, with the row as it was when they were made.
      const heldReads: (() => void)[] = [];
      const store: Store = {
        ...db.a,
        getWorker: async (name) => {
          const fromHeld = /\bheld\b/.test(new Error().stack ?? "");
          const row = await db.a.getWorker(name);
          if (fromHeld) {
            const answer = Promise.withResolvers<void>();
            heldReads.push(answer.resolve);
            await answer.promise;
          }
          return row;
        },
      };
      const until = (what: string, done: () => boolean) =>
        within(
          (async () => {
            while (!done()) await new Promise((r) => setTimeout(r, 0));
          })(),
          10_000,
          what,
        );
      const lines: string[] = [];
      const first = builder(store, {
        holder: processOf(1, new Set([1])),
        lines,
      });
      assert.equal(await first.holderName(), "local@box");
      // Where the second lane's start falls among the first one's steps
      // is a matter of a few microtasks: each offset is tried.
      for (let offset = 0; offset < 16; offset++) {
        await expireEveryHolder(db.b);
        heldReads.length = 0;
        const one = first.takeBatch();
        await until("the first lane's read", () => heldReads.length === 1);
        heldReads[0]();
        for (let tick = 0; tick < offset; tick++) await Promise.resolve();
        const two = first.takeBatch();
        // Its read, made before the regain's claim, answers after it.
        await within(one, 10_000, "the first lane's batch");
        await until("the second lane's read", () => heldReads.length === 2);
        heldReads[1]();
        await within(two, 10_000, "the second lane's batch");
        assert.equal(
          lines.filter((l) => l.startsWith("warn local holder lost ")).length,
          offset + 1,
          `offset ${offset}:\n${lines.join("\n")}`,
        );
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a server of another machine of this host name (a clone: same name, same initial PID namespace, another boot) keeps its name and builds; its pid is not looked up in this /proc${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["c1", "c2"]);
      const name = `local@${Deno.hostname()}`;
      const held = await db.a.popBuilds(
        [{ worker: name, systems: ["x86_64-linux"] }],
        1,
      );
      // The clone's server: a pid no process of this machine has (a
      // child that has exited), its row renewed just now.
      const child = new Deno.Command("true").spawn();
      await child.status;
      const clone = {
        host: hostIdentityOf({
          hostName: Deno.hostname(),
          pidNamespace: Deno.readLinkSync("/proc/self/ns/pid"),
          bootId: "00000000-0000-4000-8000-000000000000",
        }),
        pid: child.pid,
        started: "12345",
      };
      const clock = new FakeClock();
      const now = clock.now() / 1000;
      assert.ok(
        await db.a.claimWorker({
          name,
          address: holderAddress(clone, "c10e"),
          machine: Deno.hostname(),
          systems: ["x86_64-linux"],
          lastSeen: now,
          timeoutSeconds: 120,
        }, null),
      );
      // This machine's server, with its production identity.
      const here = builder(db.b, { clock });
      assert.equal(await here.recover(), 0);
      assert.equal(await here.holderName(), `${name}#2`);
      assert.deepEqual(await state(db.a, held[0]!), {
        status: "submitted",
        worker: name,
      });
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a server takes no holder name whose row another host's server renewed within that server's own timeout, however much longer than its own${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["t1", "t2"]);
      const held = await db.a.popBuilds(
        [{ worker: "local@box", systems: ["x86_64-linux"] }],
        1,
      );
      // A server of another pid namespace of host name "box", with a
      // worker timeout of 600 s, silent for 200 s (its database link
      // slow, say).
      const clock = new FakeClock();
      const elsewhere = { host: "box pid:[2]", pid: 9, started: "7" };
      assert.ok(
        await db.a.claimWorker({
          name: "local@box",
          address: holderAddress(elsewhere, "e1.1"),
          machine: "box",
          systems: ["x86_64-linux"],
          lastSeen: epochSeconds(clock) - 200,
          timeoutSeconds: 600,
        }, null),
      );
      const here = builder(db.b, {
        clock,
        holder: processOf(1, new Set([1])),
        workerTimeoutSeconds: 120,
      });
      assert.equal(await here.recover(), 0);
      assert.equal(await here.holderName(), "local@box#2");
      assert.deepEqual(await state(db.a, held[0]!), {
        status: "submitted",
        worker: "local@box",
      });
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a renewal of the holder answered late is followed at once, not a whole interval after its answer (its row would age past the timeout between two renewals)${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const clock = new FakeClock();
      const abort = new AbortController();
      // The claim goes through; each renewal answers when the test says.
      const renewals: { lastSeen: number; answer: () => void }[] = [];
      const store: Store = {
        ...db.a,
        claimWorker: async (worker, expected) => {
          if (expected === null) return await db.a.claimWorker(worker, null);
          const answered = Promise.withResolvers<void>();
          renewals.push({
            lastSeen: worker.lastSeen,
            answer: answered.resolve,
          });
          await answered.promise;
          return await db.a.claimWorker(worker, expected);
        },
      };
      try {
        const live = builder(store, {
          clock,
          holder: processOf(2, new Set([2]), "here"),
        });
        const running = live.run(abort.signal);
        const until = (what: string, done: () => boolean) =>
          eventually(done, what);
        // Its lane, its holder's renewal and its worker sweep wait.
        await until(
          "the server waiting",
          () => clock.sleepersDueWithin(30_000) >= 3,
        );
        const start = clock.now() / 1000;
        await clock.advance(30_000);
        await until("the first renewal", () => renewals.length === 1);
        // The database answers it 70 s later.
        await clock.advance(70_000);
        renewals[0].answer();
        await until("the second renewal", () => renewals.length === 2);
        assert.deepEqual(
          renewals.map((renewal) => renewal.lastSeen - start),
          [30, 100],
        );
        abort.abort();
        renewals[1].answer();
        await within(running, 10_000, "the server's stop");
      } finally {
        abort.abort();
        for (const renewal of renewals) renewal.answer();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: builds held under "local" by an older version are requeued at the first start${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["old1", "old2"]);
      const request = { worker: "local", systems: ["x86_64-linux"] };
      const old = await db.a.popBuilds([request, request], 1);
      await db.a.markStarted(old[0]!.derivation, "local", "", 1);
      const fresh = builder(db.b, { holder: processOf(1, new Set([1])) });
      assert.equal(await fresh.recover(), 2);
      for (const build of old) {
        assert.deepEqual(await state(db.a, build!), {
          status: "scheduled",
          worker: null,
        });
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: two builders of this very process take names of their own${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["p1", "p2", "p3", "p4"]);
      // This process as its identity, as in production.
      const first = builder(db.a);
      const second = builder(db.b);
      const firsts = await first.takeBatch();
      const seconds = await second.takeBatch();
      const names = new Set([
        (await state(db.a, firsts[0])).worker,
        (await state(db.a, seconds[0])).worker,
      ]);
      assert.equal(names.size, 2, [...names].join(", "));
      // Neither takes the other for gone at a second look.
      assert.equal(await first.recover(), 0);
      assert.equal(await second.recover(), 0);
      assert.equal((await state(db.a, firsts[1])).status, "submitted");
      assert.equal((await state(db.a, seconds[1])).status, "submitted");
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch given back after a fault leaves alone a build of it that another server holds now (restarted by a web front end, then taken), requeuing only its own${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      await register(db.a, ["r1", "r2"]);
      let other: (Build | null)[] = [];
      let taken: Build[] = [];
      const here = builder(db.a, {
        holder: processOf(1, new Set([1, 2])),
        // While the daemon is asked about the batch, r1 is restarted
        // and another server takes it; then the query fails.
        spawnGuix: failingGuix(async () => {
          const r1 = taken.find((build) => build.jobName === "r1")!;
          assert.ok((await db.b.restartBuild(r1.id, 2)).changed);
          other = await db.b.popBuilds(
            [{ worker: "local@elsewhere", systems: ["x86_64-linux"] }],
            2,
          );
        }),
      });
      taken = await here.takeBatch();
      assert.equal(taken.length, 2);
      const summary = await here.buildBatch(taken);
      assert.equal(summary.interruption, "fault");
      assert.equal(other[0]?.jobName, "r1");
      assert.deepEqual(await state(db.a, other[0]!), {
        status: "submitted",
        worker: "local@elsewhere",
      });
      const r2 = taken.find((build) => build.jobName === "r2")!;
      assert.deepEqual(await state(db.a, r2), {
        status: "scheduled",
        worker: null,
      });
      assert.equal(summary.requeued, 1);
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a burst of holdings notifications while a batch is built costs the look at the database under way and one after it, not a look each${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const abort = new AbortController();
      const daemon = heldDaemon();
      const looksAnswer = Promise.withResolvers<void>();
      let heard: (() => void) | null = null;
      let looks = 0;
      let inFlight = false;
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        watchHoldings: (onChange) => (heard = onChange),
        // A look begins with a read of the holder row; none is read
        // otherwise while the daemon is asked.
        getWorker: async (name) => {
          if (!inFlight) return await db.a.getWorker(name);
          looks++;
          await looksAnswer.promise;
          return await db.a.getWorker(name);
        },
      };
      try {
        await register(db.a, ["n1"]);
        // A batch in flight: the daemon is being asked about it.
        const { running } = await runWithBatchAtDaemon(
          store,
          daemon,
          abort.signal,
        );
        inFlight = true;
        for (let i = 0; i < 5; i++) heard!();
        // Each look reaches the row after a few steps of its own: all of
        // them have, once the first has and a timer has passed.
        await eventually(() => looks > 0, "the first look");
        assert.equal(looks, 1, "looks begun at once");
        looksAnswer.resolve();
        await eventually(() => looks === 2, "the look after the burst");
        inFlight = false;
        abort.abort();
        daemon.answer();
        await within(running, 10_000, "the server's stop");
        assert.equal(looks, 2);
      } finally {
        abort.abort();
        daemon.answer();
        looksAnswer.resolve();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a clean stop during a claim of a name again (the row lost) waits for the claim and gives its row up too, leaving no row to age as a dead server's${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const abort = new AbortController();
      const daemon = heldDaemon();
      const claimAsked = Promise.withResolvers<void>();
      const claimGoes = Promise.withResolvers<void>();
      const lines: string[] = [];
      let heard: (() => void) | null = null;
      let holdClaims = false;
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        watchHoldings: (onChange) => (heard = onChange),
        // Once told, a claim of a row waits for the test.
        claimWorker: async (worker, expected) => {
          if (holdClaims) {
            claimAsked.resolve();
            await claimGoes.promise;
          }
          return await db.a.claimWorker(worker, expected);
        },
      };
      try {
        await register(db.a, ["z1"]);
        const { running } = await runWithBatchAtDaemon(
          store,
          daemon,
          abort.signal,
          lines,
        );
        // The row expires; a look finds it lost and claims a name again,
        // which waits; the server stops meanwhile.
        await expireEveryHolder(db.b);
        holdClaims = true;
        heard!();
        await within(claimAsked.promise, 10_000, "the claim");
        abort.abort();
        daemon.answer();
        // Time for a release that does not wait to happen.
        await new Promise((resolve) => setTimeout(resolve, 200));
        claimGoes.resolve();
        await within(running, 10_000, "the server's stop");
        assert.deepEqual(await db.a.listWorkers(), [], lines.join("\n"));
      } finally {
        abort.abort();
        daemon.answer();
        claimGoes.resolve();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a look at the database still under way when a clean stop gives the name up claims no name again after it (a row left behind, to age as a dead server's)${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const abort = new AbortController();
      const daemon = heldDaemon();
      const lookAnswers = Promise.withResolvers<void>();
      const lines: string[] = [];
      let heard: (() => void) | null = null;
      let looking = false;
      let looks = 0;
      let claims = 0;
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        watchHoldings: (onChange) => (heard = onChange),
        // The look's read of the holder row answers when the test says.
        getWorker: async (name) => {
          if (looking) {
            looks++;
            await lookAnswers.promise;
          }
          return await db.a.getWorker(name);
        },
        claimWorker: (worker, expected) => {
          claims++;
          return db.a.claimWorker(worker, expected);
        },
      };
      try {
        await register(db.a, ["z1"]);
        const { running } = await runWithBatchAtDaemon(
          store,
          daemon,
          abort.signal,
          lines,
        );
        looking = true;
        heard!();
        await eventually(() => looks === 1, "the look");
        looking = false;
        abort.abort();
        daemon.answer();
        const claimsBefore = claims;
        // The stop gives the name up while the look waits, or (once the
        // stop waits for its looks) once the look has answered.
        await Promise.race([
          within(running, 10_000, "the server's stop"),
          eventually(
            () => lines.some((l) => l.startsWith("info local holder released")),
            "the release",
          ),
        ]);
        lookAnswers.resolve();
        await within(running, 10_000, "the server's stop");
        await eventually(
          () =>
            claims > claimsBefore ||
            lines.some((l) => l.startsWith("warn held builds not checked")),
          "the look's end",
        );
        assert.equal(claims, claimsBefore, lines.join("\n"));
        assert.deepEqual(await db.a.listWorkers(), []);
      } finally {
        abort.abort();
        daemon.answer();
        lookAnswers.resolve();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch's give-back retried after a database error leaves alone a build another batch of this server took since (restarted elsewhere, taken again under the same name)${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const abort = new AbortController();
      const clock = new FakeClock();
      const lines: string[] = [];
      const queries: (() => void)[] = [];
      let requeueFails = true;
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        // The record of r1, found built, fails: the database went away;
        // so does the first requeue of the give-back.
        completeBuild: (derivation, status, options) =>
          derivation === drv("r1")
            ? Promise.reject(new Error("connection refused"))
            : db.a.completeBuild(derivation, status, options),
        requeueBuild: (derivation, now, options) => {
          if (requeueFails) {
            requeueFails = false;
            return Promise.reject(new Error("connection refused"));
          }
          return db.a.requeueBuild(derivation, now, options);
        },
      };
      try {
        await register(db.a, ["r1", "r2"]);
        // The first batch's daemon finds both built; the second batch's
        // query waits for the test.
        let asked = 0;
        const here = builder(store, {
          holder: processOf(1, new Set([1])),
          lines,
          clock,
          spawnGuix: answeringGuix(async () => {
            if (asked++ === 0) {
              return {
                code: 0,
                stdout: `(state "${drv("r1")}" valid)\n` +
                  `(state "${drv("r2")}" valid)\n`,
              };
            }
            await new Promise<void>((resolve) => queries.push(resolve));
            return { code: 1, stdout: "" };
          }),
        });
        const running = here.run(abort.signal);
        await eventually(
          () =>
            lines.some((l) => l.startsWith("error local builds not requeued")),
          "the failed give-back",
        );
        // Meanwhile r1 is restarted elsewhere, and a batch here takes it.
        const r1 = (await db.a.getBuildByDerivation(drv("r1")))!;
        assert.ok((await db.b.restartBuild(r1.id, 2)).changed);
        const again = await here.takeBatch();
        assert.deepEqual(again.map((build) => build.derivation), [drv("r1")]);
        const second = here.buildBatch(again, abort.signal);
        await eventually(() => queries.length === 1, "the second batch");
        // The give-back is tried again: r2 only.
        await clock.advance(1000);
        await eventually(
          async () =>
            buildStatusName(
              (await db.a.getBuildByDerivation(drv("r2")))!.status,
            ) === "scheduled",
          "r2 given back",
        );
        assert.deepEqual(await state(db.a, again[0]), {
          status: "submitted",
          worker: await here.holderName(),
        });
        abort.abort();
        for (const answer of queries) answer();
        await within(running, 10_000, "the server's stop");
        await second.catch(() => {});
      } finally {
        abort.abort();
        for (const answer of queries) answer();
      }
    },
  });

  Deno.test({
    name:
      `LocalBuilder on ${backend}: a batch failed on a database error gives back only its builds still open, not one taken from it by a batch of this server since (restarted elsewhere, taken again under the same name)${needs}`,
    ignore,
    async fn() {
      await using db = await holderDatabase(backend);
      const abort = new AbortController();
      const lines: string[] = [];
      let again: Build[] = [];
      let here: LocalBuilder | null = null;
      let first: Build[] = [];
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        popBuilds: async (requests, now, options) => {
          const popped = await db.a.popBuilds(requests, now, options);
          if (first.length === 0) {
            first = popped.filter((build) => build !== null);
          }
          return popped;
        },
        // The record of f2, found built, fails: the database went away.
        completeBuild: (derivation, status, options) =>
          derivation === drv("f2")
            ? Promise.reject(new Error("connection refused"))
            : db.a.completeBuild(derivation, status, options),
      };
      try {
        await register(db.a, ["f1", "f2"]);
        here = builder(store, {
          holder: processOf(1, new Set([1])),
          lines,
          // While the daemon is asked about the batch, f1 is restarted
          // elsewhere and taken again here, by another batch; f2 is found
          // built.
          spawnGuix: answeringGuix(async () => {
            const f1 = first.find((build) => build.derivation === drv("f1"))!;
            assert.ok((await db.b.restartBuild(f1.id, 2)).changed);
            again = await here!.takeBatch();
            return {
              code: 0,
              stdout: `(state "${drv("f1")}" failed)\n` +
                `(state "${drv("f2")}" valid)\n`,
            };
          }),
        });
        const running = here.run(abort.signal);
        const f2 = () => db.a.getBuildByDerivation(drv("f2"));
        // The failed batch gives f2 back, after f1 (taken first).
        await eventually(
          async () =>
            lines.some((l) => l.startsWith("error local batch failed")) &&
            buildStatusName((await f2())!.status) === "scheduled",
          "f2 given back",
        );
        assert.deepEqual(again.map((build) => build.derivation), [drv("f1")]);
        assert.deepEqual(await state(db.a, again[0]), {
          status: "submitted",
          worker: await here.holderName(),
        });
        abort.abort();
        await within(running, 10_000, "the server's stop");
      } finally {
        abort.abort();
      }
    },
  });
}
