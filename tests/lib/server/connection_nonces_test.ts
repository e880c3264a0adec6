// The nonces a server gives one worker connection: a proof may sign any of
// them not used yet (a worker's hellos can cross on one connection), each
// once, and never one of another connection. On their own, then through a
// real dispatcher requiring keys, spoken to over loopback ZMTP.

import assert from "node:assert/strict";
import { ConnectionNonces } from "../../../lib/server/connection_nonces.ts";
import { makeAuthProof } from "../../../lib/protocol/worker_auth.ts";
import { LORICA_FEATURES } from "../../../lib/protocol/messages.ts";
import type { Store } from "../../../lib/store/types.ts";
import {
  eventually,
  FakeWorker,
  type Fixture,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";

const SECRET = "0123456789abcdef-secret";
const KEYS = new Map([["farm", SECRET]]);

/** The proof of a worker named `name` holding the farm's key. */
function proof(nonce: string, name: string) {
  return makeAuthProof("farm", SECRET, nonce, name);
}

Deno.test("ConnectionNonces accepts a proof for any nonce it gave and has not seen used, each once", async () => {
  const nonces = new ConnectionNonces();
  const [first, second] = [nonces.issue(), nonces.issue()];
  assert.equal(await nonces.accept(KEYS, "A", await proof(first, "A")), true);
  // Spent: not for another name, though the proof is a good one.
  assert.equal(await nonces.accept(KEYS, "B", await proof(first, "B")), false);
  assert.equal(await nonces.accept(KEYS, "B", await proof(second, "B")), true);
  // Spent, and no longer the proof this connection speaks with.
  assert.equal(await nonces.accept(KEYS, "A", await proof(first, "A")), false);
  assert.equal(await nonces.accept(KEYS, "A", undefined), false);
});

Deno.test("ConnectionNonces accepts again the proof this connection last proved its name with, and nothing of another connection", async () => {
  const nonces = new ConnectionNonces();
  const other = new ConnectionNonces();
  const theirs = other.issue();
  const ours = nonces.issue();
  const registration = await proof(ours, "A");
  assert.equal(await nonces.accept(KEYS, "A", registration), true);
  // Said again (a stopping worker hands its build back that way).
  assert.equal(await nonces.accept(KEYS, "A", registration), true);
  assert.equal(await nonces.accept(KEYS, "A", await proof(theirs, "A")), false);
  assert.equal(await other.accept(KEYS, "A", registration), false);
  assert.equal(
    await nonces.accept(
      KEYS,
      "A",
      await makeAuthProof("farm", "another-secret-0000", ours, "A"),
    ),
    false,
  );
});

Deno.test("ConnectionNonces forgets the oldest of more than 8 unused nonces", async () => {
  const nonces = new ConnectionNonces();
  const issued = Array.from({ length: 9 }, () => nonces.issue());
  assert.equal(
    await nonces.accept(KEYS, "A", await proof(issued[0], "A")),
    false,
  );
  assert.equal(
    await nonces.accept(KEYS, "A", await proof(issued[1], "A")),
    true,
  );
});

/** Says hello `count` times on `worker`, then reads the nonces answered. */
async function hellos(worker: FakeWorker, count: number): Promise<string[]> {
  for (let i = 0; i < count; i++) {
    await worker.send({
      type: "lorica-hello",
      version: 1,
      features: LORICA_FEATURES,
    });
  }
  const nonces: string[] = [];
  for (let i = 0; i < count; i++) {
    const welcome = await worker.next();
    assert.equal(welcome.type, "lorica-welcome");
    if (welcome.type === "lorica-welcome") nonces.push(welcome.nonce);
  }
  return nonces;
}

/** The server's refusals of registrations and work requests. */
function refusals(f: Fixture): string[] {
  return f.lines.filter((l) =>
    l.startsWith("warn worker refused") || l.startsWith("warn work refused")
  );
}

Deno.test({
  name:
    "worker keys: a worker whose hellos crossed on its connection is accepted with a proof of the first welcome, and its other nonces are good on no other connection",
  async fn() {
    const f = await startFixture({ workerKeys: KEYS });
    const workers: FakeWorker[] = [];
    try {
      await f.addJobs([job("guarded", 1)]);
      const crossed = await FakeWorker.connect(f.port, { name: "CROSSED" });
      workers.push(crossed);
      const [first, second] = await hellos(crossed, 2);
      await crossed.ready({ holding: [], auth: await proof(first, "CROSSED") });
      // Told so, having said hello with every feature ("worker-accepted").
      assert.deepEqual(await crossed.next(), { type: "worker-accepted" });
      const got = await crossed.requestWork(1);
      assert.equal(got.type, "build", refusals(f).join("\n"));
      assert.deepEqual(refusals(f), []);

      // Its unused nonce, signed right, on a connection of its own.
      const other = await FakeWorker.connect(f.port, { name: "OTHER" });
      workers.push(other);
      await hellos(other, 1);
      await other.ready({ holding: [], auth: await proof(second, "OTHER") });
      // Told so, having said hello with every feature ("worker-refused").
      assert.deepEqual(await other.next(), {
        type: "worker-refused",
        reason: 'bad proof for key "farm"',
      });
      assert.equal((await other.requestWork(1)).type, "no-build");
      assert.deepEqual(
        refusals(f).map((l) => l.replace(/ peer=\S+/, "")),
        [
          'warn worker refused address=127.0.0.1 worker=OTHER machine=test reason="bad proof for key \\"farm\\""',
          'warn work refused worker=OTHER reason="worker not authenticated on this connection"',
        ],
      );
    } finally {
      await Promise.all(workers.map((w) => w.close()));
      await f.close();
    }
  },
});

Deno.test({
  name:
    "worker keys: a registration whose turn is served again after the database came back is accepted, though its nonce was spent the first time",
  async fn() {
    // The registration's write finds the database gone, once: its turn is
    // undone and served again a moment later.
    let databaseGone = false;
    const f = await startFixture({
      workerKeys: KEYS,
      storeSeenByDispatcher: (store) => {
        const faulty: Store = Object.create(store);
        faulty.batch = (work, options) =>
          store.batch((tx) => {
            const inner: Store = Object.create(tx);
            inner.upsertWorker = (worker) => {
              if (!databaseGone) return tx.upsertWorker(worker);
              databaseGone = false;
              return Promise.reject(
                Object.assign(new Error("connection refused (injected)"), {
                  code: "ECONNREFUSED",
                }),
              );
            };
            return work(inner);
          }, options);
        return faulty;
      },
    });
    const worker = await FakeWorker.connect(f.port, { name: "AGAIN001" });
    try {
      await f.addJobs([job("guarded", 1)]);
      const [nonce] = await hellos(worker, 1);
      databaseGone = true;
      await worker.ready({ holding: [], auth: await proof(nonce, "AGAIN001") });
      await eventually(
        () => f.lines.some((l) => l.startsWith("warn turn held")),
        "turn held",
      );
      await f.clock.advance(250);
      await eventually(
        () => f.lines.some((l) => l.startsWith("info worker ready")),
        "registration served again",
      );
      // Said accepted once: the undone turn's answer went with it.
      assert.deepEqual(await worker.next(), { type: "worker-accepted" });
      assert.equal((await worker.requestWork(1)).type, "build");
      assert.deepEqual(refusals(f), []);
    } finally {
      await worker.close();
      await f.close();
    }
  },
});
