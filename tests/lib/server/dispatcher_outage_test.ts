// The dispatcher on a PostgreSQL cluster of the test's own, which the test
// stops, restarts and turns read-only while a worker reports: what the
// worker sent meanwhile is recorded once the database is back, and the
// worker is told only what was recorded. Skipped without PostgreSQL.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import { openPostgresStore } from "../../../lib/store/postgres.ts";
import { postgresBinaries, startOwnPostgres } from "../store/_own_postgres.ts";
import {
  eventually,
  FakeWorker,
  type Fixture,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";
import type { Message } from "../../../lib/protocol/messages.ts";

const bin = postgresBinaries();
const needs = bin === null
  ? " (skipped: no PostgreSQL server binaries in /usr/lib/postgresql)"
  : "";

/**
 * `w` starts `handed`, the build of `drv`; then, while `outage` holds, it
 * reports it failed and asks for more: resolves with the reply that comes
 * once `recover` has run.
 */
async function reportDuring(
  f: Fixture,
  w: FakeWorker,
  handed: Message,
  drv: string,
  outage: () => Promise<void>,
  recover: () => Promise<void>,
): Promise<Message> {
  assert.equal(handed.type === "build" && handed.drv, drv);
  await w.send({ type: "build-started", drv, worker: "W" });
  await eventually(async () => (await f.status(drv)) === BuildStatus.started);
  const held = f.lines.filter((l) => l.startsWith("warn turn held")).length;
  await outage();
  await w.send({
    type: "build-failed",
    drv,
    url: "http://127.0.0.1:1",
    log: null,
  });
  await w.send({ type: "worker-request-work", name: "W" });
  await eventually(
    () =>
      Promise.resolve(
        f.lines.filter((l) => l.startsWith("warn turn held")).length > held,
      ),
    "a held turn",
  );
  // Nothing told while nothing is recorded.
  await assert.rejects(w.next(300));
  await recover();
  for (let i = 0; i < 100; i++) {
    await f.clock.advance(5000);
    try {
      return await w.next(100);
    } catch {
      // Not yet: the next retry.
    }
  }
  throw new Error(
    `no reply after the database came back:\n${f.lines.join("\n")}`,
  );
}

Deno.test({
  name:
    `a dispatcher on PostgreSQL stopped (fast, immediate) and made read-only under it records the results sent meanwhile once it is back${needs}`,
  ignore: bin === null,
  async fn(t) {
    const cluster = await startOwnPostgres(bin!);
    let f: Fixture | undefined;
    try {
      const store = await openPostgresStore(cluster.url, { maxConnections: 2 });
      f = await startFixture({ store });
      const drvs = await f.addJobs(
        Array.from({ length: 4 }, (_, i) => job(`b${i}`, i)),
      );
      const w = await FakeWorker.connect(f.port, { name: "W" });
      await w.ready();
      const fixture = f;
      const steps: [string, () => Promise<void>, () => Promise<void>][] = [
        ["fast", () => cluster.stop("fast"), () => cluster.start()],
        ["immediate", () => cluster.stop("immediate"), () => cluster.start()],
        [
          "read-only",
          async () => {
            await cluster.psql(
              "ALTER SYSTEM SET default_transaction_read_only = on",
            );
            await cluster.psql("SELECT pg_reload_conf()");
          },
          async () => {
            await cluster.psql(
              "SET default_transaction_read_only = off",
              "ALTER SYSTEM RESET default_transaction_read_only",
            );
            await cluster.psql("SELECT pg_reload_conf()");
          },
        ],
      ];
      // Each step's worker builds what the step before handed it.
      let handed = await w.requestWork();
      for (const [i, [name, outage, recover]] of steps.entries()) {
        await t.step(name, async () => {
          const reply = await reportDuring(
            fixture,
            w,
            handed,
            drvs[i],
            outage,
            recover,
          );
          handed = reply;
          assert.equal(await fixture.status(drvs[i]), BuildStatus.failed);
          assert.equal(reply.type === "build" && reply.drv, drvs[i + 1]);
          // It was handed out for real: recorded as this worker's.
          const next = await fixture.store.getBuildByDerivation(drvs[i + 1]);
          assert.equal(next?.worker, "W");
        });
      }
      await w.close();
    } finally {
      await f?.close();
      await cluster.remove();
    }
  },
});
