// Servers sharing one database with different `--worker-timeout` values
// (docs/deployment.md, section 5): each worker is judged by the timeout of
// the server that hears it, not by the shortest among the servers.

import assert from "node:assert/strict";
import { type Clock, systemClock } from "../../../lib/clock.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { silentLogger } from "../../../lib/log.ts";
import { type RunningServer, startServer } from "../../../lib/server/server.ts";
import { BuildStatus, type Store } from "../../../lib/store/types.ts";
import {
  eventually,
  fakeSpawner,
  FakeWorker,
  job,
} from "./_dispatch_fixture.ts";
import { testSpecification } from "./_guix_fixture.ts";
import { backends, sharedDatabase } from "./_shared_database.ts";
import { linesLogger, testServerConfig } from "./_test_server.ts";

const SPEC = testSpecification("spec");

/** A remote-mode server on `store` with `timeoutSeconds`, its log lines kept. */
async function startOn(
  store: Store,
  dir: string,
  timeoutSeconds: number,
  clock: Clock,
): Promise<{ server: RunningServer; lines: string[] }> {
  const lines: string[] = [];
  const config = testServerConfig(dir, {
    workerTimeoutSeconds: timeoutSeconds,
  });
  const server = await startServer(config, {
    store,
    guix: new Guix({ logger: silentLogger, spawn: fakeSpawner() }),
    logger: linesLogger(lines),
    clock,
    // The derivations of these builds exist only in the database.
    inStore: () => Promise.resolve(true),
  });
  return { server, lines };
}

for (const { name, ignore, needs } of backends) {
  Deno.test({
    name:
      `on ${name}, a server with a short --worker-timeout does not expire a worker building for a server with a long one${needs}`,
    ignore,
    async fn() {
      const db = await sharedDatabase(name, SPEC, "lorica_timeouts");
      const running: RunningServer[] = [];
      let worker: FakeWorker | null = null;
      try {
        const evaluation = await db.a.addEvaluation(SPEC.name, [], 1);
        const build = job("slow-link", 1);
        await db.a.registerBuilds(evaluation, [build], {
          priority: 9,
          now: 1,
        });
        // Server A: 600 s, for workers pinging over a bad link.
        const a = await startOn(db.a, `${db.root}/a`, 600, systemClock);
        running.push(a.server);
        worker = await FakeWorker.connect(a.server.backendPort, {
          name: "SLOW",
        });
        await worker.ready();
        const reply = await worker.requestWork();
        assert.equal(reply.type === "build" && reply.drv, build.derivation);
        await worker.send({
          type: "build-started",
          drv: build.derivation,
          worker: worker.name,
        });
        await eventually(async () =>
          (await db.a.getBuildByDerivation(build.derivation))?.status ===
            BuildStatus.started
        );
        // A row as servers before timeouts were recorded wrote it: judged
        // by each sweeper's own timeout. Its expiry tells that B swept.
        const now = Math.floor(Date.now() / 1000);
        await db.a.upsertWorker({
          name: "OLD",
          address: "127.0.0.1",
          machine: "m",
          systems: ["x86_64-linux"],
          lastSeen: now,
          timeoutSeconds: null,
        });

        // Server B, the default 120 s, sweeps 300 s later: SLOW was heard
        // by A, whose 600 s are not over; OLD's silence is past B's 120.
        const later: Clock = {
          ...systemClock,
          now: () => Date.now() + 300_000,
        };
        const b = await startOn(db.b, `${db.root}/b`, 120, later);
        running.push(b.server);
        await eventually(
          () => b.lines.some((l) => l.startsWith("warn worker expired")),
          "a sweep of server B",
        );
        assert.deepEqual(
          b.lines.filter((l) => l.startsWith("warn worker expired")),
          ["warn worker expired worker=OLD timeout=120 requeued=0"],
        );
        assert.equal((await db.b.getWorker("SLOW"))?.timeoutSeconds, 600);
        const held = await db.b.getBuildByDerivation(build.derivation);
        assert.equal(held?.status, BuildStatus.started, "requeued");
        assert.equal(held?.worker, "SLOW");
      } finally {
        await worker?.close();
        for (const server of running.reverse()) await server.stop();
        await db.close();
      }
    },
  });
}
