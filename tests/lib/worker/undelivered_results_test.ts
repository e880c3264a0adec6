import assert from "node:assert/strict";
import { UndeliveredResults } from "../../../lib/worker/undelivered_results.ts";
import { runSession } from "../../../lib/worker/session.ts";
import { type RunningWorker } from "../../../lib/worker/worker.ts";
import type { Message } from "../../../lib/protocol/messages.ts";
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
import {
  closing,
  restartableFixture,
  said,
  sessionOptions,
  stopping,
  untilStatus,
} from "./_session_helpers.ts";
import {
  dealersLosingResults,
  oneSessionWorker,
  succeedingGuix,
} from "./_losing_worker.ts";

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

/** What a scenario of {@link withLostResult} has at hand. */
interface LoricaScene {
  f: Fixture;
  worker: RunningWorker;
  /** What the worker logs. */
  lines: string[];
  /** The guix builds run, by their argv. */
  builds: string[][];
  /** How many results were lost mid-send. */
  lost(): number;
}

/**
 * Runs `scenario` with a fresh fixture and a worker of one session against
 * it whose first result is lost mid-send; stops both whatever happens.
 */
async function withLostResult(
  scenario: (scene: LoricaScene) => Promise<void>,
): Promise<void> {
  await using f = closing(await startFixture({ logPort: quietPort() }));
  const lines: string[] = [];
  const builds: string[][] = [];
  const dealers = dealersLosingResults((failed) => failed === 0);
  await using worker = stopping(
    await oneSessionWorker(f.port, lines, {
      guix: succeedingGuix(builds),
      connectDealer: dealers.connect,
    }),
  );
  await scenario({
    f,
    worker,
    lines,
    builds,
    lost: () => dealers.state.failed,
  });
}

/**
 * Asserts that `f` heard worker `name` register holding one build: the
 * session after the one that lost the result.
 */
function assertRegisteredHolding(f: Fixture, name: string): void {
  assert.ok(
    f.lines.some((l) =>
      l.startsWith(`info worker ready worker=${name} `) &&
      l.includes(" holding=1 ")
    ),
    f.lines.join("\n"),
  );
}

/** What a scenario of {@link withCuirassSessions} has at hand. */
interface CuirassScene {
  server: Awaited<ReturnType<typeof handingOutServer>>;
  /** What the sessions log. */
  lines: string[];
  /** How many results were lost mid-send. */
  lost(): number;
  /** How many sessions ran. */
  sessions(): number;
}

/**
 * Runs `scenario` with sessions named `name` running one after another, as
 * a worker runs them (worker.ts), against a scripted Cuirass server that
 * hands out `build`: their results are lost mid-send while `losing` says
 * so. Stops both whatever happens.
 */
async function withCuirassSessions(
  name: string,
  options: { build: Message; losing: (failed: number) => boolean },
  scenario: (scene: CuirassScene) => Promise<void>,
): Promise<void> {
  const server = await handingOutServer([options.build]);
  const abort = new AbortController();
  const lines: string[] = [];
  const dealers = dealersLosingResults(options.losing);
  const session = sessionOptions(server.port, name, lines, {
    results: keptResults(lines),
    connectDealer: dealers.connect,
  });
  let sessions = 0;
  const running = (async () => {
    while (!abort.signal.aborted) {
      sessions++;
      await runSession(session, abort.signal).catch(() => {});
    }
  })();
  try {
    await scenario({
      server,
      lines,
      lost: () => dealers.state.failed,
      sessions: () => sessions,
    });
  } finally {
    abort.abort();
    await running;
    await server.close();
  }
}

/** The first three of the last session's messages in `heard` (see said). */
function lastSessionStart(heard: string[]): string[] {
  const last = heard.lastIndexOf("worker-request-info");
  return heard.slice(last, last + 3);
}

Deno.test({
  name:
    "a worker whose result was lost mid-send delivers it from its next session, holding the build: it succeeds, built once",
  fn: () =>
    withLostResult(async ({ f, worker, lines, builds, lost }) => {
      const [drv] = await f.addJobs([job("hello", 1)]);
      await untilStatus(f, drv, BuildStatus.succeeded, "build succeeded");
      assert.equal(lost(), 1, "the first result was lost");
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
      assertRegisteredHolding(f, name);
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
    }),
});

Deno.test({
  name:
    "a session of a Cuirass server's worker sends the result an earlier session lost, once registered, before asking for work",
  fn: () =>
    withCuirassSessions("CUIRASS2", {
      build: buildRequest({}),
      losing: (failed) => failed === 0,
    }, async ({ server, lines, sessions }) => {
      await eventually(
        () => server.heard.some((m) => m.type === "build-succeeded"),
        "result delivered",
      );
      assert.equal(sessions(), 2);
      // The second session: no holding (Cuirass knows none), the result
      // after its registration and before its first work request.
      const heard = said(server.heard);
      assert.deepEqual(lastSessionStart(heard), [
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
    }),
});

Deno.test({
  name:
    "a refusal whose build-failed was lost mid-send is delivered by the next session of a Cuirass server's worker, before it asks for work",
  fn: () =>
    withCuirassSessions("REFUSED1", {
      // A limit no worker takes (see buildRefusal).
      build: buildRequest({ timeout: -5 }),
      losing: (failed) => failed === 0,
    }, async ({ server, lines, lost, sessions }) => {
      // Cuirass hands a build out once: without this answer it would keep
      // the build submitted to this worker until its timeout.
      await eventually(
        () => server.heard.some((m) => m.type === "build-failed"),
        `refusal delivered\n${lines.join("\n")}`,
      );
      assert.equal(lost(), 1, "the first answer was lost");
      assert.equal(sessions(), 2);
      const heard = said(server.heard);
      assert.deepEqual(lastSessionStart(heard), [
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
    }),
});

Deno.test({
  name:
    "a worker whose refusal was lost mid-send delivers it from its next session, holding the build: it fails once, not requeued again",
  fn: () =>
    withLostResult(async ({ f, worker, lines, builds, lost }) => {
      // A limit no worker takes (see buildRefusal): handed back the first
      // time, refused with build-failed the second.
      const [drv] = await f.addJobs([{
        ...job("hello", 1),
        timeout: MAX_BUILD_LIMIT_SECONDS + 1,
      }]);
      await untilStatus(
        f,
        drv,
        BuildStatus.failed,
        `build failed\n${lines.join("\n")}`,
      );
      assert.equal(lost(), 1, "the first answer was lost");
      assert.equal(builds.length, 0, "guix build never ran");
      const [name] = worker.names;
      assert.deepEqual(
        lines.filter((l) => l.startsWith("warn build refused ")).map((l) =>
          l.replace(/ reason=.* action=/, " action=")
        ),
        [
          `warn build refused worker=${name} drv=${drv} field=timeout action="handed back"`,
          `warn build refused worker=${name} drv=${drv} field=timeout action="reported failed"`,
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
      assertRegisteredHolding(f, name);
      // Sent once the server committed what it made of the result.
      await eventually(
        () =>
          lines.includes(
            `info result acknowledged worker=${name} drv=${drv} status=failed outcome=recorded attempts=1`,
          ),
        `result acknowledged\n${lines.join("\n")}`,
      );
    }),
});

Deno.test({
  name:
    "a result no session can deliver is tried by three sessions, then dropped with a warning, and work is asked for again",
  fn: () =>
    withCuirassSessions("LOSER001", {
      build: buildRequest({}),
      losing: () => true,
    }, async ({ server, lines, lost, sessions }) => {
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
      assert.equal(sessions(), 5);
      // The report, then one delivery by each of three sessions.
      assert.equal(lost(), 4);
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
    }),
});

Deno.test({
  name:
    "a worker whose registration fails mid-build, the server restarted, builds on and reports to the new server: built once, never requeued",
  async fn() {
    await using server = await restartableFixture({ logPort: quietPort() });
    const lines: string[] = [];
    const builds: string[][] = [];
    const release = Promise.withResolvers<void>();
    // Registrations: the first one's, then the one after the restart,
    // which is lost as it is sent.
    let readies = 0;
    const dealers = dealersLosingResults(() => ++readies === 2, [
      "worker-ready",
    ]);
    await using _worker = stopping(
      await oneSessionWorker(server.port, lines, {
        guix: succeedingGuix(builds, release.promise),
        connectDealer: dealers.connect,
      }),
    );
    try {
      const [drv] = await server.first.addJobs([job("hello", 1)]);
      await untilStatus(
        server.first,
        drv,
        BuildStatus.started,
        "build started",
      );
      await server.kill();
      const restarted = await server.restart({ logPort: quietPort() });
      await eventually(
        () => dealers.state.failed === 1,
        "the lost registration",
      );
      release.resolve();
      await untilStatus(
        restarted,
        drv,
        BuildStatus.succeeded,
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
      // The build must end, or the worker never stops.
      release.resolve();
    }
  },
});
