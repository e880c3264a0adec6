import assert from "node:assert/strict";
import {
  runSession,
  type SessionOptions,
} from "../../../lib/worker/session.ts";
import { DiskGuard } from "../../../lib/worker/disk_guard.ts";
import { createWebApp } from "../../../lib/web/app.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { systemClock } from "../../../lib/clock.ts";
import { createLogger } from "../../../lib/log.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
} from "../../../lib/protocol/messages.ts";
import {
  eventually,
  type Fixture,
  hashOf,
  job,
  settlesWithin,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { MAX_BUILD_LIMIT_SECONDS } from "../../../lib/worker/build_runner.ts";
import { quietPort } from "../../_ports.ts";
import {
  buildRequest,
  GOOD_DRV,
  handingOutServer,
} from "./_handing_out_server.ts";
import { sweepOnce } from "../../../lib/server/worker_sweeper.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };

interface FakeBuild {
  argv: string[];
  killed: boolean;
  finished: boolean;
  finish(code: number, log?: Uint8Array): void;
}

/** A spawner whose `guix build` runs until the test finishes it. */
function controlledGuix() {
  const builds: FakeBuild[] = [];
  const spawn: Spawner = (argv, options) => {
    const stderr = new TransformStream<Uint8Array, Uint8Array>();
    const writer = stderr.writable.getWriter();
    let resolve!: (s: { code: number; signal: string | null }) => void;
    const status = new Promise<{ code: number; signal: string | null }>(
      (r) => (resolve = r),
    );
    const build: FakeBuild = {
      argv,
      killed: false,
      finished: false,
      finish(code, log) {
        if (build.finished) return;
        build.finished = true;
        (log ? writer.write(log) : Promise.resolve())
          .then(() => writer.close())
          .then(() => resolve({ code, signal: null }));
      },
    };
    const kill = () => {
      build.killed = true;
      build.finish(143);
    };
    // As the real spawner does: a signal aborted already kills at once.
    // (A stop landing between build-started and the spawn left this fake
    // running for good, and a session waiting for it.)
    if (options?.signal?.aborted) queueMicrotask(kill);
    else options?.signal?.addEventListener("abort", kill, { once: true });
    builds.push(build);
    const child: Child = {
      pid: 4242,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr: stderr.readable,
      stdin: null,
      status,
      kill,
    };
    return child;
  };
  return {
    builds,
    guix: new Guix({ logger: createLogger({ sink: () => {} }), spawn }),
  };
}

function sessionOptions(
  port: number,
  name: string,
  guix: Guix,
  lines: string[],
  extra: Partial<SessionOptions> = {},
): SessionOptions {
  return {
    server: { hostname: "127.0.0.1", port },
    name,
    machine: "test",
    systems: ["x86_64-linux"],
    publishPort: 5558,
    substituteUrls: [],
    guix,
    clock: systemClock,
    logger: createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    requestPeriodMs: 100,
    pingIntervalMs: 200,
    replyTimeoutMs: 1000,
    ...extra,
  };
}

async function statusOf(f: Fixture, drv: string) {
  return (await f.store.getBuildByDerivation(drv))?.status;
}

/** Runs `body` on a fresh fixture; aborts and closes it afterwards. */
async function withFixture(
  body: (f: Fixture, abort: AbortController) => Promise<void>,
) {
  const f = await startFixture();
  const abort = new AbortController();
  try {
    await body(f, abort);
  } finally {
    abort.abort();
    await f.close();
  }
}

/** Waits until the build of `drv` in `f` has `status`. */
async function untilStatus(f: Fixture, drv: string, status: BuildStatus) {
  await eventually(async () => (await statusOf(f, drv)) === status);
}

/** Starts a session named `name` on a controlled `guix`, logging to `lines`. */
function startSession(
  port: number,
  name: string,
  signal: AbortSignal,
  extra: Partial<SessionOptions> = {},
) {
  const { builds, guix } = controlledGuix();
  const lines: string[] = [];
  const running = runSession(
    sessionOptions(port, name, guix, lines, extra),
    signal,
  );
  return { builds, guix, lines, running };
}

Deno.test({
  ...opts,
  name:
    "runSession() negotiates Lorica extensions, builds, and reports only after the build finished",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([job("hello", 1)]);
      const { builds, running } = startSession(
        f.port,
        "LORICA01",
        abort.signal,
      );
      await eventually(() => builds.length === 1, "build started");
      await untilStatus(f, drv, BuildStatus.started);
      assert.ok(
        f.lines.some((l) =>
          l.includes("worker ready worker=LORICA01") &&
          l.includes("lorica=true")
        ),
      );
      // Nothing is reported while the daemon still builds.
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await statusOf(f, drv), BuildStatus.started);
      builds[0].finish(0, new TextEncoder().encode("done\n"));
      await untilStatus(f, drv, BuildStatus.succeeded);
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "C08: the server restarts mid-build; the worker registers again holding the build, which is not requeued",
  async fn() {
    let f = await startFixture();
    let firstRoot: string | undefined;
    const abort = new AbortController();
    try {
      const [drv] = await f.addJobs([job("long", 1), job("next", 2)]);
      const { builds, running } = startSession(
        f.port,
        "RESTART1",
        abort.signal,
      );
      await untilStatus(f, drv, BuildStatus.started);
      const port = f.port;
      firstRoot = f.root;
      await f.close(true);
      f = await startFixture({ database: f.database, port });
      await eventually(
        () =>
          f.lines.some((l) =>
            l.includes("worker ready worker=RESTART1") &&
            l.includes("holding=1")
          ),
        "registered again, holding its build",
      );
      assert.equal(await statusOf(f, drv), BuildStatus.started, "not requeued");
      builds[0].finish(0);
      await untilStatus(f, drv, BuildStatus.succeeded);
      // Capacity unchanged: the same session takes the next build.
      await eventually(() => builds.length === 2, "second build taken");
      builds[1].finish(0);
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await f.close();
      if (firstRoot) await Deno.remove(firstRoot, { recursive: true });
    }
  },
});

Deno.test({
  ...opts,
  name: "C08: an instant success with an empty log counts as success",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([job("valid-already", 1)]);
      const { builds, running } = startSession(
        f.port,
        "INSTANT1",
        abort.signal,
      );
      await eventually(() => builds.length === 1);
      builds[0].finish(0);
      await untilStatus(f, drv, BuildStatus.succeeded);
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "cancel reaches a Lorica session: its guix build is killed, no result is sent, it asks for more work",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([job("forever", 1)]);
      const { builds, lines, running } = startSession(
        f.port,
        "CANCEL01",
        abort.signal,
      );
      await untilStatus(f, drv, BuildStatus.started);
      const id = (await f.store.getBuildByDerivation(drv))!.id;
      await f.dispatcher.cancelBuild(id);
      await eventually(() => builds[0]?.killed, "guix build killed");
      assert.equal(await statusOf(f, drv), BuildStatus.canceled);
      await f.addJobs([job("after", 2)]);
      await eventually(() => builds.length === 2, "next build taken");
      assert.ok(lines.some((l) => l.includes("build canceled")));
      assert.ok(
        !f.lines.some((l) => l.includes("build failed") && l.includes(drv)),
      );
      builds[1].finish(0);
      abort.abort();
      await running;
    }),
});

for (const how of ["through this server", "by another process"] as const) {
  Deno.test({
    ...opts,
    name:
      `an evaluation canceled ${how} stops a Lorica session's guix build, and it asks for more work`,
    fn: () =>
      withFixture(async (f, abort) => {
        const [drv] = await f.addJobs([job("forever", 1)]);
        const { builds, lines, running } = startSession(
          f.port,
          "EVAL0001",
          abort.signal,
        );
        await untilStatus(f, drv, BuildStatus.started);
        if (how === "through this server") {
          assert.equal(await f.dispatcher.cancelEvaluation(f.evaluation), 1);
        } else {
          // As a web front end on the same database: the dispatcher
          // learns of it at its next look (every 5 s).
          assert.equal(
            (await f.store.cancelEvaluation(f.evaluation, 9)).changed,
            1,
          );
          await f.clock.advance(5000);
        }
        await eventually(() => builds[0]?.killed, "guix build killed");
        assert.equal(await statusOf(f, drv), BuildStatus.canceled);
        await f.addJobs([job("after", 2)]);
        await eventually(() => builds.length === 2, "next build taken");
        assert.ok(lines.some((l) => l.includes("build canceled")));
        builds[1].finish(0);
        abort.abort();
        await running;
      }),
  });
}

Deno.test({
  ...opts,
  name:
    "a session with extensions off speaks plain Cuirass and is served by a Lorica server",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([job("plain", 1)]);
      const { builds, running } = startSession(
        f.port,
        "PLAIN001",
        abort.signal,
        { extensions: false },
      );
      await eventually(() => builds.length === 1);
      builds[0].finish(0);
      await untilStatus(f, drv, BuildStatus.succeeded);
      assert.ok(
        f.lines.some((l) =>
          l.includes("worker ready worker=PLAIN001") &&
          l.includes("lorica=false")
        ),
      );
      assert.ok(!f.lines.some((l) => l.includes("type=lorica-hello")));
      abort.abort();
      await running;
    }),
});

/** A server that answers the handshake, then (when frozen) nothing more. */
async function scriptedServer(lorica: boolean) {
  const router = await RouterSocket.bind({ hostname: "127.0.0.1", port: 0 });
  const state = {
    frozen: false,
    requests: 0,
    readies: 0,
    hellos: 0,
    infos: 0,
  };
  const abort = new AbortController();
  const serving = (async () => {
    while (!abort.signal.aborted) {
      const { routingId, frames } = await router.receive(abort.signal);
      const message = decodeMessage(frames[frames.length - 1]);
      const reply = (m: Message) =>
        router.send(routingId, [new Uint8Array(), encodeMessage(m)]).catch(
          () => {},
        );
      if (message.type === "lorica-hello") {
        state.hellos++;
        if (lorica) {
          await reply({
            type: "lorica-welcome",
            version: 1,
            features: ["request-id"],
            nonce: "00",
          });
        }
      } else if (message.type === "worker-request-info") {
        state.infos++;
        if (!state.frozen) {
          await reply({
            type: "server-info",
            workerAddress: "127.0.0.1",
            logPort: 9,
            publishPort: null,
          });
        }
      } else if (message.type === "worker-ready") {
        state.readies++;
      } else if (message.type === "worker-request-work") {
        state.requests++;
        if (!state.frozen) {
          await reply({ type: "no-build", requestId: message.requestId });
        }
      }
    }
  })().catch(() => {});
  return {
    port: router.port,
    state,
    async close() {
      abort.abort();
      await router.close();
      await serving;
    },
  };
}

/** Runs `body` against a scriptedServer(); aborts and closes it afterwards. */
async function withScriptedServer(
  lorica: boolean,
  body: (
    server: Awaited<ReturnType<typeof scriptedServer>>,
    abort: AbortController,
  ) => Promise<void>,
) {
  const server = await scriptedServer(lorica);
  const abort = new AbortController();
  try {
    await body(server, abort);
  } finally {
    abort.abort();
    await server.close();
  }
}

Deno.test({
  ...opts,
  name:
    "C03: a server that stops answering gets no flood of requests; the worker reconnects and resumes",
  fn: () =>
    withScriptedServer(true, async (server, abort) => {
      server.state.frozen = true;
      const { lines, running } = startSession(
        server.port,
        "FROZEN01",
        abort.signal,
        { replyTimeoutMs: 300 },
      );
      // Frozen for about ten reply periods.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      assert.equal(
        server.state.requests,
        0,
        "no work request without server-info",
      );
      assert.ok(lines.some((l) => l.startsWith("warn server silent")));
      server.state.frozen = false;
      await eventually(() => server.state.requests >= 3, "requests resume");
      // Thawed: requests come one per period, after a no-build each.
      const silent = lines.filter((l) =>
        l.startsWith("warn server silent")
      ).length;
      assert.ok(silent >= 3 && silent <= 15, `${silent} reconnects`);
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "the reply timeout counts the time that passed: a step of the wall clock back an hour does not stretch it",
  fn: () =>
    withScriptedServer(false, async (server, abort) => {
      server.state.frozen = true;
      let offset = 0;
      const clock = { ...systemClock, now: () => Date.now() + offset };
      const { lines, running } = startSession(
        server.port,
        "STEPPED1",
        abort.signal,
        { replyTimeoutMs: 300, clock },
      );
      // The worker waits for the server-info that will not come (a Cuirass
      // server: no welcome comes either to start the wait anew).
      await eventually(() => server.state.infos >= 1, "info request");
      offset = -3_600_000;
      await eventually(
        () =>
          lines.some((l) =>
            l.startsWith("warn server silent ") &&
            l.includes(" awaiting=server-info ")
          ),
        "server silent",
      );
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "C03: a work request left unanswered is not repeated on the same connection",
  fn: () =>
    withScriptedServer(true, async (server, abort) => {
      const { running } = startSession(
        server.port,
        "STALL001",
        abort.signal,
        { replyTimeoutMs: 400 },
      );
      await eventually(() => server.state.requests >= 1);
      server.state.frozen = true;
      const before = server.state.requests;
      await new Promise((resolve) => setTimeout(resolve, 2000));
      // Each reconnect costs a handshake (answered by nobody), not a request.
      assert.ok(
        server.state.requests - before <= 1,
        `${server.state.requests - before} extra`,
      );
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "C09: no work is requested while the disk is low, one log line per period, then it resumes",
  fn: () =>
    withScriptedServer(false, async (server, abort) => {
      const { guix } = controlledGuix();
      const lines: string[] = [];
      let free = 1024;
      const logger = createLogger({
        timestamps: false,
        sink: (l) => lines.push(l),
      });
      const disk = new DiskGuard({
        paths: ["/store", "/tmp"],
        minimumBytes: 5 * 1024 ** 3,
        freeBytes: () => Promise.resolve(free),
        clock: systemClock,
        logger,
        logPeriodMs: 1000,
      });
      const running = runSession(
        sessionOptions(server.port, "DISK0001", guix, lines, { disk }),
        abort.signal,
      );
      await eventually(() => server.state.readies >= 1);
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.equal(server.state.requests, 0);
      const warnings = lines.filter((l) => l.startsWith("warn disk space low"));
      assert.ok(
        warnings.length >= 2 && warnings.length <= 4,
        `${warnings.length} lines`,
      );
      free = 10 * 1024 ** 3;
      await eventually(() => server.state.requests >= 1, "resumed");
      assert.ok(lines.some((l) => l.startsWith("info disk space ok")));
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "a session with the right worker key builds on a server that requires one; without it, it gets nothing",
  async fn() {
    const secret = "shared-secret-of-the-farm";
    const f = await startFixture({ workerKeys: new Map([["farm", secret]]) });
    const abort = new AbortController();
    try {
      const [drv] = await f.addJobs([job("guarded", 1)]);
      const { builds, guix } = controlledGuix();
      const lines: string[] = [];
      const keyless = runSession(
        sessionOptions(f.port, "NOKEY001", guix, lines),
        abort.signal,
      );
      await eventually(() =>
        f.lines.some((l) =>
          l.startsWith("warn worker refused") && l.includes("NOKEY001")
        )
      );
      assert.ok(
        lines.some((l) => l.startsWith("error authentication required")),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(builds.length, 0);
      const keyed = runSession(
        sessionOptions(f.port, "KEYED001", guix, [], {
          authKey: { id: "farm", secret },
        }),
        abort.signal,
      );
      await eventually(() => builds.length === 1, "keyed worker builds");
      builds[0].finish(0);
      await untilStatus(f, drv, BuildStatus.succeeded);
      abort.abort();
      await Promise.all([keyless, keyed]);
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "runSession() with a draining stop finishes and reports its build, then asks for nothing more",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    const draining = new AbortController();
    try {
      const [first, second] = await f.addJobs([
        job("first", 1),
        job("second", 2),
      ]);
      const { builds, lines, running } = startSession(
        f.port,
        "DRAIN001",
        abort.signal,
        { draining: draining.signal },
      );
      await eventually(() => builds.length === 1, "build started");
      // SIGTERM arrives mid-build: the build goes on and is reported.
      draining.abort();
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(builds[0].killed, false);
      builds[0].finish(0, new TextEncoder().encode("done\n"));
      await untilStatus(f, first, BuildStatus.succeeded);
      // The session ends by itself, without taking the second build.
      await running;
      assert.equal(builds.length, 1);
      assert.equal(await statusOf(f, second), BuildStatus.scheduled);
      assert.ok(lines.some((l) => l.includes("session drained")));
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "C09: a Lorica server hears that a worker is low on disk, and /workers shows it",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    try {
      const { guix } = controlledGuix();
      const lines: string[] = [];
      let free = 1024;
      const disk = new DiskGuard({
        paths: ["/store"],
        minimumBytes: 5 * 1024 ** 3,
        freeBytes: () => Promise.resolve(free),
        clock: systemClock,
        logger: createLogger({ sink: () => {} }),
        logPeriodMs: 1000,
      });
      const running = runSession(
        sessionOptions(f.port, "DISKLOW1", guix, lines, { disk }),
        abort.signal,
      );
      await eventually(() => f.dispatcher.diskLow("DISKLOW1"), "disk low");
      const app = createWebApp({
        store: f.store,
        logCacheDir: "/nonexistent",
        storeDir: "/gnu/store",
        clock: f.clock,
        logger: createLogger({ sink: () => {} }),
        workerDiskLow: (name) => f.dispatcher.diskLow(name),
      });
      const page = await (await app(new Request("http://x/workers"))).text();
      assert.match(page, /low on disk/);
      free = 10 * 1024 ** 3;
      await eventually(() => !f.dispatcher.diskLow("DISKLOW1"), "disk ok");
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "a ping that fails (a connection lost mid-send, here the disk check) is logged once, and the pings go on",
  async fn() {
    const f = await startFixture();
    const abort = new AbortController();
    try {
      const { guix } = controlledGuix();
      const lines: string[] = [];
      // The ping loop's first disk checks fail; then the disk is low, which
      // only a ping tells the server.
      let failures = 3;
      class FailingDisk extends DiskGuard {
        override low(): Promise<boolean> {
          if (!/pingLoop/.test(new Error().stack ?? "")) {
            return Promise.resolve(false);
          }
          if (failures > 0) {
            failures--;
            return Promise.reject(new Error("statfs failed (injected)"));
          }
          return Promise.resolve(true);
        }
      }
      const disk = new FailingDisk({
        paths: ["/store"],
        minimumBytes: 1,
        clock: systemClock,
        logger: createLogger({ sink: () => {} }),
        logPeriodMs: 1000,
      });
      const running = runSession(
        sessionOptions(f.port, "PINGFAIL1", guix, lines, { disk }),
        abort.signal,
      );
      await eventually(() => f.dispatcher.diskLow("PINGFAIL1"), "a ping");
      assert.equal(failures, 0);
      assert.equal(
        lines.filter((l) => l.startsWith("warn worker ping failed ")).length,
        1,
        lines.join("\n"),
      );
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

/** What a hostile server was seen sending, and the field to blame. */
const HOSTILE_REQUESTS: [string, Message, string][] = [
  ...[
    '--expression=(begin (mkdir "/tmp/x") #f)',
    "--load=/tmp/evil.scm",
    "--version",
    "hello",
    "/etc/passwd",
    "/gnu/store/../../../../etc/shadow",
    `/gnu/store/${hashOf("out", 1)}-hello-2.12`,
  ].map((drv): [string, Message, string] => [
    "drv",
    buildRequest({ drv }),
    // The reason quotes the value, and the log line quotes the reason.
    JSON.stringify(JSON.stringify(drv)).slice(1, -1),
  ]),
  ["timeout", buildRequest({ timeout: -5 }), "timeout -5:"],
  ["max-silent", buildRequest({ maxSilent: -1 }), "max-silent -1:"],
  [
    "timeout",
    buildRequest({ timeout: MAX_BUILD_LIMIT_SECONDS + 1 }),
    `timeout ${MAX_BUILD_LIMIT_SECONDS + 1}:`,
  ],
];

Deno.test({
  ...opts,
  name:
    "runSession() refuses a build request that is not a derivation of its store with sane limits: no guix, a warning naming it, build-failed",
  async fn() {
    const server = await handingOutServer([
      ...HOSTILE_REQUESTS.map(([, request]) => request),
      buildRequest({}),
    ]);
    const abort = new AbortController();
    try {
      const { builds, lines, running } = startSession(
        server.port,
        "HOSTILE1",
        abort.signal,
        { storeDir: "/gnu/store" },
      );
      // The good request after the hostile ones is the first to run.
      await eventually(() => builds.length === 1, "the good build runs");
      assert.equal(builds[0].argv.at(-1), GOOD_DRV);
      const refused = lines.filter((l) => l.startsWith("warn build refused"));
      assert.equal(refused.length, HOSTILE_REQUESTS.length, refused.join("\n"));
      HOSTILE_REQUESTS.forEach(([field, request, named], i) => {
        assert.ok(refused[i].includes(` field=${field} `), refused[i]);
        assert.ok(refused[i].includes(named), `${refused[i]} names ${named}`);
        assert.ok(
          server.heard.some((m) =>
            m.type === "build-failed" &&
            m.drv === (request as { drv: string }).drv &&
            m.url === "http://127.0.0.1:5558"
          ),
          `build-failed for request ${i}`,
        );
      });
      // Refused requests were never announced as started.
      assert.deepEqual(
        server.heard.filter((m) => m.type === "build-started").map((m) =>
          (m as { drv: string }).drv
        ),
        [GOOD_DRV],
      );
      builds[0].finish(0);
      await eventually(
        () => server.heard.some((m) => m.type === "build-succeeded"),
        "the good build reported",
      );
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await server.close();
    }
  },
});

/** Drains a session caught in some wait for the server; it must end soon. */
async function assertDrainsAtOnce(
  started: ReturnType<typeof startSession>,
  draining: AbortController,
) {
  const before = Date.now();
  draining.abort();
  assert.ok(
    await settlesWithin(started.running, 2000),
    `the session still runs ${Date.now() - before} ms after a draining stop`,
  );
  await started.running;
  assert.ok(started.lines.some((l) => l.startsWith("info session drained")));
  assert.equal(started.builds.length, 0);
}

Deno.test({
  ...opts,
  name:
    "runSession() says at once that no server listens, naming it, and not at each attempt or reply timeout",
  async fn() {
    const abort = new AbortController();
    const port = quietPort();
    try {
      const started = startSession(port, "NOSERVE0", abort.signal, {
        replyTimeoutMs: 100,
      });
      await eventually(
        () => started.lines.length > 0,
        "a warning",
      );
      assert.match(
        started.lines[0],
        new RegExp(
          `^warn server unreachable worker=NOSERVE0 server=127\\.0\\.0\\.1:${port} silent=0 error=.*Connection refused`,
        ),
      );
      // Attempts fail every few hundred ms meanwhile, reply timeouts pass.
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(started.lines.length, 1, started.lines.join("\n"));
      abort.abort();
      await started.running;
    } finally {
      abort.abort();
    }
  },
});

// Every wait below is far longer than the test: only the drain can end it.
const PATIENT = { replyTimeoutMs: 60_000, requestPeriodMs: 60_000 };

Deno.test({
  ...opts,
  name:
    "runSession() with a draining stop ends at once while no server listens",
  async fn() {
    const abort = new AbortController();
    const draining = new AbortController();
    try {
      const started = startSession(quietPort(), "NOSERVE1", abort.signal, {
        ...PATIENT,
        draining: draining.signal,
      });
      // Connection attempts are refused meanwhile; no probe ever comes.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await assertDrainsAtOnce(started, draining);
    } finally {
      abort.abort();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "runSession() with a draining stop ends at once while the server does not answer its registration",
  fn: () =>
    withScriptedServer(true, async (server, abort) => {
      server.state.frozen = true;
      const draining = new AbortController();
      const started = startSession(server.port, "NOINFO01", abort.signal, {
        ...PATIENT,
        draining: draining.signal,
      });
      await eventually(() => server.state.hellos >= 1, "registration begun");
      await assertDrainsAtOnce(started, draining);
      assert.equal(server.state.readies, 0);
    }),
});

/**
 * A session served by a scripted server until its first request, then
 * brought by `strand` into some wait for that server, then drained.
 */
async function drainAfterFirstRequest(
  name: string,
  strand: (server: Awaited<ReturnType<typeof scriptedServer>>) => Promise<void>,
) {
  const server = await scriptedServer(false);
  const abort = new AbortController();
  const draining = new AbortController();
  try {
    const started = startSession(server.port, name, abort.signal, {
      replyTimeoutMs: 60_000,
      draining: draining.signal,
    });
    await eventually(() => server.state.requests >= 1, "first request");
    await strand(server);
    await assertDrainsAtOnce(started, draining);
  } finally {
    abort.abort();
    await server.close();
  }
}

Deno.test({
  ...opts,
  name:
    "runSession() with a draining stop ends at once when its server went away between two requests",
  fn: () =>
    drainAfterFirstRequest("GONE0001", async (server) => {
      await server.close();
      // Requests now wait for a connection that never comes back.
      await new Promise((resolve) => setTimeout(resolve, 500));
    }),
});

Deno.test({
  ...opts,
  name:
    "runSession() with a draining stop ends at once when the connection that owed it a reply is lost",
  fn: () =>
    drainAfterFirstRequest("LOST0001", async (server) => {
      server.state.frozen = true;
      await eventually(() => server.state.requests >= 2, "unanswered request");
      await server.close();
      await new Promise((resolve) => setTimeout(resolve, 300));
    }),
});

Deno.test({
  ...opts,
  name:
    "a keyed worker expired while its connection stayed up (frozen, partitioned) registers again and builds",
  async fn() {
    const secret = "shared-secret-of-the-farm";
    const f = await startFixture({ workerKeys: new Map([["farm", secret]]) });
    const abort = new AbortController();
    try {
      const [first] = await f.addJobs([job("before", 1)]);
      const { builds, guix } = controlledGuix();
      const lines: string[] = [];
      const session = runSession(
        sessionOptions(f.port, "FROZEN01", guix, lines, {
          authKey: { id: "farm", secret },
        }),
        abort.signal,
      );
      await eventually(() => builds.length === 1, "first build");
      builds[0].finish(0);
      await untilStatus(f, first, BuildStatus.succeeded);
      // Its silence outlasted the timeout (SIGSTOP, say): the sweeper
      // expires it, and the dispatcher learns so at its next touch.
      const later = {
        now: () => f.clock.now() + 300_000,
        monotonic: () => f.clock.monotonic() + 300_000,
        sleep: (ms: number) => f.clock.sleep(ms),
      };
      assert.deepEqual(
        await sweepOnce({
          store: f.store,
          clock: later,
          logger: f.logger,
          timeoutSeconds: 120,
        }),
        ["FROZEN01"],
      );
      await f.clock.advance(10_000);
      const [second] = await f.addJobs([job("after", 2)]);
      await eventually(() => builds.length === 2, "build after the expiry");
      builds[1].finish(0);
      await untilStatus(f, second, BuildStatus.succeeded);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("info worker asked to register") &&
          l.includes("worker=FROZEN01")
        ),
        f.lines.join("\n"),
      );
      abort.abort();
      await session;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

/** A job whose daemon is taken for stuck after 1 s of silence and the grace. */
function silentJob(name: string, i: number) {
  return { ...job(name, i), maxSilent: 1 };
}

Deno.test({
  ...opts,
  name:
    "a Lorica session whose daemon falls silent kills guix build, hands the build back (requeued, no worker) and asks for work again",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([silentJob("stuck", 1)]);
      const { builds, lines, running } = startSession(
        f.port,
        "SILENT01",
        abort.signal,
        // A second before it asks again: time to see the build requeued.
        {
          daemonSilenceGraceSeconds: 0.2,
          requestPeriodMs: 2000,
          random: () => 0,
        },
      );
      await untilStatus(f, drv, BuildStatus.started);
      await eventually(() => builds[0]?.killed, "guix build killed");
      await eventually(async () => {
        const build = await f.store.getBuildByDerivation(drv);
        return build?.status === BuildStatus.scheduled && build.worker === null;
      }, "build requeued with no worker");
      const silent = lines.filter((l) => l.startsWith("error daemon silent"));
      assert.equal(silent.length, 1, lines.join("\n"));
      assert.match(
        silent[0],
        new RegExp(
          `^error daemon silent worker=SILENT01 seconds=1 drv=${drv} max_silent=1 action="guix build killed, build handed back"$`,
        ),
      );
      assert.ok(
        !f.lines.some((l) => l.includes("build failed") && l.includes(drv)),
        f.lines.join("\n"),
      );
      // The next request gets the build again, on the same stuck daemon.
      await eventually(() => builds.length === 2, "asked for work again");
      builds[1].finish(0);
      await untilStatus(f, drv, BuildStatus.succeeded);
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "a session without extensions whose daemon falls silent reports the build failed: Cuirass cannot take it back",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([silentJob("stuck", 1)]);
      const { builds, lines, running } = startSession(
        f.port,
        "SILENT02",
        abort.signal,
        { extensions: false, daemonSilenceGraceSeconds: 0.2 },
      );
      await untilStatus(f, drv, BuildStatus.failed);
      assert.equal(builds[0].killed, true);
      assert.ok(
        lines.some((l) =>
          l.startsWith("error daemon silent ") &&
          l.includes(' action="guix build killed, build reported failed"')
        ),
        lines.join("\n"),
      );
      await f.addJobs([job("next", 2)]);
      await eventually(() => builds.length === 2, "asked for work again");
      builds[1].finish(0);
      abort.abort();
      await running;
    }),
});

Deno.test({
  ...opts,
  name:
    "a session stopped without drain kills its guix build: a worker's forced stop leaves no build process behind",
  fn: () =>
    withFixture(async (f, abort) => {
      const [drv] = await f.addJobs([job("forever", 1)]);
      const { builds, running } = startSession(
        f.port,
        "FORCED01",
        abort.signal,
      );
      await untilStatus(f, drv, BuildStatus.started);
      abort.abort();
      await running;
      assert.equal(builds[0].killed, true);
    }),
});
