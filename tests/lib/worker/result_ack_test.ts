// A worker's result that reached a server which died before committing it:
// with "result-ack", the worker keeps the result until the server says it
// took it, says at its next registration that it holds the build, and sends
// the result again; the restarted server records it, and the build is
// neither requeued nor built again. A server that stays up but drops the
// result's turn gets it again once its ack is late, before any work
// request. Real dispatchers on one database.

import assert from "node:assert/strict";
import type { SessionOptions } from "../../../lib/worker/session.ts";
import { UndeliveredResults } from "../../../lib/worker/undelivered_results.ts";
import { OutputsBeingFetched } from "../../../lib/worker/outputs_being_fetched.ts";
import {
  decodeMessage,
  encodeMessage,
  LORICA_FEATURES,
  type Message,
} from "../../../lib/protocol/messages.ts";
import { BuildStatus, type Store } from "../../../lib/store/types.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger } from "../../../lib/log.ts";
import { type RouterMessage, RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  eventually,
  fakeSpawner,
  job,
  settlesWithin,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import {
  closing,
  loggedResults,
  restartableFixture,
  runningSession,
  sessionOptions,
  untilStatus,
  watchedResultTurns,
} from "./_session_helpers.ts";
import { buildRequest, GOOD_DRV } from "./_handing_out_server.ts";
import { quietPort } from "../../_ports.ts";
import { carriesResult, ResultTurnFailure } from "./_failing_result_turns.ts";

/**
 * Holds, uncommitted, the dispatcher's turn that takes the first build
 * result it receives, until `kill()`: that turn then fails, as the process
 * would die, and nothing of it is committed or answered.
 */
class ResultTurnHold {
  #armed = false;
  readonly #reached = Promise.withResolvers<void>();
  readonly #killed = Promise.withResolvers<void>();

  /**
   * Resolves once the turn holding the result is in its batch; rejects
   * after 30 s, so that a result never sent fails its test, not hangs it.
   */
  get reached(): Promise<void> {
    return within(this.#reached.promise, 30_000, "held result turn");
  }

  /** Arms the hold when `message` is a build result. */
  watch = (message: RouterMessage) => {
    if (carriesResult(message)) this.#armed = true;
  };

  /** `store` whose batches wait, once armed, before they commit. */
  holding = (store: Store): Store => {
    const seen: Store = Object.create(store);
    seen.batch = (work, options) =>
      store.batch(async (tx) => {
        const result = await work(tx);
        if (this.#armed) {
          this.#armed = false;
          this.#reached.resolve();
          await this.#killed.promise;
          throw new Error("server killed before its commit (injected)");
        }
        return result;
      }, options);
    return seen;
  };

  kill() {
    this.#killed.resolve();
  }
}

/** The guix build calls of `calls` that built `drv`. */
function builtTimes(calls: string[][], drv: string): number {
  return calls.filter((argv) => argv.includes("build") && argv.includes(drv))
    .length;
}

/**
 * A session named `name` against `port` whose guix build ends at once, as
 * `behave` says (a success by default), each call kept in `calls`; its kept
 * results, `results`, log to its `lines`. A runningSession(): leaving the
 * `await using` scope that holds it stops it.
 */
function recordingSession(
  port: number,
  name: string,
  extra: Partial<SessionOptions> = {},
  behave?: Parameters<typeof fakeSpawner>[0],
) {
  const calls: string[][] = [];
  const lines: string[] = [];
  const results = loggedResults(lines);
  const session = runningSession(
    sessionOptions(port, name, lines, {
      guix: new Guix({
        logger: createLogger({ sink: () => {} }),
        spawn: fakeSpawner(behave, calls),
      }),
      results,
      ...extra,
    }),
  );
  return { calls, lines, results, ...session };
}

for (
  const { ok, status } of [
    { ok: true, status: BuildStatus.succeeded },
    { ok: false, status: BuildStatus.failed },
  ]
) {
  const outcome = ok ? "fetching" : "recorded";
  Deno.test({
    name: `a build ${
      ok ? "success" : "failure"
    } sent as the server dies before committing it is sent again to the restarted server: recorded once, never requeued, built once`,
    async fn() {
      const hold = new ResultTurnHold();
      await using server = await restartableFixture(
        watchedResultTurns(hold.watch, hold.holding),
      );
      const [drv] = await server.first.addJobs([job("straddler", 1)]);
      const name = ok ? "ACKED001" : "ACKED002";
      await using session = recordingSession(
        server.port,
        name,
        {},
        () => ({ code: ok ? 0 : 1 }),
      );
      const { calls, lines, results } = session;
      try {
        await hold.reached;
        // Dies with the result's turn uncommitted: nothing of it remains.
        const dying = server.kill();
        hold.kill();
        await dying;
        const f = await server.restart({ logPort: quietPort() });
        await untilStatus(
          f,
          drv,
          status,
          `build recorded\nserver:\n${f.lines.join("\n")}\nworker:\n${
            lines.join("\n")
          }`,
        );
        await eventually(() => results.size === 0, "result acknowledged");
        assert.equal(
          builtTimes(calls, drv),
          1,
          `built once\n${lines.join("\n")}`,
        );
        assert.deepEqual(
          f.lines.filter((l) =>
            l.startsWith("warn build requeued") ||
            l.startsWith("warn result ignored")
          ),
          [],
        );
        assert.ok(
          f.lines.some((l) =>
            l.startsWith(`info worker ready worker=${name} `) &&
            l.includes(" holding=1 requeued=0")
          ),
          f.lines.join("\n"),
        );
        assert.ok(
          lines.includes(
            `info result acknowledged drv=${drv} status=${
              ok ? "succeeded" : "failed"
            } outcome=${outcome} attempts=1`,
          ),
          lines.join("\n"),
        );
        // Recorded once: one success fetched, or one failure written.
        assert.equal(
          f.lines.filter((l) =>
            l.startsWith(ok ? "info build succeeded" : "info build failed")
          ).length,
          1,
          f.lines.join("\n"),
        );
      } finally {
        // The held turn must end, or the first server never closes.
        hold.kill();
      }
    },
  });
}

Deno.test({
  name:
    "a server killed while it fetches a success it acknowledged resumes the fetch at its restart: the build succeeds, never requeued, built once",
  async fn() {
    // The worker's publish server: no narinfo until `published`.
    let published = false;
    const fetch = () =>
      Promise.resolve(
        published ? new Response("ok") : new Response("", { status: 404 }),
      );
    await using server = await restartableFixture({
      logPort: quietPort(),
      fetch,
    });
    const { first } = server;
    const [drv] = await first.addJobs([job("fetched-late", 1)]);
    const name = "FETCHED1";
    await using session = recordingSession(server.port, name);
    const { calls, lines, results } = session;
    await eventually(
      () => first.lines.some((l) => l.startsWith("warn output fetch retried")),
      "the fetch waiting for the worker's publish server",
    );
    await eventually(() => results.size === 0, "result acknowledged");
    assert.ok(
      lines.includes(
        `debug result acknowledged drv=${drv} status=succeeded outcome=fetching attempts=0`,
      ),
      lines.join("\n"),
    );
    // Killed: the fetch is not saved by a clean stop.
    await server.kill();
    const f = await server.restart({ logPort: quietPort(), fetch });
    // The worker registers again while the fetch is still waiting: it
    // holds nothing, its result acknowledged, and the build stays its.
    await eventually(
      () =>
        f.lines.some((l) =>
          l.startsWith(`info worker ready worker=${name} `) &&
          l.includes(" holding=0 requeued=0")
        ),
      `worker registered again\nserver:\n${f.lines.join("\n")}\nworker:\n${
        lines.join("\n")
      }`,
    );
    await eventually(
      () => f.lines.some((l) => l.startsWith("warn output fetch retried")),
      "the resumed fetch waiting",
    );
    published = true;
    await f.clock.advance(1000);
    await untilStatus(
      f,
      drv,
      BuildStatus.succeeded,
      `build succeeded\nserver:\n${f.lines.join("\n")}\nworker:\n${
        lines.join("\n")
      }`,
    );
    assert.equal(
      builtTimes(calls, drv),
      1,
      `built once\n${lines.join("\n")}`,
    );
    assert.ok(
      !f.lines.some((l) => l.startsWith("warn build requeued")),
      f.lines.join("\n"),
    );
    await eventually(
      async () => (await f.store.owedFetches()).length === 0,
      "the fetch forgotten once it ended",
    );
  },
});

Deno.test({
  name:
    "a result whose turn the server drops, staying up, is sent again once its ack is overdue, before any work request: recorded, never requeued, built once",
  async fn() {
    const failure = new ResultTurnFailure();
    await using f = closing(
      await startFixture(watchedResultTurns(failure.watch, failure.failing)),
    );
    const [drv] = await f.addJobs([job("dropped-turn", 1)]);
    const name = "DROPPED1";
    await using session = recordingSession(f.port, name, {
      // The ack's wait: short, for the test's sake.
      replyTimeoutMs: 1000,
    });
    const { calls, lines, results } = session;
    await untilStatus(
      f,
      drv,
      BuildStatus.succeeded,
      `build succeeded\nserver:\n${f.lines.join("\n")}\nworker:\n${
        lines.join("\n")
      }`,
    );
    assert.equal(failure.failed, 1, "the result's turn failed");
    await eventually(() => results.size === 0, "result acknowledged");
    assert.equal(
      builtTimes(calls, drv),
      1,
      `built once\n${lines.join("\n")}`,
    );
    assert.deepEqual(
      f.lines.filter((l) => l.startsWith("warn build requeued")),
      [],
    );
    assert.ok(
      lines.some((l) =>
        l.startsWith(`warn result sent again worker=${name} drv=${drv} `)
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.includes(
        `info result acknowledged drv=${drv} status=succeeded outcome=fetching attempts=1`,
      ),
      lines.join("\n"),
    );
  },
});

/**
 * A session named `name` against `port`, with a draining signal, whose
 * `guix build` succeeds only once `finish()` is called. Leaving the `await
 * using` scope that holds it lets the build finish and stops it.
 */
function drainableSession(
  port: number,
  name: string,
  extra: Partial<SessionOptions> = {},
) {
  const calls: string[][] = [];
  const lines: string[] = [];
  const results = loggedResults(lines);
  const finished = Promise.withResolvers<void>();
  const spawn = fakeSpawner(undefined, calls);
  const draining = new AbortController();
  const session = runningSession(
    sessionOptions(port, name, lines, {
      guix: new Guix({
        logger: createLogger({ sink: () => {} }),
        spawn: (argv, options) => {
          const child = spawn(argv, options);
          return {
            ...child,
            status: finished.promise.then(() => child.status),
          };
        },
      }),
      results,
      draining: draining.signal,
      ...extra,
    }),
  );
  const stop = () => {
    finished.resolve();
    return session.stop();
  };
  return {
    calls,
    lines,
    results,
    running: session.running,
    finish: () => finished.resolve(),
    drain: () => draining.abort(),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

Deno.test({
  name:
    "a draining session waits for its last result's ack: one whose turn the server drops is sent again and recorded before the session ends",
  async fn() {
    const failure = new ResultTurnFailure();
    await using f = closing(
      await startFixture(watchedResultTurns(failure.watch, failure.failing)),
    );
    const [drv] = await f.addJobs([job("drained-dropped", 1)]);
    await using session = drainableSession(f.port, "DRAINED1", {
      // The ack's wait: short, for the test's sake.
      replyTimeoutMs: 1000,
    });
    await untilStatus(f, drv, BuildStatus.started, "build started");
    // SIGTERM mid-build: the build is finished and reported, its
    // result's turn dropped.
    session.drain();
    session.finish();
    assert.ok(
      await settlesWithin(session.running, 20_000),
      "the session ends by itself",
    );
    await session.running;
    assert.equal(session.results.size, 0, session.lines.join("\n"));
    assert.equal(failure.failed, 1, "the result's turn failed");
    assert.ok(
      session.lines.some((l) =>
        l.startsWith(`warn result sent again worker=DRAINED1 drv=${drv} `)
      ),
      session.lines.join("\n"),
    );
    assert.ok(session.lines.includes("info session drained worker=DRAINED1"));
    await untilStatus(
      f,
      drv,
      BuildStatus.succeeded,
      `build succeeded\nserver:\n${f.lines.join("\n")}`,
    );
    assert.equal(builtTimes(session.calls, drv), 1);
  },
});

Deno.test({
  name:
    "a draining session whose server dies before committing its last result waits for its return, registers, and sends the result again before it ends",
  async fn() {
    const hold = new ResultTurnHold();
    await using server = await restartableFixture(
      watchedResultTurns(hold.watch, hold.holding),
    );
    const [drv] = await server.first.addJobs([job("drained-restart", 1)]);
    // The ack's wait ends, and a registration begins, while the server is
    // away: the session must wait for it rather than leave.
    await using session = drainableSession(server.port, "DRAINED2", {
      replyTimeoutMs: 1000,
    });
    try {
      await untilStatus(
        server.first,
        drv,
        BuildStatus.started,
        "build started",
      );
      session.drain();
      session.finish();
      await hold.reached;
      const dying = server.kill();
      hold.kill();
      await dying;
      assert.equal(
        await settlesWithin(session.running, 2500),
        false,
        `the session waits for the server\n${session.lines.join("\n")}`,
      );
      const f = await server.restart({ logPort: quietPort() });
      assert.ok(
        await settlesWithin(session.running, 20_000),
        `the session ends by itself\n${session.lines.join("\n")}`,
      );
      await session.running;
      assert.equal(session.results.size, 0, session.lines.join("\n"));
      assert.ok(session.lines.includes("info session drained worker=DRAINED2"));
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("info worker ready worker=DRAINED2 ") &&
          l.includes(" holding=1 requeued=0")
        ),
        f.lines.join("\n"),
      );
      await untilStatus(
        f,
        drv,
        BuildStatus.succeeded,
        `build succeeded\nserver:\n${f.lines.join("\n")}`,
      );
      assert.equal(builtTimes(session.calls, drv), 1);
    } finally {
      // The held turn must end, or the first server never closes.
      hold.kill();
    }
  },
});

/** What a scripted server does when it hears a build result. */
interface OnResult {
  /** Messages sent back at once (acks). */
  replies?: (drv: string) => Message[];
  /** Then a probe, which makes a Lorica worker register again. */
  probe?: boolean;
}

/**
 * A server that hands out `build` once, then no build, welcomes a Lorica
 * worker with `features` (none: it ignores the hello, as Cuirass), and
 * answers each result as `onResult` says; records what it hears.
 */
async function scriptedServer(
  build: Message,
  features: string[] | undefined,
  onResult: OnResult,
) {
  const router = await RouterSocket.bind({ hostname: "127.0.0.1", port: 0 });
  const heard: Message[] = [];
  const abort = new AbortController();
  const builds = [build];
  const serving = (async () => {
    while (!abort.signal.aborted) {
      const { routingId, frames } = await router.receive(abort.signal);
      const message = decodeMessage(frames[frames.length - 1]);
      heard.push(message);
      const send = (frames: Uint8Array[]) =>
        router.send(routingId, frames).catch(() => {});
      const reply = (m: Message) => send([EMPTY, encodeMessage(m)]);
      switch (message.type) {
        case "lorica-hello":
          if (features !== undefined) {
            await reply({
              type: "lorica-welcome",
              version: 1,
              features,
              nonce: "00",
            });
          }
          break;
        case "worker-request-info":
          await reply({
            type: "server-info",
            workerAddress: "127.0.0.1",
            logPort: quietPort(),
            publishPort: null,
          });
          break;
        case "worker-request-work": {
          const tag = message.requestId === undefined
            ? {}
            : { requestId: message.requestId };
          await reply({ ...(builds.shift() ?? { type: "no-build" }), ...tag });
          break;
        }
        case "build-succeeded":
        case "build-failed":
          for (const m of onResult.replies?.(message.drv) ?? []) await reply(m);
          if (onResult.probe) await send([EMPTY]);
      }
    }
  })().catch(() => {});
  return {
    port: router.port,
    heard,
    /** The `holding` of each worker-ready heard (undefined: none said). */
    holdings: () =>
      heard.flatMap((m) => m.type === "worker-ready" ? [m.holding] : []),
    results: () =>
      heard.filter((m) =>
        m.type === "build-succeeded" || m.type === "build-failed"
      ).length,
    async close() {
      abort.abort();
      await router.close();
      await serving;
    },
  };
}

const EMPTY = new Uint8Array(0);

/**
 * Runs a session named `name` against `port` until `check` holds, with
 * results kept in `results`; logs (debug on) go to `lines`.
 */
async function sessionUntil(
  port: number,
  name: string,
  check: () => boolean,
  what: string,
) {
  const lines: string[] = [];
  const logger = createLogger({
    level: "debug",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const results = new UndeliveredResults({ logger });
  {
    await using _session = runningSession(
      sessionOptions(port, name, lines, { logger, results }),
    );
    await eventually(check, `${what}\n${lines.join("\n")}`);
  }
  return { lines, results };
}

Deno.test({
  name:
    "a result a server never acknowledges is said held and sent again at each registration, then dropped after three more sendings",
  async fn() {
    await using server = closing(
      await scriptedServer(buildRequest({}), LORICA_FEATURES, {
        probe: true,
      }),
    );
    const { lines, results } = await sessionUntil(
      server.port,
      "UNACKED1",
      () => server.holdings().length === 5,
      "registered five times",
    );
    assert.equal(server.results(), 4, "sent, then sent again three times");
    assert.deepEqual(server.holdings(), [
      [],
      [GOOD_DRV],
      [GOOD_DRV],
      [GOOD_DRV],
      [],
    ]);
    assert.deepEqual(
      lines.filter((l) => l.startsWith("warn result dropped")),
      [
        `warn result dropped drv=${GOOD_DRV} status=succeeded reason="not acknowledged after 4 sendings"`,
      ],
    );
    assert.equal(results.size, 0);
  },
});

Deno.test({
  name:
    "an ack of a result the worker does not keep is ignored; the ack of its result ends its keeping: not said held, not sent again",
  async fn() {
    const other = GOOD_DRV.replace("hello", "other");
    await using server = closing(
      await scriptedServer(buildRequest({}), LORICA_FEATURES, {
        replies: (drv) => [
          { type: "result-ack", drv: other, outcome: "recorded" },
          { type: "result-ack", drv, outcome: "fetching" },
        ],
        probe: true,
      }),
    );
    const { lines, results } = await sessionUntil(
      server.port,
      "ACKED003",
      () => server.holdings().length === 2,
      "registered again",
    );
    assert.deepEqual(server.holdings(), [[], []]);
    assert.equal(server.results(), 1);
    assert.equal(results.size, 0);
    assert.ok(
      lines.includes(
        `debug ack ignored worker=ACKED003 drv=${other} outcome=recorded reason="no such result awaits an ack"`,
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.includes(
        `debug result acknowledged drv=${GOOD_DRV} status=succeeded outcome=fetching attempts=0`,
      ),
      lines.join("\n"),
    );
  },
});

for (
  const { server: kind, features } of [
    { server: "a Cuirass server", features: undefined },
    {
      server: "a Lorica server without result-ack",
      features: LORICA_FEATURES.filter((f) => f !== "result-ack"),
    },
  ]
) {
  Deno.test({
    name:
      `a worker of ${kind} keeps no result it sent: a registration after it says none held and sends none again`,
    async fn() {
      await using server = closing(
        await scriptedServer(buildRequest({}), features, {
          probe: true,
        }),
      );
      const { results } = await sessionUntil(
        server.port,
        "PLAIN001",
        () => server.holdings().length === 2,
        "registered again",
      );
      assert.equal(server.results(), 1);
      assert.equal(results.size, 0);
      assert.deepEqual(
        server.holdings(),
        features === undefined ? [undefined, undefined] : [[], []],
      );
      assert.ok(!server.heard.some((m) => m.type === "result-ack"));
    },
  });
}

for (
  const { server: kind, features, stays } of [
    {
      server: "a Lorica server without outputs-fetched",
      features: LORICA_FEATURES.filter((f) => f !== "outputs-fetched"),
      stays: false,
    },
    {
      server: "a server offering outputs-fetched",
      features: LORICA_FEATURES,
      stays: true,
    },
  ]
) {
  Deno.test({
    name: `a draining session of ${kind} ${
      stays ? "stays until told the fetch ended" : "leaves"
    } once its success is acknowledged as fetching`,
    async fn() {
      await using server = closing(
        await scriptedServer(buildRequest({}), features, {
          replies: (drv) => [{ type: "result-ack", drv, outcome: "fetching" }],
        }),
      );
      const fetching = new OutputsBeingFetched();
      await using session = drainableSession(server.port, "FETCHED2", {
        fetching,
      });
      await eventually(
        () => session.calls.some((argv) => argv.includes(GOOD_DRV)),
        "build started",
      );
      session.drain();
      session.finish();
      await eventually(() => server.results() === 1, "result sent");
      assert.equal(
        await settlesWithin(session.running, stays ? 500 : 5000),
        !stays,
        session.lines.join("\n"),
      );
      assert.deepEqual(fetching.drvs(), stays ? [GOOD_DRV] : []);
      assert.equal(session.results.size, 0);
    },
  });
}
