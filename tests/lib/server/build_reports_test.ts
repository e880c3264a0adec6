// What the dispatcher makes of build results: each acknowledged to a Lorica
// worker that asked for it ("result-ack"), once committed, with what became
// of it; a result sent again is a no-op, acknowledged alike; Cuirass workers
// and Lorica workers that did not ask hear nothing new.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import { LORICA_FEATURES } from "../../../lib/protocol/messages.ts";
import {
  eventually,
  FakeWorker,
  type Fixture,
  job,
  startFixture,
  startWork,
} from "./_dispatch_fixture.ts";
import {
  assertAcknowledged,
  resultOf,
  withLoricaWorkers,
} from "./_lorica_workers.ts";

/** A worker's publish URL the dispatcher fetches from (loopback). */
const URL = "http://127.0.0.1:5558";

/** The lines of `f` that start with `prefix`. */
function linesOf(f: Fixture, prefix: string): string[] {
  return f.lines.filter((l) => l.startsWith(prefix));
}

Deno.test({
  name:
    "a success is acknowledged once its fetch is saved; sent again while fetched or once recorded, it changes nothing and is acknowledged alike",
  async fn() {
    // The worker's publish server: no narinfo until `published`.
    let published = false;
    const publishServer = () =>
      Promise.resolve(
        published ? new Response("ok") : new Response("", { status: 404 }),
      );
    await withLoricaWorkers(["TWICE001"], async (f, [worker]) => {
      const [drv] = await f.addJobs([job("twice", 1)]);
      assert.equal(await startWork(worker, f), drv);
      await worker.send(resultOf("build-succeeded", drv, URL));
      await assertAcknowledged(worker, drv, "fetching");
      // Committed with the turn that sent the ack.
      assert.deepEqual(await f.store.owedFetches(), [
        { drv, worker: worker.name, url: URL },
      ]);
      await eventually(
        () => linesOf(f, "warn output fetch retried").length > 0,
        "the fetch waiting for the publish server",
      );
      await worker.send(resultOf("build-succeeded", drv, URL));
      await assertAcknowledged(worker, drv, "fetching");
      published = true;
      await f.clock.advance(1000);
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.succeeded,
        "build succeeded",
      );
      // It asked to hear when the fetch ends (every feature).
      assert.deepEqual(await worker.next(), { type: "outputs-fetched", drv });
      await worker.send(resultOf("build-succeeded", drv, URL));
      await assertAcknowledged(worker, drv, "recorded");
      assert.equal(
        linesOf(f, "info build succeeded").length,
        1,
        f.lines.join("\n"),
      );
      assert.equal(
        linesOf(f, "warn output fetch retried").length,
        1,
        "one fetch, not one a report",
      );
      await eventually(
        async () => (await f.store.owedFetches()).length === 0,
        "the fetch forgotten once it ended",
      );
    }, { fetch: publishServer });
  },
});

Deno.test({
  name:
    "a failure is acknowledged as recorded; sent again, it is recorded no second time and acknowledged alike",
  fn: () =>
    withLoricaWorkers(["TWICE002"], async (f, [worker]) => {
      const [drv] = await f.addJobs([job("twice", 2)]);
      assert.equal(await startWork(worker, f), drv);
      for (let sending = 1; sending <= 2; sending++) {
        await worker.send(resultOf("build-failed", drv, URL));
        await assertAcknowledged(worker, drv, "recorded", `sending ${sending}`);
      }
      assert.equal(await f.status(drv), BuildStatus.failed);
      assert.equal(linesOf(f, "info build failed").length, 1);
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("info result ignored") &&
          l.includes(`reason="the build's result is recorded already"`)
        ),
        f.lines.join("\n"),
      );
    }),
});

Deno.test({
  name:
    "a result of a build the sender does not hold is acknowledged as ignored, and changes nothing",
  fn: () =>
    withLoricaWorkers(["HOLDER01", "OTHER001"], async (f, [holder, other]) => {
      const [drv] = await f.addJobs([job("held", 3)]);
      assert.equal(await startWork(holder, f), drv);
      await other.send(resultOf("build-failed", drv, URL));
      await assertAcknowledged(other, drv, "ignored");
      assert.equal(await f.status(drv), BuildStatus.started);
    }),
});

Deno.test({
  name:
    "a Cuirass worker, and a Lorica worker that did not ask for result-ack, hear no ack: the next thing they read answers their work request",
  async fn() {
    const f = await startFixture();
    const cuirass = await FakeWorker.connect(f.port, { name: "CUIRASS1" });
    const older = await FakeWorker.connect(f.port, { name: "OLDER001" });
    try {
      await cuirass.ready();
      await older.send({
        type: "lorica-hello",
        version: 1,
        features: LORICA_FEATURES.filter((f) => f !== "result-ack"),
      });
      const welcome = await older.next();
      assert.ok(welcome.type === "lorica-welcome", welcome.type);
      // The server offers it; the worker did not take it.
      assert.ok(welcome.features.includes("result-ack"));
      await older.ready({ holding: [] });
      for (const [i, worker] of [cuirass, older].entries()) {
        await f.addJobs([job("quiet", 4 + i)]);
        const drv = await startWork(worker, f);
        await worker.send(
          resultOf(i === 0 ? "build-succeeded" : "build-failed", drv, URL),
        );
        const reply = await worker.requestWork(7);
        assert.equal(reply.type, "no-build", `${worker.name}: ${reply.type}`);
      }
      assert.equal(linesOf(f, "info build failed").length, 1);
    } finally {
      await cuirass.close();
      await older.close();
      await f.close();
    }
  },
});

for (const given of [false, true]) {
  Deno.test({
    name:
      `a Lorica worker that asked for outputs-fetched hears it once the fetch of its success ${
        given ? "is given up" : "ends"
      }, after the ack; one that did not, and a Cuirass worker, do not`,
    async fn() {
      // The publish servers: no narinfo, until `published` (never when
      // the fetch is to be given up).
      let published = false;
      const f = await startFixture({
        fetch: () =>
          Promise.resolve(
            published ? new Response("ok") : new Response("", { status: 404 }),
          ),
      });
      const asked = await FakeWorker.connect(f.port, { name: "ASKED001" });
      const older = await FakeWorker.connect(f.port, { name: "OLDER002" });
      const cuirass = await FakeWorker.connect(f.port, { name: "CUIRASS2" });
      try {
        for (
          const [worker, features] of [
            [asked, LORICA_FEATURES],
            [older, LORICA_FEATURES.filter((f) => f !== "outputs-fetched")],
          ] as const
        ) {
          await worker.send({ type: "lorica-hello", version: 1, features });
          assert.equal((await worker.next()).type, "lorica-welcome");
          await worker.ready({ holding: [] });
        }
        await cuirass.ready();
        const drvs: string[] = [];
        for (const [i, worker] of [asked, older, cuirass].entries()) {
          await f.addJobs([job("fetched", 10 + i)]);
          const drv = await startWork(worker, f);
          drvs.push(drv);
          await worker.send(resultOf("build-succeeded", drv, URL));
          if (worker !== cuirass) {
            await assertAcknowledged(worker, drv, "fetching");
          }
        }
        await eventually(
          () => linesOf(f, "warn output fetch retried").length >= 3,
          "the fetches waiting",
        );
        if (given) await f.clock.advance(10_000);
        else {
          published = true;
          await f.clock.advance(1000);
        }
        const status = given ? BuildStatus.failedOther : BuildStatus.succeeded;
        await eventually(
          async () =>
            (await Promise.all(drvs.map((drv) => f.status(drv)))).every((s) =>
              s === status
            ),
          `the fetches ended\n${f.lines.join("\n")}`,
        );
        assert.deepEqual(await asked.next(), {
          type: "outputs-fetched",
          drv: drvs[0],
        });
        // Nothing came before the reply to their work request.
        for (const worker of [older, cuirass]) {
          const reply = await worker.requestWork(8);
          assert.equal(reply.type, "no-build", `${worker.name}: ${reply.type}`);
        }
      } finally {
        await asked.close();
        await older.close();
        await cuirass.close();
        await f.close();
      }
    },
  });
}
