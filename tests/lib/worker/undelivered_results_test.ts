import assert from "node:assert/strict";
import { UndeliveredResults } from "../../../lib/worker/undelivered_results.ts";
import {
  runSession,
  type SessionOptions,
} from "../../../lib/worker/session.ts";
import { createLogger } from "../../../lib/log.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import {
  buildRequest,
  GOOD_DRV,
  handingOutServer,
} from "./_handing_out_server.ts";
import { quietPort } from "../../_ports.ts";
import { MAX_BUILD_LIMIT_SECONDS } from "../../../lib/worker/build_runner.ts";
import { said, sessionOptions } from "./_session_helpers.ts";
import {
  dealersLosingResults,
  oneSessionWorker,
  succeedingGuix,
} from "./_losing_worker.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

const DRV = "/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-2.12.drv";

/** Undelivered results logging to `lines`. */
function keptResults(lines: string[], options: { maxKept?: number } = {}) {
  return new UndeliveredResults({
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    ...options,
  });
}

Deno.test("UndeliveredResults hands a result to one session after another until it is delivered", () => {
  const lines: string[] = [];
  const results = keptResults(lines);
  results.keep({ drv: DRV, ok: true }, "connection lost");
  assert.deepEqual(results.startAttempt(), [{ drv: DRV, ok: true }]);
  results.keep({ drv: DRV, ok: true }, "connection lost again");
  assert.deepEqual(results.startAttempt(), [{ drv: DRV, ok: true }]);
  results.delivered(DRV);
  assert.equal(results.size, 0);
  assert.deepEqual(results.startAttempt(), []);
  assert.deepEqual(lines, [
    `warn result kept drv=${DRV} status=succeeded attempts=0 reason="connection lost"`,
    `warn result kept drv=${DRV} status=succeeded attempts=1 reason="connection lost again"`,
    `info result delivered drv=${DRV} status=succeeded attempts=2`,
  ]);
});

Deno.test("UndeliveredResults drops a result three sessions could not deliver, with a warning naming it", () => {
  const lines: string[] = [];
  const results = keptResults(lines);
  results.keep({ drv: DRV, ok: false }, "connection lost");
  for (let session = 1; session <= 3; session++) {
    assert.deepEqual(
      results.startAttempt(),
      [{ drv: DRV, ok: false }],
      `session ${session}`,
    );
  }
  assert.deepEqual(results.startAttempt(), []);
  assert.equal(results.size, 0);
  assert.deepEqual(
    lines.filter((l) => l.startsWith("warn result dropped")),
    [
      `warn result dropped drv=${DRV} status=failed reason="not delivered in 3 sessions"`,
    ],
  );
  // Gone for good: no later session gets it.
  assert.deepEqual(results.startAttempt(), []);
});

Deno.test("UndeliveredResults keeps a handful: past it, the oldest is dropped with a warning", () => {
  const lines: string[] = [];
  const results = keptResults(lines, { maxKept: 2 });
  const drvs = [1, 2, 3].map((i) => DRV.replace("hello", `hello${i}`));
  for (const drv of drvs) results.keep({ drv, ok: true }, "connection lost");
  assert.deepEqual(
    results.startAttempt().map((r) => r.drv),
    drvs.slice(1),
  );
  assert.deepEqual(
    lines.filter((l) => l.startsWith("warn result dropped")),
    [
      `warn result dropped drv=${
        drvs[0]
      } status=succeeded reason="2 undelivered results wait already"`,
    ],
  );
});

Deno.test("UndeliveredResults keeps a result sent to a server that acknowledges results until its ack", () => {
  const lines: string[] = [];
  const results = keptResults(lines);
  results.awaitAck({ drv: DRV, ok: true });
  assert.equal(results.size, 1);
  assert.ok(results.has(DRV));
  // Another result's ack, or this one's twice: nothing kept is touched.
  const other = DRV.replace("hello", "other");
  assert.equal(results.acknowledged(other, "recorded"), false);
  assert.equal(results.acknowledged(DRV, "fetching"), true);
  assert.equal(results.acknowledged(DRV, "fetching"), false);
  assert.equal(results.size, 0);
  // The first sending acknowledged is every build's lot: no line at info.
  assert.deepEqual(lines, []);
});

Deno.test("UndeliveredResults sends an unacknowledged result again at each registration, three times, then drops it with a warning", () => {
  const lines: string[] = [];
  const results = keptResults(lines);
  const other = DRV.replace("hello", "other");
  results.awaitAck({ drv: DRV, ok: false });
  results.keep({ drv: other, ok: true }, "connection lost");
  // A registration sends again the results sent and not acknowledged,
  // but those its session took already.
  assert.deepEqual(results.resendAttempt(new Set([DRV])), []);
  for (let registration = 1; registration <= 3; registration++) {
    assert.deepEqual(
      results.resendAttempt(new Set()),
      [{ drv: DRV, ok: false }],
      `registration ${registration}`,
    );
  }
  assert.deepEqual(results.resendAttempt(new Set()), []);
  assert.deepEqual(
    lines.filter((l) => l.startsWith("warn result dropped")),
    [
      `warn result dropped drv=${DRV} status=failed reason="not acknowledged after 4 sendings"`,
    ],
  );
  // The result never sent waits for the next session, untouched.
  assert.deepEqual(results.startAttempt(), [{ drv: other, ok: true }]);
});

Deno.test("UndeliveredResults: a result sent again that is acknowledged says so at info, with its attempts", () => {
  const lines: string[] = [];
  const results = keptResults(lines);
  results.awaitAck({ drv: DRV, ok: true });
  // The next session (the first one failed) takes it, and sends it again.
  assert.deepEqual(results.startAttempt(), [{ drv: DRV, ok: true }]);
  results.awaitAck({ drv: DRV, ok: true });
  assert.equal(results.acknowledged(DRV, "recorded"), true);
  assert.deepEqual(lines, [
    `info result acknowledged drv=${DRV} status=succeeded outcome=recorded attempts=1`,
  ]);
});

Deno.test({
  ...opts,
  name:
    "a worker whose result was lost mid-send delivers it from its next session, holding the build: it succeeds, built once",
  async fn() {
    const f = await startFixture({ logPort: quietPort() });
    const lines: string[] = [];
    const builds: string[][] = [];
    const dealers = dealersLosingResults((failed) => failed === 0);
    const worker = await oneSessionWorker(f.port, lines, {
      guix: succeedingGuix(builds),
      connectDealer: dealers.connect,
    });
    try {
      const [drv] = await f.addJobs([job("hello", 1)]);
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.succeeded,
        "build succeeded",
      );
      assert.equal(dealers.state.failed, 1, "the first result was lost");
      assert.ok(
        lines.some((l) =>
          l.startsWith("error session failed ") &&
          l.includes("(injected)")
        ),
        lines.join("\n"),
      );
      assert.equal(
        builds.filter((argv) => argv.includes(drv)).length,
        1,
        `built once\n${lines.join("\n")}\n${f.lines.join("\n")}`,
      );
      assert.ok(
        !f.lines.some((l) => l.startsWith("warn build requeued")),
        f.lines.join("\n"),
      );
      const [name] = worker.names;
      assert.ok(
        f.lines.some((l) =>
          l.startsWith(`info worker ready worker=${name} `) &&
          l.includes(" holding=1 ")
        ),
        f.lines.join("\n"),
      );
      assert.ok(
        lines.some((l) =>
          l.startsWith(
            `warn result kept worker=${name} drv=${drv} status=succeeded attempts=0 reason=`,
          )
        ),
        lines.join("\n"),
      );
      // Sent once the server committed what it made of the result.
      await eventually(
        () =>
          lines.includes(
            `info result acknowledged worker=${name} drv=${drv} status=succeeded outcome=fetching attempts=1`,
          ),
        `result acknowledged\n${lines.join("\n")}`,
      );
    } finally {
      await worker.stop();
      await f.close();
    }
  },
});

/**
 * Runs sessions of one name one after another until `signal` aborts, as a
 * worker does (worker.ts); `sessions` counts them.
 */
function sessionsInTurn(options: SessionOptions, signal: AbortSignal) {
  const state = { sessions: 0 };
  const running = (async () => {
    while (!signal.aborted) {
      state.sessions++;
      await runSession(options, signal).catch(() => {});
    }
  })();
  return { state, running };
}

Deno.test({
  ...opts,
  name:
    "a session of a Cuirass server's worker sends the result an earlier session lost, once registered, before asking for work",
  async fn() {
    const server = await handingOutServer([buildRequest({})]);
    const abort = new AbortController();
    const lines: string[] = [];
    const dealers = dealersLosingResults((failed) => failed === 0);
    const { state, running } = sessionsInTurn(
      sessionOptions(server.port, "CUIRASS2", lines, {
        results: keptResults(lines),
        connectDealer: dealers.connect,
      }),
      abort.signal,
    );
    try {
      await eventually(
        () => server.heard.some((m) => m.type === "build-succeeded"),
        "result delivered",
      );
      assert.equal(state.sessions, 2);
      // The second session: no holding (Cuirass knows none), the result
      // after its registration and before its first work request.
      const heard = said(server.heard);
      const second = heard.lastIndexOf("worker-request-info");
      assert.deepEqual(heard.slice(second, second + 3), [
        "worker-request-info",
        "worker-ready",
        `build-succeeded ${GOOD_DRV}`,
      ]);
      assert.ok(
        server.heard.every((m) =>
          m.type !== "worker-ready" || m.holding === undefined
        ),
      );
      assert.equal(
        heard.filter((m) => m === `build-started ${GOOD_DRV}`).length,
        1,
        "built once",
      );
      assert.ok(
        lines.includes(
          `info result delivered drv=${GOOD_DRV} status=succeeded attempts=1`,
        ),
        lines.join("\n"),
      );
    } finally {
      abort.abort();
      await running;
      await server.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "a refusal whose build-failed was lost mid-send is delivered by the next session of a Cuirass server's worker, before it asks for work",
  async fn() {
    // A limit no worker takes (see buildRefusal).
    const server = await handingOutServer([buildRequest({ timeout: -5 })]);
    const abort = new AbortController();
    const lines: string[] = [];
    const dealers = dealersLosingResults((failed) => failed === 0);
    const { state, running } = sessionsInTurn(
      sessionOptions(server.port, "REFUSED1", lines, {
        results: keptResults(lines),
        connectDealer: dealers.connect,
      }),
      abort.signal,
    );
    try {
      // Cuirass hands a build out once: without this answer it would keep
      // the build submitted to this worker until its timeout.
      await eventually(
        () => server.heard.some((m) => m.type === "build-failed"),
        `refusal delivered\n${lines.join("\n")}`,
      );
      assert.equal(dealers.state.failed, 1, "the first answer was lost");
      assert.equal(state.sessions, 2);
      const heard = said(server.heard);
      const second = heard.lastIndexOf("worker-request-info");
      assert.deepEqual(heard.slice(second, second + 3), [
        "worker-request-info",
        "worker-ready",
        `build-failed ${GOOD_DRV}`,
      ]);
      assert.ok(!heard.includes(`build-started ${GOOD_DRV}`), "never started");
      assert.equal(
        lines.filter((l) => l.startsWith("warn build refused")).length,
        1,
        lines.join("\n"),
      );
      assert.ok(
        lines.some((l) =>
          l.startsWith(
            `warn result kept drv=${GOOD_DRV} status=failed attempts=0 reason=`,
          ) && l.includes("(injected)")
        ),
        lines.join("\n"),
      );
      assert.ok(
        lines.includes(
          `info result delivered drv=${GOOD_DRV} status=failed attempts=1`,
        ),
        lines.join("\n"),
      );
    } finally {
      abort.abort();
      await running;
      await server.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "a worker whose refusal was lost mid-send delivers it from its next session, holding the build: it fails once, not requeued again",
  async fn() {
    const f = await startFixture({ logPort: quietPort() });
    const lines: string[] = [];
    const builds: string[][] = [];
    const dealers = dealersLosingResults((failed) => failed === 0);
    const worker = await oneSessionWorker(f.port, lines, {
      guix: succeedingGuix(builds),
      connectDealer: dealers.connect,
    });
    try {
      // A limit no worker takes (see buildRefusal): handed back the first
      // time, refused with build-failed the second.
      const [drv] = await f.addJobs([{
        ...job("hello", 1),
        timeout: MAX_BUILD_LIMIT_SECONDS + 1,
      }]);
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.failed,
        `build failed\n${lines.join("\n")}`,
      );
      assert.equal(dealers.state.failed, 1, "the first answer was lost");
      assert.equal(builds.length, 0, "guix build never ran");
      assert.deepEqual(
        lines.filter((l) => l.startsWith("warn build refused ")).map((l) =>
          l.replace(/ reason=.* action=/, " action=")
        ),
        [
          `warn build refused worker=${
            worker.names[0]
          } field=timeout action="handed back"`,
          `warn build refused worker=${
            worker.names[0]
          } field=timeout action="reported failed"`,
        ],
      );
      // Requeued once, when handed back: the next session said it held
      // the build, so the server kept it for the answer instead of
      // handing it out again.
      assert.equal(
        f.lines.filter((l) => l.startsWith("warn build requeued")).length,
        1,
        f.lines.join("\n"),
      );
      const [name] = worker.names;
      assert.ok(
        f.lines.some((l) =>
          l.startsWith(`info worker ready worker=${name} `) &&
          l.includes(" holding=1 ")
        ),
        f.lines.join("\n"),
      );
      // Sent once the server committed what it made of the result.
      await eventually(
        () =>
          lines.includes(
            `info result acknowledged worker=${name} drv=${drv} status=failed outcome=recorded attempts=1`,
          ),
        `result acknowledged\n${lines.join("\n")}`,
      );
    } finally {
      await worker.stop();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "a result no session can deliver is tried by three sessions, then dropped with a warning, and work is asked for again",
  async fn() {
    const server = await handingOutServer([buildRequest({})]);
    const abort = new AbortController();
    const lines: string[] = [];
    const dealers = dealersLosingResults(() => true);
    const { state, running } = sessionsInTurn(
      sessionOptions(server.port, "LOSER001", lines, {
        results: keptResults(lines),
        connectDealer: dealers.connect,
      }),
      abort.signal,
    );
    try {
      await eventually(
        () => lines.some((l) => l.startsWith("warn result dropped")),
        "result dropped",
      );
      // The fifth session, rid of it, asks for work.
      await eventually(
        () =>
          server.heard.filter((m) => m.type === "worker-request-work")
            .length >= 2,
        "work asked for again",
      );
      assert.equal(state.sessions, 5);
      // The report, then one delivery by each of three sessions.
      assert.equal(dealers.state.failed, 4);
      assert.deepEqual(
        lines.filter((l) => l.startsWith("warn result dropped")),
        [
          `warn result dropped drv=${GOOD_DRV} status=succeeded reason="not delivered in 3 sessions"`,
        ],
      );
      assert.deepEqual(
        lines.filter((l) => l.startsWith("warn result kept")).map((l) =>
          l.match(/ attempts=(\d+) /)?.[1]
        ),
        ["0", "1", "2", "3"],
      );
    } finally {
      abort.abort();
      await running;
      await server.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "a worker whose registration fails mid-build, the server restarted, builds on and reports to the new server: built once, never requeued",
  async fn() {
    const first = await startFixture({ logPort: quietPort() });
    let firstRunning = true;
    let second: Fixture | undefined;
    const lines: string[] = [];
    const builds: string[][] = [];
    const release = Promise.withResolvers<void>();
    // Registrations: the first one's, then the one after the restart,
    // which is lost as it is sent.
    let readies = 0;
    const dealers = dealersLosingResults(() => ++readies === 2, [
      "worker-ready",
    ]);
    const worker = await oneSessionWorker(first.port, lines, {
      guix: succeedingGuix(builds, release.promise),
      connectDealer: dealers.connect,
    });
    try {
      const [drv] = await first.addJobs([job("hello", 1)]);
      await eventually(
        async () => (await first.status(drv)) === BuildStatus.started,
        "build started",
      );
      firstRunning = false;
      await first.close(true);
      second = await startFixture({
        database: first.database,
        port: first.port,
        logPort: quietPort(),
      });
      const restarted = second;
      await eventually(
        () => dealers.state.failed === 1,
        "the lost registration",
      );
      release.resolve();
      await eventually(
        async () => (await restarted.status(drv)) === BuildStatus.succeeded,
        `build succeeded\n${lines.join("\n")}`,
      );
      assert.equal(
        builds.filter((argv) => argv.includes(drv)).length,
        1,
        `built once\n${lines.join("\n")}\n${restarted.lines.join("\n")}`,
      );
      assert.ok(
        !restarted.lines.some((l) => l.startsWith("warn build requeued")),
        restarted.lines.join("\n"),
      );
      assert.ok(
        lines.some((l) =>
          l.startsWith("warn registration failed ") && l.includes(drv)
        ),
        lines.join("\n"),
      );
    } finally {
      release.resolve();
      await worker.stop();
      if (firstRunning) await first.close();
      else await Deno.remove(first.root, { recursive: true });
      await second?.close();
    }
  },
});
