import assert from "node:assert/strict";
import type { SessionOptions } from "../../../lib/worker/session.ts";
import {
  closing,
  restartableFixture,
  runningSession,
  sessionOptions,
  untilStatus,
} from "./_session_helpers.ts";
import { DiskGuard } from "../../../lib/worker/disk_guard.ts";
import { createWebApp } from "../../../lib/web/app.ts";
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
import { controlledGuix } from "./_controlled_guix.ts";

async function statusOf(f: Fixture, drv: string) {
  return (await f.store.getBuildByDerivation(drv))?.status;
}

/**
 * Starts a session named `name` against `port` on a controlled `guix` (its
 * own unless given), logging to `lines`, pinging every 200 ms and giving up
 * on a reply after 1 s; a runningSession(), stopped by `stop()` or by leaving
 * the `await using` scope that holds it.
 */
function startSession(
  port: number,
  name: string,
  extra: Partial<SessionOptions> = {},
  { builds, guix } = controlledGuix(),
) {
  const lines: string[] = [];
  const session = runningSession(
    sessionOptions(port, name, lines, {
      guix,
      pingIntervalMs: 200,
      replyTimeoutMs: 1000,
      ...extra,
    }),
  );
  return { builds, guix, lines, ...session };
}

Deno.test({
  name:
    "runSession() negotiates Lorica extensions, builds, and reports only after the build finished",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([job("hello", 1)]);
    await using session = startSession(f.port, "LORICA01");
    const { builds } = session;
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
  },
});

Deno.test({
  name:
    "C08: the server restarts mid-build; the worker registers again holding the build, which is not requeued",
  async fn() {
    await using server = await restartableFixture();
    const [drv] = await server.first.addJobs([job("long", 1), job("next", 2)]);
    await using session = startSession(server.port, "RESTART1");
    const { builds } = session;
    await untilStatus(server.first, drv, BuildStatus.started);
    await server.kill();
    const f = await server.restart();
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
  },
});

Deno.test({
  name: "C08: an instant success with an empty log counts as success",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([job("valid-already", 1)]);
    await using session = startSession(f.port, "INSTANT1");
    const { builds } = session;
    await eventually(() => builds.length === 1);
    builds[0].finish(0);
    await untilStatus(f, drv, BuildStatus.succeeded);
  },
});

Deno.test({
  name:
    "cancel reaches a Lorica session: its guix build is killed, no result is sent, it asks for more work",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([job("forever", 1)]);
    await using session = startSession(f.port, "CANCEL01");
    const { builds, lines } = session;
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
  },
});

for (const how of ["through this server", "by another process"] as const) {
  Deno.test({
    name:
      `an evaluation canceled ${how} stops a Lorica session's guix build, and it asks for more work`,
    async fn() {
      await using f = closing(await startFixture());
      const [drv] = await f.addJobs([job("forever", 1)]);
      await using session = startSession(f.port, "EVAL0001");
      const { builds, lines } = session;
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
    },
  });
}

Deno.test({
  name:
    "a session with extensions off speaks plain Cuirass and is served by a Lorica server",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([job("plain", 1)]);
    await using session = startSession(f.port, "PLAIN001", {
      extensions: false,
    });
    const { builds } = session;
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
  },
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

Deno.test({
  name:
    "C03: a server that stops answering gets no flood of requests; the worker reconnects and resumes",
  async fn() {
    await using server = closing(await scriptedServer(true));
    server.state.frozen = true;
    await using session = startSession(server.port, "FROZEN01", {
      replyTimeoutMs: 300,
    });
    const { lines } = session;
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
  },
});

Deno.test({
  name:
    "the reply timeout counts the time that passed: a step of the wall clock back an hour does not stretch it",
  async fn() {
    await using server = closing(await scriptedServer(false));
    server.state.frozen = true;
    let offset = 0;
    const clock = { ...systemClock, now: () => Date.now() + offset };
    await using session = startSession(server.port, "STEPPED1", {
      replyTimeoutMs: 300,
      clock,
    });
    // The worker waits for the server-info that will not come (a Cuirass
    // server: no welcome comes either to start the wait anew).
    await eventually(() => server.state.infos >= 1, "info request");
    offset = -3_600_000;
    await eventually(
      () =>
        session.lines.some((l) =>
          l.startsWith("warn server silent ") &&
          l.includes(" awaiting=server-info ")
        ),
      "server silent",
    );
  },
});

Deno.test({
  name:
    "C03: a work request left unanswered is not repeated on the same connection",
  async fn() {
    await using server = closing(await scriptedServer(true));
    await using _session = startSession(server.port, "STALL001", {
      replyTimeoutMs: 400,
    });
    await eventually(() => server.state.requests >= 1);
    server.state.frozen = true;
    const before = server.state.requests;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    // Each reconnect costs a handshake (answered by nobody), not a request.
    assert.ok(
      server.state.requests - before <= 1,
      `${server.state.requests - before} extra`,
    );
  },
});

Deno.test({
  name:
    "C09: no work is requested while the disk is low, one log line per period, then it resumes",
  async fn() {
    await using server = closing(await scriptedServer(false));
    const diskLines: string[] = [];
    let free = 1024;
    const disk = new DiskGuard({
      paths: ["/store", "/tmp"],
      minimumBytes: 5 * 1024 ** 3,
      freeBytes: () => Promise.resolve(free),
      clock: systemClock,
      logger: createLogger({
        timestamps: false,
        sink: (l) => diskLines.push(l),
      }),
      logPeriodMs: 1000,
    });
    await using _session = startSession(server.port, "DISK0001", { disk });
    await eventually(() => server.state.readies >= 1);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assert.equal(server.state.requests, 0);
    const warnings = diskLines.filter((l) =>
      l.startsWith("warn disk space low")
    );
    assert.ok(
      warnings.length >= 2 && warnings.length <= 4,
      `${warnings.length} lines`,
    );
    free = 10 * 1024 ** 3;
    await eventually(() => server.state.requests >= 1, "resumed");
    assert.ok(diskLines.some((l) => l.startsWith("info disk space ok")));
  },
});

Deno.test({
  name:
    "a session with the right worker key builds on a server that requires one; without it, it gets nothing",
  async fn() {
    const secret = "shared-secret-of-the-farm";
    await using f = closing(
      await startFixture({ workerKeys: new Map([["farm", secret]]) }),
    );
    const [drv] = await f.addJobs([job("guarded", 1)]);
    // Both sessions build on one guix: only the keyed one may start a build.
    const guix = controlledGuix();
    const { builds } = guix;
    await using keyless = startSession(f.port, "NOKEY001", {}, guix);
    await eventually(() =>
      f.lines.some((l) =>
        l.startsWith("warn worker refused") && l.includes("NOKEY001")
      )
    );
    assert.ok(
      keyless.lines.some((l) => l.startsWith("error authentication required")),
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(builds.length, 0);
    await using _keyed = startSession(f.port, "KEYED001", {
      authKey: { id: "farm", secret },
    }, guix);
    await eventually(() => builds.length === 1, "keyed worker builds");
    builds[0].finish(0);
    await untilStatus(f, drv, BuildStatus.succeeded);
  },
});

Deno.test({
  name:
    "runSession() with a draining stop finishes and reports its build, then asks for nothing more",
  async fn() {
    await using f = closing(await startFixture());
    const draining = new AbortController();
    const [first, second] = await f.addJobs([
      job("first", 1),
      job("second", 2),
    ]);
    await using session = startSession(f.port, "DRAIN001", {
      draining: draining.signal,
    });
    const { builds, lines } = session;
    await eventually(() => builds.length === 1, "build started");
    // SIGTERM arrives mid-build: the build goes on and is reported.
    draining.abort();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(builds[0].killed, false);
    builds[0].finish(0, new TextEncoder().encode("done\n"));
    await untilStatus(f, first, BuildStatus.succeeded);
    // The session ends by itself, without taking the second build.
    await session.running;
    assert.equal(builds.length, 1);
    assert.equal(await statusOf(f, second), BuildStatus.scheduled);
    assert.ok(lines.some((l) => l.includes("session drained")));
  },
});

Deno.test({
  name:
    "C09: a Lorica server hears that a worker is low on disk, and /workers shows it",
  async fn() {
    await using f = closing(await startFixture());
    let free = 1024;
    const disk = new DiskGuard({
      paths: ["/store"],
      minimumBytes: 5 * 1024 ** 3,
      freeBytes: () => Promise.resolve(free),
      clock: systemClock,
      logger: createLogger({ sink: () => {} }),
      logPeriodMs: 1000,
    });
    await using _session = startSession(f.port, "DISKLOW1", { disk });
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
  },
});

Deno.test({
  name:
    "a ping that fails (a connection lost mid-send, here the disk check) is logged once, and the pings go on",
  async fn() {
    await using f = closing(await startFixture());
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
    await using session = startSession(f.port, "PINGFAIL1", { disk });
    const { lines } = session;
    await eventually(() => f.dispatcher.diskLow("PINGFAIL1"), "a ping");
    assert.equal(failures, 0);
    assert.equal(
      lines.filter((l) => l.startsWith("warn worker ping failed ")).length,
      1,
      lines.join("\n"),
    );
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
  name:
    "runSession() refuses a build request that is not a derivation of its store with sane limits: no guix, a warning naming it, build-failed",
  async fn() {
    await using server = closing(
      await handingOutServer([
        ...HOSTILE_REQUESTS.map(([, request]) => request),
        buildRequest({}),
      ]),
    );
    await using session = startSession(server.port, "HOSTILE1", {
      storeDir: "/gnu/store",
    });
    const { builds, lines } = session;
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
  name:
    "runSession() says at once that no server listens, naming it, and not at each attempt or reply timeout",
  async fn() {
    const port = quietPort();
    await using started = startSession(port, "NOSERVE0", {
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
  },
});

// Every wait below is far longer than the test: only the drain can end it.
const PATIENT = { replyTimeoutMs: 60_000, requestPeriodMs: 60_000 };

Deno.test({
  name:
    "runSession() with a draining stop ends at once while no server listens",
  async fn() {
    const draining = new AbortController();
    await using started = startSession(quietPort(), "NOSERVE1", {
      ...PATIENT,
      draining: draining.signal,
    });
    // Connection attempts are refused meanwhile; no probe ever comes.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await assertDrainsAtOnce(started, draining);
  },
});

Deno.test({
  name:
    "runSession() with a draining stop ends at once while the server does not answer its registration",
  async fn() {
    await using server = closing(await scriptedServer(true));
    server.state.frozen = true;
    const draining = new AbortController();
    await using started = startSession(server.port, "NOINFO01", {
      ...PATIENT,
      draining: draining.signal,
    });
    await eventually(() => server.state.hellos >= 1, "registration begun");
    await assertDrainsAtOnce(started, draining);
    assert.equal(server.state.readies, 0);
  },
});

/**
 * A session served by a scripted server until its first request, then
 * brought by `strand` into some wait for that server, then drained.
 */
async function drainAfterFirstRequest(
  name: string,
  strand: (server: Awaited<ReturnType<typeof scriptedServer>>) => Promise<void>,
) {
  await using server = closing(await scriptedServer(false));
  const draining = new AbortController();
  await using started = startSession(server.port, name, {
    replyTimeoutMs: 60_000,
    draining: draining.signal,
  });
  await eventually(() => server.state.requests >= 1, "first request");
  await strand(server);
  await assertDrainsAtOnce(started, draining);
}

Deno.test({
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
  name:
    "a keyed worker expired while its connection stayed up (frozen, partitioned) registers again and builds",
  async fn() {
    const secret = "shared-secret-of-the-farm";
    await using f = closing(
      await startFixture({ workerKeys: new Map([["farm", secret]]) }),
    );
    const [first] = await f.addJobs([job("before", 1)]);
    await using session = startSession(f.port, "FROZEN01", {
      authKey: { id: "farm", secret },
    });
    const { builds } = session;
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
  },
});

/** A job whose daemon is taken for stuck after 1 s of silence and the grace. */
function silentJob(name: string, i: number) {
  return { ...job(name, i), maxSilent: 1 };
}

Deno.test({
  name:
    "a Lorica session whose daemon falls silent kills guix build, hands the build back (requeued, no worker) and asks for work again",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([silentJob("stuck", 1)]);
    await using session = startSession(
      f.port,
      "SILENT01",
      // A second before it asks again: time to see the build requeued.
      {
        daemonSilenceGraceSeconds: 0.2,
        requestPeriodMs: 2000,
        random: () => 0,
      },
    );
    const { builds, lines } = session;
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
  },
});

Deno.test({
  name:
    "a session without extensions whose daemon falls silent reports the build failed: Cuirass cannot take it back",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([silentJob("stuck", 1)]);
    await using session = startSession(f.port, "SILENT02", {
      extensions: false,
      daemonSilenceGraceSeconds: 0.2,
    });
    const { builds, lines } = session;
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
  },
});

Deno.test({
  name:
    "a session stopped without drain kills its guix build: a worker's forced stop leaves no build process behind",
  async fn() {
    await using f = closing(await startFixture());
    const [drv] = await f.addJobs([job("forever", 1)]);
    await using session = startSession(f.port, "FORCED01");
    await untilStatus(f, drv, BuildStatus.started);
    await session.stop();
    assert.equal(session.builds[0].killed, true);
  },
});
