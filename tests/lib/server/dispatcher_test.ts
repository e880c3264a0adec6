import assert from "node:assert/strict";
import {
  type Build,
  BuildStatus,
  type Store,
} from "../../../lib/store/types.ts";
import { makeAuthProof } from "../../../lib/protocol/worker_auth.ts";
import {
  DEFAULT_MAX_PAYLOAD_BYTES,
  encodeMessage,
  LORICA_FEATURES,
  type Message,
} from "../../../lib/protocol/messages.ts";
import { encodeGreeting, encodeReady } from "../../../lib/zmtp/greeting.ts";
import {
  encodeCommandFrame,
  encodeMessage as encodeFrames,
} from "../../../lib/zmtp/frame.ts";
import { sweepOnce, SweepState } from "../../../lib/server/worker_sweeper.ts";
import { routingKey } from "../../../lib/server/worker_links.ts";
import { WITHHELD_REPLY_GRACE_MS } from "../../../lib/server/dispatcher.ts";
import { libzmqMissing, LibzmqPeer, toHex } from "../zmtp/libzmq_peer.ts";
import {
  eventually,
  FakeWorker,
  type Fixture,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";
import { withFixture } from "./_with_fixture.ts";

/** 16 random bytes, with 0x00 and 0xFF forced in. */
function identity(): Uint8Array {
  const id = crypto.getRandomValues(new Uint8Array(16));
  id[0] = 0x00;
  id[7] = 0xff;
  id[15] = 0x00;
  return id;
}

/** Connects a FakeWorker to `port` and sends its worker-ready. */
async function readyWorker(
  port: number,
  options: Parameters<typeof FakeWorker.connect>[1] = {},
): Promise<FakeWorker> {
  const worker = await FakeWorker.connect(port, options);
  await worker.ready();
  return worker;
}

/** Waits until the build of `drv` in `f` has `status`. */
async function untilStatus(f: Fixture, drv: string, status: BuildStatus) {
  await eventually(async () => (await f.status(drv)) === status);
}

/**
 * Stalls one dispatcher turn (as under SIGSTOP) until thawed, so that the
 * messages sent meanwhile queue behind it and reach the server as one turn.
 */
class TurnStall {
  #armed: Promise<void> | null = null;
  #thaw = () => {};

  /** Stalls the turn of what `send` sends; returns once it is stalled. */
  async hold(send: () => Promise<void>): Promise<void> {
    this.#armed = new Promise((resolve) => this.#thaw = resolve);
    await send();
    await eventually(() => Promise.resolve(this.#armed === null));
  }

  /** Lets what was sent meanwhile reach the server's socket, then thaws. */
  async release(): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, 100));
    this.#thaw();
  }

  /** `store` with stallable batches; `inside` wraps each batch's store. */
  wrap(store: Store, inside: (tx: Store) => Store = (tx) => tx): Store {
    const stalling: Store = Object.create(store);
    stalling.batch = async (work, options) => {
      if (this.#armed !== null) {
        const waiting = this.#armed;
        this.#armed = null;
        await waiting;
      }
      return await store.batch((tx) => work(inside(tx)), options);
    };
    return stalling;
  }
}

/** Reports `drv` built at `url`, then waits for a round trip to the server. */
async function reportSuccess(
  worker: FakeWorker,
  drv: string,
  url = "http://127.0.0.1:1",
) {
  await worker.send({ type: "build-succeeded", drv, url, log: null });
  await worker.send({ type: "worker-request-info" });
  await worker.next();
}

/** Reports `drv` failed at a URL on the worker's own address. */
function reportFailure(worker: FakeWorker, drv: string): Promise<void> {
  return worker.send({
    type: "build-failed",
    drv,
    url: "http://127.0.0.1:1",
    log: null,
  });
}

/** Tells the server `worker` started `drv`; waits until the store says so. */
async function reportStarted(f: Fixture, worker: FakeWorker, drv: string) {
  await worker.send({ type: "build-started", drv, worker: worker.name });
  await untilStatus(f, drv, BuildStatus.started);
}

/**
 * Waits until the server stored worker `name`'s registration, so that what
 * follows is not served in the same turn as it.
 */
async function untilRegistered(f: Fixture, name: string) {
  await eventually(async () => (await f.store.getWorker(name)) !== null);
}

/**
 * Runs `body` on a fixture whose dispatcher turns `stall` can hold, for the
 * tests that have several messages reach the server as one turn.
 */
async function withStallableTurns(
  body: (f: Fixture, stall: TurnStall) => Promise<void>,
) {
  const stall = new TurnStall();
  await withFixture((f) => body(f, stall), {
    storeSeenByDispatcher: (store) => stall.wrap(store),
  });
}

/** The key the worker-keys tests' servers accept, by its id "farm". */
const FARM_SECRET = "0123456789abcdef-secret";
const FARM_KEYS = new Map([["farm", FARM_SECRET]]);

/**
 * Connects as a Lorica worker named `name` announcing `features`; returns
 * it with the server's answer to its lorica-hello (the test checks it).
 */
async function helloWorker(
  port: number,
  name: string,
  features: string[] = [],
): Promise<{ worker: FakeWorker; welcome: Message }> {
  const worker = await FakeWorker.connect(port, { name });
  await worker.send({ type: "lorica-hello", version: 1, features });
  return { worker, welcome: await worker.next() };
}

/** A proof for key "farm" of `secret`, bound to `nonce` and `name`. */
function farmProof(nonce: string, name: string, secret = FARM_SECRET) {
  return makeAuthProof("farm", secret, nonce, name);
}

/** Sweeper options on the fixture's store, clock and logger. */
function sweepOptions(f: Fixture, timeoutSeconds: number) {
  return {
    store: f.store,
    clock: f.clock,
    logger: f.logger,
    timeoutSeconds,
  };
}

Deno.test({
  name:
    "C01: 50 workers with binary identities each get exactly one reply; 30 builds go to 30 of them",
  async fn(t) {
    for (const builds of [0, 30]) {
      await t.step(`${builds} builds queued`, async () => {
        const f = await startFixture();
        try {
          const drvs = await f.addJobs(
            Array.from({ length: builds }, (_, i) => job(`p${i}`, i)),
          );
          const workers = await Promise.all(
            Array.from(
              { length: 50 },
              () => FakeWorker.connect(f.port, { identity: identity() }),
            ),
          );
          await Promise.all(workers.map((w) => w.ready()));
          // All requests in the same instant, then every reply counted.
          await Promise.all(
            workers.map((w) =>
              w.send({ type: "worker-request-work", name: w.name })
            ),
          );
          const replies = await Promise.all(workers.map((w) => w.next(5000)));
          const given = replies.flatMap((r) =>
            r.type === "build" ? [r.drv] : []
          );
          assert.equal(given.length, builds);
          assert.equal(
            replies.filter((r) => r.type === "no-build").length,
            50 - builds,
          );
          assert.equal(new Set(given).size, given.length, "no build twice");
          assert.deepEqual([...given].sort(), [...drvs].sort());
          // Exactly one reply: nothing more arrives for anyone.
          const extra = await Promise.allSettled(
            workers.map((w) => w.next(200)),
          );
          assert.ok(extra.every((r) => r.status === "rejected"));
          await Promise.all(workers.map((w) => w.close()));
        } finally {
          await f.close();
        }
      });
    }
  },
});

Deno.test({
  name:
    "a worker gone before its build reply could be written (its socket closed as its request was served) has the build back in the queue at once, said in the log, and handed to another worker",
  async fn() {
    // Closes the requester's socket from inside the turn serving its
    // request, and lets the server's socket see it before the turn ends:
    // the reply then cannot be written.
    let hangUp: (() => Promise<void>) | null = null;
    await withFixture(async (f) => {
      const [drv] = await f.addJobs([job("orphaned", 1)]);
      const other = await readyWorker(f.port, { name: "OTHER" });
      const killed = await readyWorker(f.port, { name: "KILLED" });
      await killed.send({ type: "worker-request-info" });
      await killed.next();
      hangUp = () => killed.close();
      await killed.send({ type: "worker-request-work", name: "KILLED" });
      // No time passes on the fixture's clock: no worker timeout.
      await eventually(
        () =>
          f.lines.some((l) =>
            l.startsWith("warn build requeued ") &&
            l.includes(` drv=${drv} `) && l.includes(" worker=KILLED ")
          ),
        "the requeue said",
      );
      assert.equal(await f.status(drv), BuildStatus.scheduled);
      const reply = await other.requestWork();
      assert.equal(reply.type === "build" && reply.drv, drv);
      await other.close();
    }, {
      storeSeenByDispatcher(store) {
        const closing: Store = Object.create(store);
        closing.batch = (work, options) =>
          store.batch(async (tx) => {
            const result = await work(tx);
            const close = hangUp;
            hangUp = null;
            if (close !== null) {
              await close();
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
            return result;
          }, options);
        return closing;
      },
    });
  },
});

Deno.test({
  name:
    "C02: workers vanishing before the reply leave the build scheduled and the server alive",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("hello", 1)]);
      const registered = await readyWorker(f.port, { name: "W1" });
      await registered.close();
      for (let i = 0; i < 200; i++) {
        const w = await FakeWorker.connect(f.port, { name: "W1" });
        await w.send({ type: "worker-request-work", name: "W1" });
        await w.close();
      }
      // Every build that could not be delivered went back to the queue.
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.scheduled,
        "build back to scheduled",
      );
      const next = await readyWorker(f.port, { name: "W1" });
      const reply = await next.requestWork();
      assert.equal(reply.type, "build");
      await next.close();
    }),
});

Deno.test({
  name:
    "C02: bogus, unknown, empty, huge and unbalanced messages are logged with the sender and dropped",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("hello", 1)]);
      const owner = await readyWorker(f.port, { name: "OWNER" });
      assert.equal((await owner.requestWork()).type, "build");
      const stranger = await FakeWorker.connect(f.port, {
        identity: identity(),
      });
      const empty = new Uint8Array(0);
      const bad: Uint8Array[][] = [
        [empty, new TextEncoder().encode("(bogus)")],
        [
          empty,
          new TextEncoder().encode(
            `(build-succeeded (drv "${drv}") (url "http://127.0.0.1:1") (log #f))`,
          ),
        ],
        [
          empty,
          new TextEncoder().encode(
            `(build-failed (drv "${drv}") (url "u") (log #f))`,
          ),
        ],
        [empty],
        [new Uint8Array(0), new Uint8Array(0)],
        [empty, new Uint8Array(DEFAULT_MAX_PAYLOAD_BYTES + 1).fill(0x28)],
        [empty, new TextEncoder().encode("(worker-request-work")],
        [new TextEncoder().encode("x"), new TextEncoder().encode("y"), empty],
      ];
      for (const frames of bad) await stranger.sendFrames(frames);
      // Still serving: a round trip after the garbage.
      await stranger.send({ type: "worker-request-info" });
      assert.equal((await stranger.next()).type, "server-info");
      const dropped = f.lines.filter((l) =>
        l.startsWith("warn message dropped") ||
        l.startsWith("warn result ignored")
      );
      assert.ok(dropped.length >= bad.length, dropped.join("\n"));
      assert.ok(
        dropped.every((l) => /peer=[0-9a-f]+/.test(l)),
        "sender logged",
      );
      assert.equal(
        await f.status(drv),
        BuildStatus.submitted,
        "owner keeps it",
      );
      // Far bigger than any payload the dispatcher decodes: the ROUTER
      // refuses it from its frame header and hangs up, maybe mid-write.
      const huge = await FakeWorker.connect(f.port, { identity: identity() });
      await huge.sendFrames([empty, new Uint8Array(10 * 1024 * 1024)])
        .catch(() => {});
      await eventually(() =>
        f.lines.some((l) =>
          l.startsWith("warn zmtp message refused ") &&
          l.includes(" peer=127.0.0.1 ") &&
          l.includes(` size=${10 * 1024 * 1024} `)
        )
      );
      await stranger.send({ type: "worker-request-info" });
      assert.equal((await stranger.next()).type, "server-info");
      await Promise.all([owner.close(), stranger.close(), huge.close()]);
    }),
});

Deno.test({
  name:
    "an empty or oversized worker name and too many systems are dropped at decoding with a warning, never stored",
  fn: () =>
    withFixture(async (f) => {
      const w = await FakeWorker.connect(f.port, { name: "SANE" });
      // Enough in one turn that a failure in the store would replay it.
      const bad = [
        ...Array.from({ length: 60 }, () => ({ ...w.info, name: "" })),
        { ...w.info, name: "N".repeat(10_000) },
        {
          ...w.info,
          name: "MANY",
          systems: Array.from({ length: 2_000 }, (_, i) => `s${i}-linux`),
        },
      ];
      for (const worker of bad) {
        await w.send({ type: "worker-ready", worker });
      }
      await w.ready();
      await w.send({ type: "worker-request-info" });
      await w.next();
      assert.deepEqual(
        (await f.store.listWorkers()).map((worker) => worker.name),
        ["SANE"],
      );
      assert.deepEqual(f.lines.filter((l) => l.startsWith("error")), []);
      const dropped = f.lines.filter((l) =>
        l.startsWith("warn message dropped") && l.includes("type=worker-ready")
      );
      assert.equal(dropped.length, bad.length);
      assert.equal(
        dropped.filter((l) => l.includes('field=name reason="Cannot'))
          .length,
        61,
      );
      assert.ok(dropped.some((l) => l.includes('\\"name\\" is empty')));
      assert.ok(dropped.some((l) => l.includes("10000 characters")));
      assert.ok(dropped.some((l) => l.includes("2000 entries")));
      assert.ok(dropped.every((l) => l.length < 400), "values clipped");
      await w.close();
    }),
});

Deno.test({
  name:
    "C03: of the requests queued during a stall only the stalled one gets a build; never two held at once; the last waits for its build to start, then gets no build",
  fn: () =>
    withStallableTurns(async (f, stall) => {
      // The server stalls on the first request's turn (as under SIGSTOP)
      // while nine more requests queue behind it.
      await f.addJobs(Array.from({ length: 20 }, (_, i) => job(`p${i}`, i)));
      const w = await readyWorker(f.port, { name: "SOLO" });
      await untilRegistered(f, "SOLO");
      await stall.hold(async () => {
        for (let i = 0; i < 10; i++) {
          await w.send({ type: "worker-request-work", name: "SOLO" });
        }
      });
      await stall.release();
      const replies = [];
      for (let i = 0; i < 9; i++) replies.push(await w.next());
      const first = replies[0];
      assert.equal(first.type, "build", "the stalled request's");
      // The others in one turn: all but the last superseded; the last
      // finds the build just handed out not started, which a Cuirass
      // worker reading its replies late is about to start: kept its, and
      // the request left unanswered, the build being the reply it reads.
      assert.ok(
        replies.slice(1).every((r) => r.type === "no-build"),
        "the superseded requests",
      );
      await assert.rejects(w.next(300), "the last request's reply withheld");
      // This worker was in step: the build not started, the reply it
      // waits for comes once the grace is over.
      await f.clock.advance(WITHHELD_REPLY_GRACE_MS);
      assert.equal((await w.next()).type, "no-build", "the withheld reply");
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn withheld reply sent") && l.includes("worker=SOLO")
        ),
        f.lines.join("\n"),
      );
      const held = (await f.store.queue({ worker: "SOLO" }, 100))
        .filter((b) => b.status === BuildStatus.submitted);
      assert.deepEqual(
        held.map((b) => b.derivation),
        [first.type === "build" ? first.drv : ""],
        "one build held at the end",
      );
      const counts = await f.store.countBuildsByStatus();
      assert.equal(counts.get(BuildStatus.scheduled), 19);
      assert.equal(
        f.lines.filter((l) => l.startsWith("info work request superseded"))
          .length,
        8,
      );
      assert.ok(
        f.lines.some((l) => l.startsWith("info work request left unanswered")),
      );
      // Asked again with the build still not started: the reply that gave
      // it was lost; the build goes back to the queue, and out again.
      const again = await w.requestWork();
      assert.equal(again.type, "build");
      assert.equal(
        (await f.store.queue({ worker: "SOLO" }, 100))
          .filter((b) => b.status === BuildStatus.submitted).length,
        1,
        "still one build held",
      );
      await w.close();
    }),
});

Deno.test({
  name:
    "C04: a multi-system worker gets a build while any of its systems has one, in priority order",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs(
        Array.from({ length: 40 }, (_, i) => job(`i${i}`, i, "i686-linux")),
      );
      const w = await readyWorker(f.port, {
        systems: ["x86_64-linux", "i686-linux"],
      });
      for (let i = 0; i < 40; i++) {
        const reply = await w.requestWork();
        assert.equal(reply.type, "build", `request ${i}`);
        await reportFailure(w, reply.type === "build" ? reply.drv : "");
      }
      assert.equal((await w.requestWork()).type, "no-build");

      const [urgent] = await f.addJobs([job("urgent", 100)], 0);
      await f.addJobs([job("later", 101, "i686-linux")], 9);
      const first = await w.requestWork();
      assert.equal(first.type === "build" && first.drv, urgent);
      await w.close();
    }),
});

Deno.test({
  name:
    "C06: builds for a system with no worker stay scheduled, and fail as failed-other past the max wait without poisoning dependents",
  fn: () =>
    withFixture(async (f) => {
      const aarch64 = Array.from(
        { length: 5 },
        (_, i) => job(`a${i}`, i, "aarch64-linux"),
      );
      const dependent = job("x-on-a0", 9, "x86_64-linux", [
        aarch64[0].derivation,
      ]);
      const [...drvs] = await f.addJobs(aarch64);
      await f.addJobs([dependent]);
      const x86 = await readyWorker(f.port);
      assert.equal((await x86.requestWork()).type, "no-build");
      const since = new SweepState();
      // A server of an hour's worker timeout (the dispatcher's too): the
      // x86 worker, silent for the 26 minutes below, stays.
      const sweep = sweepOptions(f, 3600);
      // No limit configured: they wait as long as it takes.
      await f.clock.advance(15 * 60 * 1000);
      await sweepOnce(sweep, since);
      for (const drv of drvs) {
        assert.equal(await f.status(drv), BuildStatus.scheduled);
      }
      // With a limit, the first sweep notes the gap, a later one expires.
      const limited = { ...sweep, maxWaitSeconds: 600 };
      await sweepOnce(limited, since);
      assert.equal(await f.status(drvs[0]), BuildStatus.scheduled);
      await f.clock.advance(601 * 1000);
      await sweepOnce(limited, since);
      for (const drv of drvs) {
        assert.equal(await f.status(drv), BuildStatus.failedOther);
      }
      assert.ok(
        f.lines.some((l) =>
          l.includes("no builder available for aarch64-linux")
        ),
      );
      // The dependent is not failed-dependency: it waits for its input,
      // which can still be built once a builder is back.
      assert.equal(await f.status(dependent.derivation), BuildStatus.scheduled);
      assert.equal((await x86.requestWork()).type, "no-build");
      const a0 = await f.store.getBuildByDerivation(drvs[0]);
      assert.ok((await f.store.restartBuild(a0!.id, 0)).changed);
      assert.equal(await f.status(drvs[0]), BuildStatus.scheduled);
      assert.equal(await f.status(dependent.derivation), BuildStatus.scheduled);
      await x86.close();
    }, { workerTimeoutSeconds: 3600 }),
});

Deno.test({
  name:
    "C07: a silent worker's builds return to scheduled within the timeout; late results are ignored",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("slow", 1)]);
      const a = await readyWorker(f.port, { name: "WORKER-A" });
      assert.equal((await a.requestWork()).type, "build");
      await reportStarted(f, a, drv);
      // The worker falls silent (no FIN): only its clock runs out.
      const sweep = sweepOptions(f, 120);
      await f.clock.advance(60_000);
      assert.deepEqual(await sweepOnce(sweep), []);
      assert.equal(await f.status(drv), BuildStatus.started);
      await f.clock.advance(61_000);
      assert.deepEqual(await sweepOnce(sweep), ["WORKER-A"]);
      assert.equal(await f.status(drv), BuildStatus.scheduled);

      // Another worker takes it; the old one's late success changes nothing.
      const b = await readyWorker(f.port, { name: "WORKER-B" });
      assert.equal((await b.requestWork()).type, "build");
      await reportSuccess(a, drv);
      const build = await f.store.getBuildByDerivation(drv);
      assert.equal(build?.worker, "WORKER-B");
      assert.equal(build?.status, BuildStatus.submitted);
      await Promise.all([a.close(), b.close()]);
    }),
});

Deno.test({
  name:
    "C07: a restarted worker's worker-ready requeues its builds at once; cancel works with the worker gone",
  fn: () =>
    withFixture(async (f) => {
      const [drv1, drv2] = await f.addJobs([job("one", 1), job("two", 2)]);
      const a = await readyWorker(f.port, { name: "SAME" });
      assert.equal((await a.requestWork()).type, "build");
      await a.close();
      // Same name, new process: it claims nothing.
      const again = await readyWorker(f.port, { name: "SAME" });
      await again.send({ type: "worker-request-info" });
      await again.next();
      assert.equal(await f.status(drv1), BuildStatus.scheduled);

      const reply = await again.requestWork();
      assert.equal(reply.type === "build" && reply.drv, drv1);
      await again.close();
      const id = (await f.store.getBuildByDerivation(drv1))!.id;
      assert.equal(await f.dispatcher.cancelBuild(id), true);
      assert.equal(await f.status(drv1), BuildStatus.canceled);
      assert.ok(f.lines.some((l) => l.startsWith("info cancel not sent")));
      assert.equal(await f.status(drv2), BuildStatus.scheduled);
    }),
});

Deno.test({
  name:
    "lorica-welcome tells the server's store directory to a worker that announced store-dir, and to no other",
  fn: () =>
    withFixture(async (f) => {
      const welcomeTo = async (features: string[]) => {
        const { worker, welcome } = await helloWorker(f.port, "W", features);
        await worker.close();
        return welcome;
      };
      const told = await welcomeTo(LORICA_FEATURES);
      assert.ok(told.type === "lorica-welcome", told.type);
      assert.ok(told.features.includes("store-dir"), told.features.join());
      assert.equal(told.storeDir, "/srv/farm/store");
      // An older Lorica worker: the welcome it knows, nothing appended.
      const older = await welcomeTo(
        LORICA_FEATURES.filter((f) => f !== "store-dir"),
      );
      assert.ok(older.type === "lorica-welcome", older.type);
      assert.equal(older.storeDir, undefined);
    }, { storeDir: "/srv/farm/store" }),
});

Deno.test({
  name:
    "cancelBuild() sends build-cancel to a Lorica worker; a Cuirass worker's late result is ignored",
  fn: () =>
    withFixture(async (f) => {
      const [drvL, drvC] = await f.addJobs([
        job("lorica", 1),
        job("cuirass", 2),
      ]);
      const lorica = await FakeWorker.connect(f.port, { name: "LORICA" });
      await lorica.send({
        type: "lorica-hello",
        version: 1,
        features: LORICA_FEATURES,
      });
      const welcome = await lorica.next();
      assert.equal(welcome.type, "lorica-welcome");
      await lorica.ready({ holding: [] });
      const got = await lorica.requestWork(7);
      assert.equal(got.type === "build" && got.requestId, 7);
      await lorica.send({ type: "build-started", drv: drvL, worker: "LORICA" });

      const cuirass = await readyWorker(f.port, { name: "CUIRASS" });
      await cuirass.send({ type: "worker-request-work", name: "CUIRASS" });
      const text = await cuirass.nextText();
      assert.match(
        text,
        /^\(build \(drv ".*"\) .* \(system "x86_64-linux"\)\)$/,
      );
      assert.doesNotMatch(text, /request-id/);

      await untilStatus(f, drvL, BuildStatus.started);
      const idL = (await f.store.getBuildByDerivation(drvL))!.id;
      const idC = (await f.store.getBuildByDerivation(drvC))!.id;
      await f.dispatcher.cancelBuild(idL);
      assert.deepEqual(await lorica.next(), {
        type: "build-cancel",
        drv: drvL,
      });
      await f.dispatcher.cancelBuild(idC);
      await reportSuccess(cuirass, drvC);
      await f.fetcher.idle();
      assert.equal(await f.status(drvC), BuildStatus.canceled);
      await Promise.all([lorica.close(), cuirass.close()]);
    }),
});

Deno.test({
  name:
    "worker keys: unknown and Cuirass workers are refused, a worker with a valid proof builds",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs([job("secret", 1)]);
      const plain = await readyWorker(f.port, { name: "PLAIN" });
      await plain.send({ type: "worker-ping", worker: plain.info });
      assert.equal((await plain.requestWork()).type, "no-build");
      assert.equal(await f.store.getWorker("PLAIN"), null);

      const { worker: forger, welcome: w1 } = await helloWorker(
        f.port,
        "FORGER",
      );
      assert.ok(w1.type === "lorica-welcome" && w1.features.includes("auth"));
      await forger.ready({
        auth: await farmProof(w1.nonce, "FORGER", "wrong-secret-0000000"),
      });
      assert.equal((await forger.requestWork(1)).type, "no-build");

      const { worker: good, welcome: w2 } = await helloWorker(f.port, "GOOD");
      assert.equal(w2.type, "lorica-welcome");
      if (w2.type !== "lorica-welcome") return;
      await good.ready({ auth: await farmProof(w2.nonce, "GOOD") });
      assert.equal((await good.requestWork(1)).type, "build");
      // A proof is bound to its connection's nonce: replaying it fails.
      const { worker: replay } = await helloWorker(f.port, "GOOD");
      await replay.ready({ auth: await farmProof(w2.nonce, "GOOD") });
      assert.equal((await replay.requestWork(2)).type, "no-build");
      const refused = f.lines.filter((l) =>
        l.startsWith("warn worker refused")
      );
      assert.equal(refused.length, 3, refused.join("\n"));
      await Promise.all([plain, forger, good, replay].map((w) => w.close()));
    }, { workerKeys: FARM_KEYS }),
});

Deno.test({
  name:
    "worker keys: a Lorica worker asking for work unauthenticated (its registration lost) is asked once to register again, and then builds",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs([job("after-probe", 1)]);
      const { worker: w, welcome } = await helloWorker(f.port, "LOST");
      assert.equal(welcome.type, "lorica-welcome");
      if (welcome.type !== "lorica-welcome") return;
      // Its worker-ready never arrived (a turn that failed whole): it
      // believes itself registered and asks.
      assert.equal((await w.requestWork(1)).type, "no-build");
      assert.equal(await w.nextText(), "", "a probe after the refusal");
      // Asked again before registering: refused, and no second probe.
      assert.equal((await w.requestWork(2)).type, "no-build");
      await assert.rejects(w.nextText(300), "no probe at each request");
      // The probe makes a Lorica worker register; then it builds.
      await w.ready({ auth: await farmProof(welcome.nonce, "LOST") });
      assert.equal((await w.requestWork(3)).type, "build");
      assert.equal(
        f.lines.filter((l) =>
          l.startsWith("info worker asked to register") &&
          l.includes("worker=LOST")
        ).length,
        1,
        f.lines.join("\n"),
      );
      await w.close();
    }, { workerKeys: FARM_KEYS }),
});

Deno.test({
  name:
    "worker keys: a refused worker's work requests are a warning once a connection, then debug lines, until it authenticates",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs([job("guarded", 1)]);
      const refusals = (level: string) =>
        f.lines.filter((l) =>
          l.startsWith(`${level} work refused `) && l.includes("worker=DEAF")
        ).length;
      const { worker: w, welcome } = await helloWorker(f.port, "DEAF");
      assert.ok(welcome.type === "lorica-welcome");
      await w.ready({
        auth: await farmProof("", "DEAF", "wrong-secret-0000000"),
      });
      for (let request = 1; request <= 4; request++) {
        assert.equal((await w.requestWork(request)).type, "no-build");
        // The one probe to register again follows the first refusal.
        if (request === 1) assert.equal(await w.nextText(), "");
      }
      assert.equal(refusals("warn"), 1, f.lines.join("\n"));
      assert.equal(refusals("debug"), 3, f.lines.join("\n"));
      // Once authenticated, it is served.
      await w.ready({ auth: await farmProof(welcome.nonce, "DEAF") });
      assert.equal((await w.requestWork(5)).type, "build");
      await w.close();
    }, { workerKeys: FARM_KEYS }),
});

Deno.test({
  name:
    "worker keys: a Lorica worker that asked for it hears why its registration was refused; one that did not (an older Lorica) hears nothing new",
  fn: () =>
    withFixture(async (f) => {
      const register = async (name: string, features: string[]) => {
        const { worker: w, welcome } = await helloWorker(
          f.port,
          name,
          features,
        );
        assert.ok(
          welcome.type === "lorica-welcome" &&
            welcome.features.includes("worker-refused"),
        );
        await w.ready({
          auth: await farmProof(welcome.nonce, name, "wrong-secret-0000000"),
        });
        return w;
      };
      const asked = await register("ASKED", ["worker-refused"]);
      assert.deepEqual(await asked.next(), {
        type: "worker-refused",
        reason: 'bad proof for key "farm"',
      });
      // An older Lorica worker: its registration goes unanswered, as a
      // Cuirass server's do; the next thing it reads is its reply.
      const older = await register("OLDER", []);
      assert.equal((await older.requestWork(1)).type, "no-build");
      await Promise.all([asked.close(), older.close()]);
    }, { workerKeys: FARM_KEYS }),
});

/**
 * Registers `name` with a proof the server takes (when it has keys), after
 * a hello offering `features`, and says what the server sends next: its
 * answer to the registration if it gave one, else the reply to a work
 * request.
 */
async function nextAfterAcceptedReady(
  f: Fixture,
  name: string,
  features: string[],
): Promise<Message["type"]> {
  const { worker, welcome } = await helloWorker(f.port, name, features);
  assert.ok(welcome.type === "lorica-welcome");
  await worker.ready({ auth: await farmProof(welcome.nonce, name) });
  await worker.send({ type: "worker-request-work", name, requestId: 1 });
  const next = (await worker.next()).type;
  await worker.close();
  return next;
}

Deno.test({
  name:
    "worker keys: a Lorica worker that asked for it hears its registration accepted at once; one that did not (an older Lorica) hears nothing new",
  fn: () =>
    withFixture(async (f) => {
      assert.equal(
        await nextAfterAcceptedReady(f, "ASKED", [
          "worker-refused",
          "worker-accepted",
        ]),
        "worker-accepted",
      );
      assert.equal(
        await nextAfterAcceptedReady(f, "OLDER", ["worker-refused"]),
        "no-build",
      );
    }, { workerKeys: FARM_KEYS }),
});

Deno.test({
  name:
    "without worker keys no registration can be refused, and none is said accepted, even to a Lorica worker that asked",
  fn: () =>
    withFixture(async (f) => {
      assert.equal(
        await nextAfterAcceptedReady(f, "ASKED", ["worker-accepted"]),
        "no-build",
      );
    }),
});

Deno.test({
  name:
    "a remote worker named as a local-mode server's holder (local@HOST) is refused, and its pings neither renew nor take over that server's row",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs([job("held", 1), job("more", 2)]);
      const holder = {
        name: "local@box",
        address: "pid=7 start=1 run=ab.1 host=box pid:[1]",
        machine: "box",
        systems: ["x86_64-linux"],
        lastSeen: 5,
        timeoutSeconds: 120,
      };
      await f.store.upsertWorker(holder);
      const w = await FakeWorker.connect(f.port, { name: "local@box" });
      // Held by the local-mode server; then the impostor.
      const held = (await f.store.popBuild("local@box", ["x86_64-linux"], 6))!;
      await w.ready();
      await w.send({ type: "worker-ping", worker: w.info });
      await w.send({
        type: "build-started",
        drv: held.derivation,
        worker: "local@box",
      });
      assert.equal((await w.requestWork()).type, "no-build");
      assert.deepEqual(await f.store.getWorker("local@box"), holder);
      assert.equal(
        (await f.store.getBuild(held.id))!.status,
        BuildStatus.submitted,
      );
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn worker refused ") &&
          l.includes("worker=local@box")
        ),
        f.lines.join("\n"),
      );
      await w.close();
    }),
});

Deno.test({
  name: "a result is fetched only from an http URL of the worker's own address",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("url", 1)]);
      const w = await readyWorker(f.port, { name: "URLW" });
      await w.requestWork();
      await reportSuccess(w, drv, "http://169.254.169.254/latest");
      assert.equal(await f.status(drv), BuildStatus.scheduled);
      assert.ok(
        f.lines.some((l) => l.includes("publish URL is not an http URL")),
      );
      await w.close();
    }),
});

Deno.test({
  name:
    "an address a worker declares but does not connect from is not recorded, and no result is fetched from it",
  async fn(t) {
    for (const via of ["worker-ready", "worker-ping"] as const) {
      await t.step(via, () =>
        withFixture(async (f) => {
          const [drv] = await f.addJobs([job("declared", 1)]);
          const fetched: string[] = [];
          const enqueue = f.fetcher.enqueue.bind(f.fetcher);
          f.fetcher.enqueue = (request) => {
            fetched.push(request.url);
            return enqueue(request);
          };
          const w = await FakeWorker.connect(f.port, { name: "LIAR" });
          // Connected from 127.0.0.1, it claims another host.
          const elsewhere = { ...w.info, address: "127.0.0.2" };
          if (via === "worker-ready") {
            await w.send({ type: "worker-ready", worker: elsewhere });
          } else {
            await w.ready();
            await w.send({ type: "worker-ping", worker: elsewhere });
          }
          assert.equal((await w.requestWork()).type, "build");
          assert.equal((await f.store.getWorker("LIAR"))?.address, "127.0.0.1");
          await w.send({ type: "build-started", drv, worker: "LIAR" });
          await reportSuccess(w, drv, "http://127.0.0.2:5558");
          assert.deepEqual(fetched, []);
          assert.equal(await f.status(drv), BuildStatus.scheduled);
          assert.ok(
            f.lines.some((l) =>
              l.includes("declared address ignored") &&
              l.includes("declared=127.0.0.2") &&
              l.includes("recorded=127.0.0.1")
            ),
            f.lines.join("\n"),
          );
          await w.close();
        }));
    }
  },
});

Deno.test({
  name:
    "a worker back from another address reports with the URL of the address it registered from",
  async fn() {
    // Its first connection is seen at 127.0.0.2 (on loopback, rewritten by
    // the fixture); the second one, after a reconnect, at 127.0.0.1.
    const first = identity();
    const peerAddresses = new Map([[routingKey(first), "127.0.0.2"]]);
    await withFixture(async (f) => {
      const [drv] = await f.addJobs([job("moved", 1)]);
      const before = await FakeWorker.connect(f.port, {
        name: "MOVER",
        identity: first,
      });
      await before.send({
        type: "worker-ready",
        worker: { ...before.info, address: "127.0.0.2" },
      });
      await before.send({ type: "worker-request-info" });
      await before.next();
      await before.close();
      const after = await FakeWorker.connect(f.port, { name: "MOVER" });
      // Like Cuirass's, its ping still carries its first address.
      await after.send({
        type: "worker-ping",
        worker: { ...after.info, address: "127.0.0.2" },
      });
      const reply = await after.requestWork();
      assert.equal(reply.type === "build" && reply.drv, drv);
      assert.equal((await f.store.getWorker("MOVER"))?.address, "127.0.0.2");
      await after.send({ type: "build-started", drv, worker: "MOVER" });
      await reportSuccess(after, drv, "http://127.0.0.2:5558");
      await untilStatus(f, drv, BuildStatus.succeeded);
      await after.close();
    }, { peerAddresses });
  },
});

/** Sends `message`, then waits for a round trip to the server. */
async function sendAndSync(worker: FakeWorker, message: Message) {
  await worker.send(message);
  await worker.send({ type: "worker-request-info" });
  await worker.next();
}

Deno.test({
  name:
    "without worker keys, pings and starts naming a worker count only from its connection or its address",
  async fn() {
    // All on 127.0.0.1; the fixture shows the dispatcher other addresses.
    const stranger = identity();
    const moved = identity();
    const peerAddresses = new Map([
      [routingKey(stranger), "127.0.0.3"],
      [routingKey(moved), "127.0.0.4"],
    ]);
    await withFixture(async (f) => {
      const [drv] = await f.addJobs([job("pinged", 1)]);
      const real = await readyWorker(f.port, { name: "REAL" });
      assert.equal((await real.requestWork()).type, "build");
      const other = await FakeWorker.connect(f.port, {
        name: "REAL",
        identity: stranger,
      });
      // Another host names REAL, declaring its own address (which it may).
      await sendAndSync(other, {
        type: "worker-ping",
        worker: {
          name: "REAL",
          address: "127.0.0.3",
          machine: "elsewhere",
          systems: ["aarch64-linux"],
          lastSeen: 0,
        },
        diskLow: true,
      });
      await sendAndSync(other, {
        type: "build-started",
        drv,
        worker: "REAL",
      });
      const kept = await f.store.getWorker("REAL");
      assert.equal(kept?.address, "127.0.0.1");
      assert.equal(kept?.machine, "test");
      assert.deepEqual(kept?.systems, ["x86_64-linux"]);
      assert.equal(f.dispatcher.diskLow("REAL"), false);
      assert.equal(await f.status(drv), BuildStatus.submitted);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn ping ignored") && l.includes("worker=REAL") &&
          l.includes("address=127.0.0.3")
        ),
        f.lines.join("\n"),
      );
      assert.ok(f.lines.some((l) => l.startsWith("warn start ignored")));

      // REAL's own pings come on a second connection from its address.
      const pinger = await FakeWorker.connect(f.port, { name: "REAL" });
      await sendAndSync(pinger, {
        type: "worker-ping",
        worker: pinger.info,
        diskLow: true,
      });
      assert.equal(f.dispatcher.diskLow("REAL"), true);

      // A restarted REAL registers from elsewhere: the name follows it.
      const restarted = await FakeWorker.connect(f.port, {
        name: "REAL",
        identity: moved,
      });
      await sendAndSync(restarted, {
        type: "worker-ready",
        worker: { ...restarted.info, address: "127.0.0.4" },
      });
      await sendAndSync(pinger, { type: "worker-ping", worker: pinger.info });
      assert.equal((await f.store.getWorker("REAL"))?.address, "127.0.0.4");
      await Promise.all(
        [real, other, pinger, restarted].map((w) => w.close()),
      );
    }, { peerAddresses });
  },
});

Deno.test({
  name:
    "a result about a build another worker holds changes nothing, even with a refused URL",
  fn: () =>
    withFixture(async (f) => {
      const [drv] = await f.addJobs([job("held", 1)]);
      const owner = await readyWorker(f.port, { name: "OWNER" });
      assert.equal((await owner.requestWork()).type, "build");
      await reportStarted(f, owner, drv);
      // Registered under its own name, it reports on the owner's build
      // with a URL that is not on its address, then with one that is.
      const other = await readyWorker(f.port, { name: "OTHER" });
      await reportSuccess(other, drv, "http://127.0.0.2:1");
      await reportSuccess(other, drv, "http://127.0.0.1:1");
      await reportFailure(other, drv);
      await reportSuccess(other, drv, "http://127.0.0.1:1");
      const build = await f.store.getBuildByDerivation(drv);
      assert.equal(build?.status, BuildStatus.started);
      assert.equal(build?.worker, "OWNER");
      assert.equal(f.fetcher.has(drv, "OTHER"), false, "no fetch for OTHER");
      const ignored = f.lines.filter((l) =>
        l.startsWith("warn result ignored") && l.includes("worker=OTHER")
      );
      assert.equal(ignored.length, 4, f.lines.join("\n"));
      assert.ok(ignored.every((l) => l.includes("does not hold")), ignored[0]);
      // The owner's own result still counts.
      await reportSuccess(owner, drv);
      await untilStatus(f, drv, BuildStatus.succeeded);
      assert.equal((await f.store.getBuildByDerivation(drv))?.worker, "OWNER");
      await Promise.all([owner.close(), other.close()]);
    }),
});

Deno.test({
  name:
    "a result for a build another process canceled or requeued meanwhile changes nothing",
  fn: () =>
    withFixture(async (f) => {
      const [canceled, requeued] = await f.addJobs([
        job("canceled", 1),
        job("requeued", 2),
      ]);
      const worker = await readyWorker(f.port, { name: "LATE" });
      for (const drv of [canceled, requeued]) {
        assert.equal((await worker.requestWork()).type, "build");
        await reportStarted(f, worker, drv);
        // Behind this dispatcher's back, as a web front end or a sweeper
        // in another process does it on a shared database.
        if (drv === canceled) {
          const build = await f.store.getBuildByDerivation(drv);
          await f.store.cancelBuild(build!.id, 50);
        } else {
          await f.store.requeueBuild(drv, 50);
        }
        await reportFailure(worker, drv);
        await reportSuccess(worker, drv);
      }
      assert.equal(await f.status(canceled), BuildStatus.canceled);
      assert.equal(await f.status(requeued), BuildStatus.scheduled);
      await f.fetcher.idle();
      assert.equal(await f.status(canceled), BuildStatus.canceled);
      assert.equal(await f.status(requeued), BuildStatus.scheduled);
      await worker.close();
    }),
});

Deno.test({
  name:
    "a connection cannot take a running build away by asking in its worker's name",
  async fn() {
    await withFixture(async (f) => {
      const [drv, other] = await f.addJobs([job("busy", 1), job("next", 2)]);
      const owner = await readyWorker(f.port, { name: "CCCCCCCC" });
      assert.equal((await owner.requestWork()).type, "build");
      await reportStarted(f, owner, drv);
      // Another connection, never registered, borrows the name.
      const intruder = await FakeWorker.connect(f.port, { name: "CCCCCCCC" });
      assert.equal((await intruder.requestWork()).type, "no-build");
      assert.equal(await f.status(drv), BuildStatus.started);
      assert.equal(await f.status(other), BuildStatus.scheduled);
      assert.ok(f.lines.some((l) => l.includes("work refused")));
      // Once the owner's build is done, the name's requests are served.
      await reportSuccess(owner, drv);
      await untilStatus(f, drv, BuildStatus.succeeded);
      assert.equal((await intruder.requestWork()).type, "build");
      await Promise.all([owner.close(), intruder.close()]);
    });
  },
});

Deno.test({
  name:
    "a turn's work requests and starts take one store call each; of two connections asking in one name in a turn only the first gets a build",
  async fn() {
    // The server stalls on one turn while the next one's messages queue.
    const stall = new TurnStall();
    const popCalls: number[] = [];
    const startCalls: number[] = [];
    await withFixture(async (f) => {
      const drvs = await f.addJobs(
        Array.from({ length: 10 }, (_, i) => job(`t${i}`, i)),
      );
      const owner = await readyWorker(f.port, { name: "TWIN" });
      const [first, second, third] = await Promise.all(
        [1, 2, 3].map((i) => readyWorker(f.port, { name: `OTHER${i}` })),
      );
      const started = await readyWorker(f.port, { name: "STARTER" });
      const startedDrv = (await started.requestWork()) as { drv: string };
      await untilRegistered(f, "OTHER3");
      popCalls.length = 0;
      await stall.hold(() =>
        first.send({ type: "worker-request-work", name: "OTHER1" })
      );
      const intruder = await FakeWorker.connect(f.port, { name: "TWIN" });
      await owner.send({ type: "worker-request-work", name: "TWIN" });
      await intruder.send({ type: "worker-request-work", name: "TWIN" });
      await second.send({ type: "worker-request-work", name: "OTHER2" });
      await started.send({
        type: "build-started",
        drv: startedDrv.drv,
        worker: "STARTER",
      });
      await third.send({ type: "worker-request-work", name: "OTHER3" });
      await stall.release();
      assert.equal((await first.next()).type, "build");
      assert.equal((await owner.next()).type, "build");
      assert.equal((await intruder.next()).type, "no-build");
      assert.equal((await second.next()).type, "build");
      assert.equal((await third.next()).type, "build");
      assert.deepEqual(popCalls, [1, 3], "the stalled turn's, the next's");
      assert.deepEqual(startCalls, [1]);
      await untilStatus(f, startedDrv.drv, BuildStatus.started);
      const twin = (await f.store.queue({ worker: "TWIN" }, 10))
        .filter((b) => b.worker === "TWIN");
      assert.equal(twin.length, 1, "one build for the name");
      assert.ok(f.lines.some((l) => l.includes("work refused")));
      const counts = await f.store.countBuildsByStatus();
      assert.equal(counts.get(BuildStatus.scheduled), drvs.length - 5);
      await Promise.all(
        [owner, intruder, first, second, third, started].map((w) => w.close()),
      );
    }, {
      storeSeenByDispatcher: (store) =>
        stall.wrap(store, (tx) => {
          const spy: Store = Object.create(tx);
          spy.popBuilds = (requests, now, options) => {
            popCalls.push(requests.length);
            return tx.popBuilds(requests, now, options);
          };
          spy.markStartedMany = (starts, now) => {
            startCalls.push(starts.length);
            return tx.markStartedMany(starts, now);
          };
          return spy;
        }),
    });
  },
});

Deno.test({
  name:
    "in one turn, an old session's request, then the new session's registration and request: one build for the name",
  fn: () =>
    withStallableTurns(async (f, stall) => {
      await f.addJobs(Array.from({ length: 5 }, (_, i) => job(`r${i}`, i)));
      const old = await readyWorker(f.port, { name: "W" });
      const other = await readyWorker(f.port, { name: "OTHER" });
      await untilRegistered(f, "OTHER");
      await stall.hold(() => other.send({ type: "worker-request-info" }));
      const restarted = await FakeWorker.connect(f.port, { name: "W" });
      await old.send({ type: "worker-request-work", name: "W" });
      await restarted.ready();
      await restarted.send({ type: "worker-request-work", name: "W" });
      await stall.release();
      await other.next();
      assert.equal((await old.next()).type, "no-build");
      assert.equal((await restarted.next()).type, "build");
      const held = (await f.store.queue({ worker: "W" }, 10))
        .filter((b) => b.worker === "W");
      assert.equal(held.length, 1, "one build for the name");
      assert.ok(
        f.lines.some((l) => l.startsWith("info work request withdrawn")),
      );
      await Promise.all([old, other, restarted].map((w) => w.close()));
    }),
});

/**
 * Hands worker W one build, then sends its start and `result` so that both
 * reach the server in one turn; returns once that turn was served.
 */
async function startAndResultInOneTurn(
  f: Fixture,
  stall: TurnStall,
  result: "build-succeeded" | "build-failed",
  beforeTurn: () => void = () => {},
): Promise<{ drv: string; close(): Promise<unknown> }> {
  const [drv] = await f.addJobs([job("quick", 1)]);
  const w = await readyWorker(f.port, { name: "W" });
  const other = await readyWorker(f.port, { name: "OTHER" });
  assert.equal((await w.requestWork()).type, "build");
  beforeTurn();
  await stall.hold(() => other.send({ type: "worker-request-info" }));
  await w.send({ type: "build-started", drv, worker: "W" });
  await w.send({ type: result, drv, url: "http://127.0.0.1:1", log: null });
  await stall.release();
  await other.next();
  return { drv, close: () => Promise.all([w.close(), other.close()]) };
}

Deno.test({
  name:
    "a start and the failure after it in one turn: the start is recorded first, its log named",
  fn: () =>
    withStallableTurns(async (f, stall) => {
      const turn = await startAndResultInOneTurn(f, stall, "build-failed");
      const build = await f.store.getBuildByDerivation(turn.drv);
      assert.equal(build?.status, BuildStatus.failed);
      assert.match(build?.log ?? "", /\.log\.gz$/);
      assert.ok(!f.lines.some((l) => l.includes("start ignored")));
      await turn.close();
    }),
});

Deno.test({
  name:
    "a start and the success after it in one turn: the fetch begins once the start is committed",
  fn: () =>
    withStallableTurns(async (f, stall) => {
      // What the store holds of the build when its fetch is asked for.
      const seen: Promise<Build | null>[] = [];
      const turn = await startAndResultInOneTurn(
        f,
        stall,
        "build-succeeded",
        () => {
          const enqueue = f.fetcher.enqueue.bind(f.fetcher);
          f.fetcher.enqueue = (request) => {
            seen.push(f.store.getBuildByDerivation(request.drv));
            return enqueue(request);
          };
        },
      );
      await untilStatus(f, turn.drv, BuildStatus.succeeded);
      assert.equal(seen.length, 1);
      const atFetch = await seen[0];
      assert.equal(atFetch?.status, BuildStatus.started);
      assert.match(atFetch?.log ?? "", /\.log\.gz$/);
      assert.ok(!f.lines.some((l) => l.includes("start ignored")));
      await turn.close();
    }),
});

Deno.test({
  name:
    "a turn whose writes cannot be committed hands nothing out (its work request is answered no-build); the build stays scheduled and the next turn serves it",
  async fn() {
    let failCommits = false;
    await withFixture(async (f) => {
      const [drv] = await f.addJobs([job("hello", 1)]);
      const worker = await readyWorker(f.port, { name: "W1" });
      await untilRegistered(f, "W1");
      failCommits = true;
      await worker.send({ type: "worker-request-work", name: "W1" });
      assert.deepEqual(await worker.next(), { type: "no-build" });
      assert.equal(await f.status(drv), BuildStatus.scheduled);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("error turn not committed messages=1") &&
          l.includes("disk I/O error")
        ),
      );
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn work requests answered requests=1 reply=no-build")
        ),
        f.lines.join("\n"),
      );
      failCommits = false;
      const reply = await worker.requestWork();
      assert.equal(reply.type, "build");
      assert.equal(await f.status(drv), BuildStatus.submitted);
      await worker.close();
    }, {
      storeSeenByDispatcher(store) {
        const faulty: Store = Object.create(store);
        faulty.batch = (work) =>
          failCommits
            ? store.batch(async (tx) => {
              await work(tx);
              throw new Error("disk I/O error");
            })
            : store.batch(work);
        return faulty;
      },
    });
  },
});

Deno.test({
  name:
    "a burst of requests from 20 workers is served in one turn, each worker exactly once",
  fn: () =>
    withFixture(async (f) => {
      const drvs = await f.addJobs(
        Array.from({ length: 20 }, (_, i) => job(`p${i}`, i)),
      );
      const workers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          readyWorker(f.port, {
            name: `B${i}`,
          })),
      );
      // The first turn is slow to commit: meanwhile every other request
      // arrives, and the next turn must take them all.
      let turns = 0;
      const batch = f.store.batch.bind(f.store);
      f.store.batch = async (work) => {
        if (++turns === 1) await new Promise((r) => setTimeout(r, 300));
        return await batch(work);
      };
      await Promise.all(
        workers.map((w) =>
          w.send({ type: "worker-request-work", name: w.name })
        ),
      );
      const replies = await Promise.all(workers.map((w) => w.next()));
      const given = replies.flatMap((r) => r.type === "build" ? [r.drv] : []);
      assert.deepEqual(given.sort(), [...drvs].sort());
      assert.ok(turns <= 2, `${turns} turns for 20 requests`);
      await Promise.all(workers.map((w) => w.close()));
    }),
});

Deno.test({
  name:
    "a worker that reported its one build asks again without a held-builds query; a lost reply is still requeued, at the second request after it",
  async fn() {
    let heldQueries = 0;
    await withFixture(async (f) => {
      await f.addJobs(
        Array.from({ length: 4 }, (_, i) => job(`h${i}`, i)),
      );
      const w = await readyWorker(f.port, { name: "HELD" });
      await untilRegistered(f, "HELD");
      const afterReady = heldQueries;
      for (const kind of ["build-succeeded", "build-failed"] as const) {
        const reply = await w.requestWork();
        assert.equal(reply.type, "build");
        const drv = reply.type === "build" ? reply.drv : "";
        await w.send({ type: "build-started", drv, worker: "HELD" });
        if (kind === "build-succeeded") await reportSuccess(w, drv);
        else await reportFailure(w, drv);
      }
      assert.equal(heldQueries, afterReady, "no query while nothing is held");

      // A reply lost on the way. The next request is left unanswered and
      // the build stays held (a Cuirass worker may read its replies one
      // request late), until the grace is over; the one after puts it back
      // (and, the best in the queue, it is the one handed out again).
      const lost = await w.requestWork();
      assert.equal(lost.type, "build");
      await w.send({ type: "worker-request-work", name: "HELD" });
      await eventually(() =>
        f.lines.some((l) => l.startsWith("info work request left unanswered"))
      );
      await f.clock.advance(WITHHELD_REPLY_GRACE_MS);
      assert.equal((await w.next()).type, "no-build");
      const next = await w.requestWork();
      assert.equal(heldQueries, afterReady + 1);
      assert.equal(next.type, "build");
      const held = await f.store.queue({ worker: "HELD" }, 10);
      assert.deepEqual(
        held.map((build) => [build.derivation, build.status]),
        [[next.type === "build" ? next.drv : "", BuildStatus.submitted]],
      );
      assert.ok(
        f.lines.some((line) =>
          line.startsWith("warn build requeued") && line.includes("worker=HELD")
        ),
      );
      await w.close();
    }, {
      storeSeenByDispatcher(store) {
        const counting = (inner: Store): Store => {
          const seen: Store = Object.create(inner);
          seen.queue = (filter, limit) => {
            if (filter.worker !== undefined) heldQueries++;
            return inner.queue(filter, limit);
          };
          seen.batch = (work, options) =>
            inner.batch((tx) => work(counting(tx)), options);
          return seen;
        };
        return counting(store);
      },
    });
  },
});

Deno.test({
  name:
    "a build restarted while its first result is still being fetched is fetched from its new worker, never left started",
  async fn() {
    let published = false;
    await withFixture(async (f) => {
      const [a] = await f.addJobs([job("a", 1), job("b", 2)]);
      const w1 = await readyWorker(f.port, { name: "W1" });
      const first = await w1.requestWork();
      assert.equal(first.type === "build" && first.drv, a);
      await w1.send({ type: "build-started", drv: a, worker: "W1" });
      await reportSuccess(w1, a);
      // W1's outputs never show up; meanwhile the admin restarts the build.
      await eventually(() => Promise.resolve(f.fetcher.has(a, "W1")));
      const id = (await f.store.getBuildByDerivation(a))!.id;
      assert.ok(await f.dispatcher.restartBuild(id));

      const w2 = await readyWorker(f.port, { name: "W2" });
      const again = await w2.requestWork();
      assert.equal(again.type === "build" && again.drv, a);
      await w2.send({ type: "build-started", drv: a, worker: "W2" });
      await reportSuccess(w2, a);
      // W2's result replaces W1's stale fetch.
      assert.ok(f.fetcher.has(a, "W2"));
      const next = await w2.requestWork();
      assert.equal(next.type, "build", "W2 holds nothing but its next build");

      published = true;
      await f.clock.advance(60_000);
      await untilStatus(f, a, BuildStatus.succeeded);
      assert.equal((await f.store.getBuildByDerivation(a))?.worker, "W2");
      await w1.close();
      await w2.close();
    }, {
      fetch: () =>
        Promise.resolve(new Response("", { status: published ? 200 : 404 })),
    });
  },
});

/**
 * A peer that completes the ZMTP handshake by hand, then sends `message`
 * as fast as the server takes it and reads nothing: its replies fill its
 * socket. `done` settles once the server hangs up (or after `copies`
 * messages); `close()` hangs up from this side.
 */
async function floodWithoutReading(
  port: number,
  message: Message,
  copies: number,
): Promise<{ done: Promise<void>; close(): void }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encodeGreeting());
  await conn.write(
    encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
  );
  const one = encodeFrames([new Uint8Array(0), encodeMessage(message)]);
  const burst = new Uint8Array(one.length * 10_000);
  for (let i = 0; i < 10_000; i++) burst.set(one, i * one.length);
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const done = (async () => {
    try {
      for (let sent = 0; sent < copies; sent += 10_000) {
        await conn.write(burst);
      }
    } catch {
      // The server dropped this peer: what the test wants.
    } finally {
      close();
    }
  })();
  return { done, close };
}

/** Waits (at most 30 s) until `count()` stays the same for `ms`. */
async function untilStill(count: () => number, ms: number): Promise<void> {
  const end = Date.now() + 30_000;
  let last = -1;
  while (Date.now() < end && count() !== last) {
    last = count();
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
}

Deno.test({
  name:
    "a peer that reads none of its replies is dropped; the other workers' replies do not wait for it",
  async fn() {
    await withFixture(async (f) => {
      const honest = await readyWorker(f.port, { name: "HONEST" });
      const flood = await floodWithoutReading(
        f.port,
        { type: "worker-request-info" },
        2_000_000,
      );
      try {
        // Once its replies fill the socket, the server either drops it or
        // stops serving anything while it waits: the count of messages
        // handled then stops growing.
        await untilStill(() => f.lines.length, 500);
        const asked = Date.now();
        await honest.send({ type: "worker-request-info" });
        // Without a limit, the server waited for the flooder's socket for
        // its 60 s send timeout before answering anyone else.
        assert.equal((await honest.next(10_000)).type, "server-info");
        assert.ok(Date.now() - asked < 10_000);
        await flood.done;
      } finally {
        flood.close();
      }
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn zmtp slow peer dropped") && / unsent=\d+ /.test(l)
        ),
        "the flooder was dropped",
      );
      await honest.close();
    });
  },
});

Deno.test({
  name:
    "the dispatcher forgets a worker name once its connections closed: worker restarts (new session names) do not pile up",
  fn: () =>
    withFixture(async (f) => {
      const drvs = await f.addJobs(
        Array.from({ length: 3 }, (_, i) => job(`p${i}`, i)),
      );
      // Three worker processes come and go, each with its own name: one
      // builds and reports, one dies holding a build, one is short of disk.
      for (const [i, name] of ["GONE-A", "GONE-B", "GONE-C"].entries()) {
        const worker = await readyWorker(f.port, { name });
        const reply = await worker.requestWork();
        assert.equal(reply.type === "build" && reply.drv, drvs[i]);
        if (i === 0) await reportSuccess(worker, drvs[i]);
        if (i === 2) {
          await sendAndSync(worker, {
            type: "worker-ping",
            worker: worker.info,
            diskLow: true,
          });
          assert.equal(f.dispatcher.diskLow(name), true);
        }
        assert.ok(f.dispatcher.namesRemembered > 0);
        await worker.close();
      }
      // A live worker stays remembered.
      const live = await readyWorker(f.port, { name: "LIVE" });
      assert.equal((await live.requestWork()).type, "no-build");
      await eventually(() =>
        Promise.resolve(f.dispatcher.namesRemembered === 1)
      );
      assert.equal(f.dispatcher.diskLow("GONE-C"), false);
      await live.close();
      await eventually(() =>
        Promise.resolve(f.dispatcher.namesRemembered === 0)
      );
    }),
});

Deno.test({
  name:
    "a Cuirass worker (libzmq) that registers and leaves while the turns are busy is forgotten once its message is handled" +
    (libzmqMissing === undefined ? "" : ` (skipped: ${libzmqMissing})`),
  ignore: libzmqMissing !== undefined,
  fn: () =>
    withStallableTurns(async (f, stall) => {
      const python = await LibzmqPeer.start();
      try {
        const busy = await FakeWorker.connect(f.port);
        await python.must({
          op: "socket",
          name: "w",
          type: "DEALER",
          connect: `tcp://127.0.0.1:${f.port}`,
        });
        assert.deepEqual(
          (await python.must({ op: "recv", name: "w" })).frames,
          [
            "",
          ],
        );
        await stall.hold(() => busy.send({ type: "worker-request-info" }));
        // Its registration waits behind the stalled turn; the worker dies
        // meanwhile, and the server sees its connection close.
        const ready = '(worker-ready (worker (name "BRIEF001") ' +
          '(address "127.0.0.1") (machine "m") (systems ("x86_64-linux")) ' +
          "(last-seen 0)))";
        await python.must({
          op: "send",
          name: "w",
          frames: ["", toHex(new TextEncoder().encode(ready))],
        });
        await python.must({ op: "sleep", ms: 200 });
        await python.must({ op: "close", name: "w" });
        await python.must({ op: "sleep", ms: 300 });
        await stall.release();
        await eventually(
          () =>
            f.lines.some((l) =>
              l.startsWith("info worker ready worker=BRIEF001 ")
            ),
          "the registration handled",
        );
        assert.equal((await busy.next()).type, "server-info");
        // Nothing is kept of a connection that is gone, nor of its name.
        await eventually(
          () => Promise.resolve(f.dispatcher.namesRemembered === 0),
          "the departed worker forgotten",
        );
        await busy.close();
      } finally {
        await python.stop();
      }
    }),
});

/**
 * The store as a dispatcher sees PostgreSQL restarting: while `down`, every
 * batch fails as npm:postgres fails a query it cannot connect for.
 */
class DatabaseOutage {
  down = false;
  batches = 0;

  wrap(store: Store): Store {
    const wrapped: Store = Object.create(store);
    wrapped.batch = (work, options) => {
      this.batches++;
      if (!this.down) return store.batch(work, options);
      return Promise.reject(
        Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:54471"), {
          code: "ECONNREFUSED",
        }),
      );
    };
    return wrapped;
  }
}

Deno.test({
  name:
    "a result and a work request sent while the database is down are served once it is back: the result is recorded, the worker answered",
  async fn() {
    const outage = new DatabaseOutage();
    await withFixture(async (f) => {
      const [drv, next] = await f.addJobs([job("first", 1), job("next", 2)]);
      const w = await readyWorker(f.port, { name: "W" });
      const handed = await w.requestWork();
      assert.equal(handed.type === "build" && handed.drv, drv);
      await reportStarted(f, w, drv);
      outage.down = true;
      const before = outage.batches;
      await reportFailure(w, drv);
      await w.send({ type: "worker-request-work", name: "W" });
      // Held, tried again with back-off: nothing recorded, nothing told.
      for (let i = 0; i < 4; i++) {
        await eventually(() => outage.batches > before + i, "a retry");
        await f.clock.advance(5000);
      }
      assert.equal(await f.status(drv), BuildStatus.started);
      await assert.rejects(w.next(200));
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn turn held") &&
          l.includes('reason="database unavailable"')
        ),
        f.lines.join("\n"),
      );
      outage.down = false;
      await f.clock.advance(5000);
      const reply = await w.next();
      assert.equal(reply.type === "build" && reply.drv, next);
      assert.equal(await f.status(drv), BuildStatus.failed);
      await w.close();
    }, { storeSeenByDispatcher: (store) => outage.wrap(store) });
  },
});

Deno.test({
  name:
    "a turn the database does not answer (PostgreSQL frozen) is logged every 10 s as 'turn slow', then served once it answers",
  async fn() {
    let thaw = () => {};
    let frozen: Promise<void> | null = null;
    await withFixture(async (f) => {
      const [drv] = await f.addJobs([job("frozen", 1)]);
      const w = await readyWorker(f.port, { name: "W" });
      await untilRegistered(f, "W");
      frozen = new Promise((resolve) => thaw = resolve);
      await w.send({ type: "worker-request-work", name: "W" });
      const slow = () => f.lines.filter((l) => l.startsWith("warn turn slow"));
      try {
        await eventually(() => frozen === null, "the frozen turn");
        for (let i = 1; i <= 2; i++) {
          await f.clock.advance(10_000);
          await eventually(() => slow().length >= i, `warning ${i}`);
        }
      } finally {
        // Else the fixture's close would wait for the turn for good.
        thaw();
      }
      assert.match(slow()[0], /messages=1 waitedMs=10000/);
      assert.match(slow()[1], /waitedMs=20000/);
      thaw();
      const reply = await w.next();
      assert.equal(reply.type === "build" && reply.drv, drv);
      await f.clock.advance(30_000);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(slow().length, 2, "no warning once it answered");
      await w.close();
    }, {
      storeSeenByDispatcher(store) {
        const stuck: Store = Object.create(store);
        stuck.batch = async (work, options) => {
          const waiting = frozen;
          frozen = null;
          if (waiting !== null) await waiting;
          return store.batch(work, options);
        };
        return stuck;
      },
    });
  },
});
