// The whole remote-mode server (ZMQ, log and web ports) under hostile input
// and under load. Fuzz runs are seeded: the seed is printed, and
// LORICA_FUZZ_SEED=<n> replays a run.

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { startTestServer, type TestServer } from "./_test_server.ts";
import { BuildStatus, EvaluationStatus } from "../../../lib/store/types.ts";
import { thisProcess } from "../../../lib/server/evaluation_owner.ts";
import {
  encodeMessage,
  LORICA_FEATURES,
  type Message,
} from "../../../lib/protocol/messages.ts";
import { openLogUpload } from "../../../lib/protocol/log_upload.ts";
import { silentLogger } from "../../../lib/log.ts";
import { type Clock, systemClock } from "../../../lib/clock.ts";
import { encodeCommandFrame } from "../../../lib/zmtp/frame.ts";
import { encodeGreeting, encodeReady } from "../../../lib/zmtp/greeting.ts";
import { eventually, FakeWorker, job, STORE_DIR } from "./_dispatch_fixture.ts";

/** A small seeded PRNG (mulberry32). */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: T[]) => items[Math.floor(next() * items.length)],
    bytes(n: number) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = Math.floor(next() * 256);
      return out;
    },
  };
}

function fuzzSeed(port: string): number {
  const fixed = Deno.env.get("LORICA_FUZZ_SEED");
  const seed = fixed ? Number(fixed) : Math.floor(Math.random() * 2 ** 31);
  // deno-lint-ignore no-console
  console.log(`fuzz ${port}: seed ${seed} (replay: LORICA_FUZZ_SEED=${seed})`);
  return seed;
}

async function addBuilds(t: TestServer, count: number): Promise<string[]> {
  const evaluation = await t.store.addEvaluation("spec", [], 1);
  const jobs = Array.from({ length: count }, (_, i) => job(`p${i}`, i));
  await t.store.registerBuilds(evaluation, jobs, { priority: 5, now: 1 });
  return jobs.map((j) => j.derivation);
}

/** Resolves once the server closed `conn`; rejects after a generous 10 s. */
async function hungUp(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  const deadline = AbortSignal.timeout(10_000);
  while (!deadline.aborted) {
    const read = await Promise.race([
      conn.read(buffer).catch(() => null),
      new Promise<"late">((resolve) =>
        deadline.addEventListener("abort", () => resolve("late"))
      ),
    ]);
    if (read === null) return;
  }
  throw new Error("Cannot see the server hang up within 10 s");
}

function unexpectedErrors(lines: string[]): string[] {
  return lines.filter((l) =>
    l.startsWith("error message handling failed") ||
    l.startsWith("error dispatcher stopped") ||
    l.startsWith("error log connection crashed") ||
    l.includes("database is locked")
  );
}

Deno.test({
  name: "fuzz (ZMQ port): hostile bytes and messages never stop the dispatcher",
  async fn() {
    const rng = prng(fuzzSeed("zmq"));
    const t = await startTestServer();
    try {
      const [drv] = await addBuilds(t, 1);
      const valid: Message[] = [
        { type: "worker-request-info" },
        {
          type: "worker-ready",
          worker: {
            name: "F",
            address: "127.0.0.1",
            machine: "m",
            systems: ["x86_64-linux"],
            lastSeen: 0,
          },
        },
        { type: "worker-request-work", name: "F", requestId: 3 },
        { type: "build-started", drv, worker: "F" },
        { type: "build-succeeded", drv, url: "http://127.0.0.1:1", log: null },
        { type: "lorica-hello", version: 1, features: ["holding"] },
        { type: "build-cancel", drv },
      ];
      const encoded = valid.map((m) => encodeMessage(m));
      const alphabet = new TextEncoder().encode('()"#\\ ft-1a\x00\xff');
      for (let round = 0; round < 150; round++) {
        if (rng.int(3) === 0) {
          // Raw TCP: random bytes, sometimes after a valid greeting start.
          const conn = await Deno.connect({
            hostname: "127.0.0.1",
            port: t.server.backendPort,
          });
          const prefix = rng.int(2) === 0
            ? new Uint8Array([
              0xff,
              0,
              0,
              0,
              0,
              0,
              0,
              0,
              1,
              0x7f,
              3,
              rng.int(3),
            ])
            : new Uint8Array();
          await conn.write(
            new Uint8Array([...prefix, ...rng.bytes(rng.int(300))]),
          ).catch(() => 0);
          conn.close();
          continue;
        }
        const w = await FakeWorker.connect(t.server.backendPort, { name: "F" });
        for (let k = 0; k < 10; k++) {
          const base = rng.pick(encoded).slice();
          for (let m = rng.int(4); m > 0; m--) {
            if (base.length === 0) break;
            base[rng.int(base.length)] = rng.pick([...alphabet]);
          }
          const frames = rng.int(5) === 0
            ? [rng.bytes(rng.int(3)), base, rng.bytes(rng.int(3))]
            : [
              new Uint8Array(),
              rng.int(10) === 0 ? base.subarray(0, rng.int(base.length)) : base,
            ];
          await w.sendFrames(frames);
        }
        await w.close();
      }
      const probe = await FakeWorker.connect(t.server.backendPort, {
        name: "AFTER",
      });
      await probe.send({ type: "worker-request-info" });
      assert.equal((await probe.next()).type, "server-info");
      await probe.ready();
      const reply = await probe.requestWork();
      assert.ok(reply.type === "build" || reply.type === "no-build");
      await probe.close();
      assert.deepEqual(unexpectedErrors(t.lines), []);
      assert.equal(
        await fetch(`${t.web}/api/queue?nr=5`).then(async (r) => {
          await r.body?.cancel();
          return r.status;
        }),
        200,
      );
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name:
    "the ZMQ port refuses a message bigger than the dispatcher decodes from its frame header, with a warning",
  async fn() {
    const t = await startTestServer();
    try {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: t.server.backendPort,
      });
      try {
        await conn.write(encodeGreeting());
        await conn.write(
          encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
        );
        // The empty delimiter, then a header announcing a 2 MiB payload
        // (twice what the dispatcher decodes) and three bytes of it.
        await conn.write(
          new Uint8Array([
            0x01,
            0x00,
            0x02,
            0,
            0,
            0,
            0,
            0,
            0x20,
            0,
            0,
            1,
            2,
            3,
          ]),
        );
        await hungUp(conn);
      } finally {
        conn.close();
      }
      await eventually(() =>
        t.lines.some((l) =>
          l.startsWith("warn zmtp message refused ") &&
          l.includes(" peer=127.0.0.1 ") &&
          l.includes(` size=${2 * 1024 * 1024} `)
        )
      );
      const w = await FakeWorker.connect(t.server.backendPort, { name: "OK" });
      await w.send({ type: "worker-request-info" });
      assert.equal((await w.next()).type, "server-info");
      await w.close();
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name:
    "the ZMQ port holds at most maxWorkerConnections and logs each one refused",
  async fn() {
    const t = await startTestServer({ config: { maxWorkerConnections: 4 } });
    const idle: Deno.Conn[] = [];
    try {
      await assertRefusedPast(t, 4, idle);
      for (const conn of idle.splice(0)) conn.close();
      await eventually(async () => {
        const w = await FakeWorker.connect(t.server.backendPort, {
          name: "LATER",
        }).catch(() => null);
        if (w === null) return false;
        await w.send({ type: "worker-request-info" });
        const reply = await w.next().catch(() => null);
        await w.close();
        return reply?.type === "server-info";
      });
    } finally {
      for (const conn of idle) conn.close();
      await t.close();
    }
  },
});

Deno.test({
  name:
    "the ZMQ port holds at most maxWorkerConnectionsPerAddress from one address, below the total",
  async fn() {
    const t = await startTestServer({
      config: { maxWorkerConnections: 8, maxWorkerConnectionsPerAddress: 2 },
    });
    const idle: Deno.Conn[] = [];
    try {
      await assertRefusedPast(t, 2, idle);
    } finally {
      for (const conn of idle) conn.close();
      await t.close();
    }
  },
});

/**
 * Opens `limit` connections to `t`'s ZMQ port from 127.0.0.1, kept in
 * `idle` for the caller to close, and asserts that one more is hung up
 * and logged as refused with that limit.
 */
async function assertRefusedPast(
  t: { server: { backendPort: number }; lines: string[] },
  limit: number,
  idle: Deno.Conn[],
): Promise<void> {
  const connect = () =>
    Deno.connect({ hostname: "127.0.0.1", port: t.server.backendPort });
  for (let i = 0; i < limit; i++) idle.push(await connect());
  const extra = await connect();
  try {
    await hungUp(extra);
  } finally {
    extra.close();
  }
  assert.ok(
    t.lines.some((l) =>
      l.startsWith("warn zmtp connection refused ") &&
      l.includes(" peer=127.0.0.1 ") && l.includes(` limit=${limit}`)
    ),
    t.lines.join("\n"),
  );
}

Deno.test({
  name:
    "fuzz (log port): hostile headers and bodies write nothing outside <hash>.log.gz",
  async fn() {
    const rng = prng(fuzzSeed("log"));
    const t = await startTestServer();
    try {
      const names = [
        `${STORE_DIR}/../../etc/passwd.drv`,
        `${STORE_DIR}/0123456789abcdfghijklmnpqrsvwxyz-ok.drv`,
        "../x.drv",
        `${STORE_DIR}/0123456789abcdfghijklmnpqrsvwxyz-a/../../b.drv`,
        "",
        "\u0000",
      ];
      for (let round = 0; round < 150; round++) {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: t.server.logPort,
        });
        const drv = rng.pick(names);
        const header = rng.pick([
          `(log (version 0) (derivation ${JSON.stringify(drv)}))`,
          `(log (version 1) (derivation ${JSON.stringify(drv)}))`,
          `(log (version 0) (derivation ${JSON.stringify(drv)})`,
          `(${"(".repeat(rng.int(100))}`,
          "",
        ]);
        const body = rng.int(2) === 0
          ? zlib.gzipSync(rng.bytes(rng.int(2000)))
          : rng.bytes(rng.int(2000));
        await conn.write(
          new Uint8Array([...new TextEncoder().encode(header), ...body]),
        ).catch(() => 0);
        await conn.closeWrite().catch(() => {});
        const sink = new Uint8Array(256);
        while (await conn.read(sink).catch(() => null) !== null);
        conn.close();
      }
      // A real upload, by the worker running the build, still works
      // afterwards; a log for a build that runs nowhere is refused.
      const [drv] = await addBuilds(t, 1);
      await t.store.upsertWorker({
        name: "LOGGER01",
        address: "127.0.0.1",
        machine: "test",
        systems: ["x86_64-linux"],
        lastSeen: 1,
        timeoutSeconds: 120,
      });
      assert.equal(
        (await t.store.popBuild("LOGGER01", ["x86_64-linux"], 2))?.derivation,
        drv,
      );
      const up = await openLogUpload({
        hostname: "127.0.0.1",
        port: t.server.logPort,
        drv,
        logger: silentLogger,
      });
      await up.write(new TextEncoder().encode("fine\n"));
      await up.close();
      await eventually(() =>
        t.lines.some((l) =>
          l.startsWith("info log received") && l.includes(drv)
        )
      );
      for await (const entry of Deno.readDir(`${t.root}/logs`)) {
        assert.match(entry.name, /^[0-9a-z]{32}\.log\.gz$/);
      }
      const outside = [...Deno.readDirSync(t.root)].map((e) => e.name).sort();
      assert.deepEqual(outside.filter((n) => !n.startsWith("db.sqlite")), [
        "logs",
        "state",
      ]);
      assert.deepEqual(unexpectedErrors(t.lines), []);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name:
    "fuzz (web port): hostile requests get answers, never a 5xx, and the server stays up",
  async fn() {
    const rng = prng(fuzzSeed("http"));
    const t = await startTestServer();
    try {
      await addBuilds(t, 3);
      const paths = [
        "/",
        "/api/queue",
        "/api/latestbuilds",
        "/build/",
        "/build/1/log/raw",
        "/api/evaluation",
        "/eval/",
        "/workers",
        "/specifications",
        "/jobset/",
        "/%00",
        "/..%2f..%2fetc/passwd",
        "/build/99999999999999999999",
        "/build/-1/details",
        "/api/jobs",
        "/metrics",
      ];
      const queries = [
        "",
        "?nr=5",
        "?nr=-1",
        "?nr=abc",
        "?nr=1e99",
        "?id=%ff%fe",
        "?nr=" + "9".repeat(400),
        "?system=%22%3E%3Cscript%3E",
        "?a=b&a=c&nr=2",
      ];
      const failures: string[] = [];
      for (let round = 0; round < 300; round++) {
        let path = rng.pick(paths) +
          rng.pick(["", String(rng.int(5)), "/", "x%2e%2e"]);
        path += rng.pick(queries);
        const method = rng.pick([
          "GET",
          "GET",
          "HEAD",
          "POST",
          "PUT",
          "DELETE",
        ]);
        const response = await fetch(`${t.web}${path}`, {
          method,
          body: method === "POST" || method === "PUT"
            ? rng.bytes(rng.int(500))
            : undefined,
        });
        await response.body?.cancel();
        if (response.status >= 500) {
          failures.push(`${method} ${path} -> ${response.status}`);
        }
      }
      assert.deepEqual(failures, []);
      const ok = await fetch(`${t.web}/api/queue?nr=5`);
      assert.equal(ok.status, 200);
      await ok.body?.cancel();
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name:
    "C17: 20 workers report 500 builds while 50 clients poll the API: no lock error, no lost status",
  async fn() {
    const t = await startTestServer();
    // The workers' publish server: every narinfo is there.
    const publish = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen() {},
    }, () => new Response("StorePath: x\n"));
    const url = `http://127.0.0.1:${publish.addr.port}`;
    try {
      const drvs = await addBuilds(t, 500);
      let done = false;
      const latencies: number[] = [];
      const pollers = Array.from({ length: 50 }, async (_, i) => {
        const route = i % 2 === 0
          ? "/api/latestbuilds?nr=50"
          : "/api/queue?nr=50";
        while (!done) {
          const start = performance.now();
          const response = await fetch(`${t.web}${route}`);
          assert.equal(response.status, 200);
          await response.json();
          latencies.push(performance.now() - start);
        }
      });
      const workers = Array.from({ length: 20 }, async (_, i) => {
        const w = await FakeWorker.connect(t.server.backendPort, {
          name: `C17W${i}`,
        });
        await w.ready();
        for (;;) {
          const reply = await w.requestWork();
          if (reply.type !== "build") break;
          await w.send({
            type: "build-started",
            drv: reply.drv,
            worker: w.name,
          });
          await w.send({
            type: "build-succeeded",
            drv: reply.drv,
            url,
            log: null,
          });
        }
        await w.close();
      });
      await Promise.all(workers);
      await eventually(async () => {
        await t.server.fetchesIdle();
        const counts = await t.store.countBuildsByStatus();
        return counts.get(BuildStatus.succeeded) === drvs.length;
      }, "every build succeeded");
      done = true;
      await Promise.all(pollers);
      latencies.sort((a, b) => a - b);
      // deno-lint-ignore no-console
      console.log(
        `C17 API p99: ${
          latencies[Math.floor(latencies.length * 0.99)]?.toFixed(0)
        } ms over ${latencies.length} requests`,
      );
      assert.deepEqual(unexpectedErrors(t.lines), []);
      const ok = t.lines.filter((l) =>
        l.startsWith("info build succeeded")
      ).length;
      assert.equal(ok, drvs.length, "one success per build, none twice");
    } finally {
      await publish.shutdown();
      await t.close();
    }
  },
});

Deno.test({
  name:
    "a clean restart does not count the server's downtime as worker silence",
  async fn() {
    const first = await startTestServer();
    const root = first.root;
    const [drv] = await addBuilds(first, 1);
    const now = Math.floor(Date.now() / 1000);
    await first.store.upsertWorker({
      name: "BUSY",
      address: "127.0.0.1",
      machine: "m",
      systems: ["x86_64-linux"],
      lastSeen: now - 60,
      timeoutSeconds: 120,
    });
    await first.store.popBuild("BUSY", ["x86_64-linux"], now);
    await first.close(true);
    // Back after a 1,000-s upgrade, far past the 120-s worker timeout.
    const later: Clock = { ...systemClock, now: () => Date.now() + 1_000_000 };
    const second = await startTestServer({ root, clock: later });
    try {
      await eventually(() =>
        second.lines.some((l) => l.startsWith("info worker clocks resumed"))
      );
      const line = second.lines.find((l) => l.includes("clocks resumed"))!;
      const downtime = Number(line.match(/downtime=(\d+)/)![1]);
      assert.ok(downtime >= 1000 && downtime < 1010, line);
      assert.ok(await second.store.getWorker("BUSY"), "BUSY was expired");
      const build = await second.store.getBuildByDerivation(drv);
      assert.equal(build?.status, BuildStatus.submitted);
      assert.equal(build?.worker, "BUSY");
    } finally {
      await second.close();
    }
  },
});

Deno.test({
  name:
    "a clean restart resumes an output fetch in progress: the build succeeds, not built again",
  async fn() {
    // The worker's publish server: no narinfo until `published`.
    let published = false;
    const publish = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () =>
        published
          ? new Response("StorePath: x\n")
          : new Response("", { status: 404 }),
    );
    const url = `http://127.0.0.1:${publish.addr.port}`;
    const first = await startTestServer();
    const root = first.root;
    let firstRunning = true;
    let second: TestServer | undefined;
    try {
      const [drv] = await addBuilds(first, 1);
      const worker = await FakeWorker.connect(first.server.backendPort, {
        name: "REPORTED",
      });
      await worker.ready();
      const reply = await worker.requestWork();
      assert.equal(reply.type === "build" && reply.drv, drv);
      await worker.send({ type: "build-started", drv, worker: worker.name });
      await worker.send({ type: "build-succeeded", drv, url, log: null });
      await eventually(() =>
        first.lines.some((l) => l.startsWith("warn output fetch retried"))
      );
      await worker.close();
      firstRunning = false;
      await first.close(true);
      assert.ok(
        first.lines.includes("info output fetches saved count=1"),
        first.lines.join("\n"),
      );

      published = true;
      second = await startTestServer({ root });
      await eventually(async () =>
        (await second!.store.getBuildByDerivation(drv))?.status ===
          BuildStatus.succeeded
      );
      assert.ok(second.lines.includes("info output fetches resumed count=1"));
      const build = await second.store.getBuildByDerivation(drv);
      assert.equal(build?.worker, "REPORTED", "not handed out again");
      // Forgotten once the fetch ended, which recorded the success first.
      await eventually(async () =>
        (await second!.store.owedFetches()).length === 0
      );
    } finally {
      if (firstRunning) await first.close();
      await (second ?? { close: () => Deno.remove(root, { recursive: true }) })
        .close();
      await publish.shutdown();
    }
  },
});

Deno.test({
  name:
    "C18: a running server aborts the evaluation a dead server sharing its database left started, without waiting for a restart",
  async fn() {
    // Sweeps every 50 ms instead of every heartbeat interval.
    const t = await startTestServer({
      config: { staleEvaluationSweepMs: 50 },
    });
    try {
      const now = Math.floor(Date.now() / 1000);
      // Added after the server's start, whose own sweep cannot see them:
      // machine A died mid-evaluation (no heartbeat for 200 s), machine
      // B evaluates still (its heartbeat is fresh).
      const dead = await t.store.addEvaluation("spec", [], now - 200, {
        owner: { host: "build-a", pid: 4242, started: "1" },
      });
      const live = await t.store.addEvaluation("spec", [], now, {
        owner: { host: "build-b", pid: 4242, started: "1" },
      });
      // This server's own, its heartbeat lapsed while the database was
      // out: this process runs it, whatever the heartbeat says.
      const own = await t.store.addEvaluation("spec", [], now - 200, {
        owner: await thisProcess(),
      });
      await eventually(
        async () =>
          (await t.store.getEvaluation(dead))?.status ===
            EvaluationStatus.aborted,
        "the dead server's evaluation aborted",
      );
      assert.ok(
        t.lines.some((l) =>
          l.startsWith("info stale evaluation aborted") &&
          l.includes(`evaluation=${dead} `) && l.includes("owner=build-a/4242")
        ),
        t.lines.join("\n"),
      );
      // Several sweeps later, the live ones are still started.
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const id of [live, own]) {
        assert.equal(
          (await t.store.getEvaluation(id))?.status,
          EvaluationStatus.started,
        );
      }
    } finally {
      await t.close();
    }
  },
});

for (const action of ["cancel", "restart", "retry"]) {
  Deno.test({
    name:
      `POST /admin/evaluation/ID/${action} in remote mode sends build-cancel to the Lorica worker building one of its builds`,
    async fn() {
      const token = "0123456789abcdef0123456789abcdef";
      const t = await startTestServer({ config: { adminToken: token } });
      const worker = await FakeWorker.connect(t.server.backendPort, {
        name: "EVALW",
      });
      try {
        const [drv] = await addBuilds(t, 2);
        await worker.send({
          type: "lorica-hello",
          version: 1,
          features: LORICA_FEATURES,
        });
        assert.equal((await worker.next()).type, "lorica-welcome");
        await worker.ready({ holding: [] });
        const reply = await worker.requestWork(1);
        assert.equal(reply.type === "build" && reply.drv, drv);
        const evaluation = (await t.store.getBuildByDerivation(drv))!
          .evaluation;
        const response = await fetch(
          `${t.web}/admin/evaluation/${evaluation}/${action}`,
          { method: "POST", headers: { authorization: `Bearer ${token}` } },
        );
        assert.equal(response.status, 200);
        // Cancel: both pending builds; restart: the one submitted.
        assert.equal(
          (await response.json()).builds,
          action === "cancel" ? 2 : 1,
        );
        assert.deepEqual(await worker.next(), { type: "build-cancel", drv });
      } finally {
        await worker.close();
        await t.close();
      }
    },
  });
}
