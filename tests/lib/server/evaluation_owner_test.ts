// Who an evaluation's owner is, across PID namespaces: containers sharing a
// host name must not read each other's pids in their own /proc.

import assert from "node:assert/strict";
import {
  HEARTBEAT_INTERVAL_MS,
  hostIdentityOf,
  keepHeartbeat,
  STALE_AFTER_MS,
  stillRunning,
  thisHost,
  thisProcess,
} from "../../../lib/server/evaluation_owner.ts";
import { silentLogger } from "../../../lib/log.ts";
import type { EvaluationOwner, Store } from "../../../lib/store/types.ts";
import { FakeClock } from "./_dispatch_fixture.ts";

/** thisProcess() as seen from a process of a PID namespace of its own. */
async function ownerInNewPidNamespace(): Promise<EvaluationOwner> {
  const script = `import { thisProcess } from ${
    JSON.stringify(
      new URL("../../../lib/server/evaluation_owner.ts", import.meta.url).href,
    )
  };
console.log(JSON.stringify(await thisProcess()));`;
  const output = await new Deno.Command("unshare", {
    args: [
      "--pid",
      "--fork",
      "--mount-proc",
      Deno.execPath(),
      "eval",
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const error = new TextDecoder().decode(output.stderr);
  assert.ok(output.success, `unshare failed: ${error}`);
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

const canUnshare = Deno.uid() === 0 &&
  (() => {
    try {
      return new Deno.Command("unshare", { args: ["--version"] }).outputSync()
        .success;
    } catch {
      return false;
    }
  })();

Deno.test({
  name:
    "an owner of another PID namespace with this host name is judged by its heartbeat, not by this /proc" +
    (canUnshare ? "" : " (skipped: needs root and unshare(1))"),
  ignore: !canUnshare,
  async fn() {
    const other = await ownerInNewPidNamespace();
    const self = await thisProcess();
    // The same name, another namespace: its pid (1 or 2 there) names some
    // unrelated process here, or none.
    assert.equal(other.host.split(" ")[0], self.host.split(" ")[0]);
    const now = 1_000_000;
    const fresh = {
      id: 7,
      specification: "s",
      heartbeat: now - 10,
      owner: other,
    };
    assert.equal(await stillRunning(fresh, { self, now }), true);
    const stale = {
      id: 7,
      specification: "s",
      heartbeat: now - STALE_AFTER_MS / 1000 - 1,
      owner: other,
    };
    assert.equal(await stillRunning(stale, { self, now }), false);
    assert.notEqual(other.host, self.host);
  },
});

Deno.test("thisHost() names this boot of the kernel, so that two machines of one host name, each in its initial PID namespace (the same inode everywhere), are not taken for one", () => {
  const bootId = Deno.readTextFileSync("/proc/sys/kernel/random/boot_id")
    .trim();
  const pidNamespace = Deno.readLinkSync("/proc/self/ns/pid");
  assert.equal(
    thisHost(),
    `${Deno.hostname()} ${pidNamespace} boot:${bootId}`,
  );
  // A clone of this machine: same name, same namespace inode, its own boot.
  const clone = hostIdentityOf({
    hostName: Deno.hostname(),
    pidNamespace,
    bootId: "00000000-0000-4000-8000-000000000000",
  });
  assert.notEqual(clone, thisHost());
  // Without /proc, the name alone.
  assert.equal(hostIdentityOf({ hostName: "box" }), "box");
});

Deno.test("an owner of this host and namespace whose process is gone is not running, whatever its heartbeat", async () => {
  const self = await thisProcess();
  const child = new Deno.Command("true").spawn();
  await child.status;
  const gone = { host: thisHost(), pid: child.pid, started: "1" };
  const now = 1_000_000;
  assert.equal(
    await stillRunning({
      id: 8,
      specification: "s",
      heartbeat: now,
      owner: gone,
    }, { self, now }),
    false,
  );
});

Deno.test("keepHeartbeat() renews at once after a renewal that took longer than the interval, not one interval after it landed", async () => {
  const clock = new FakeClock();
  // Each renewal answers when the test says: a slow database.
  const renewals: { now: number; answer: PromiseWithResolvers<boolean> }[] = [];
  const store = {
    renewEvaluationHeartbeat(_id: number, now: number) {
      const answer = Promise.withResolvers<boolean>();
      renewals.push({ now, answer });
      return answer.promise;
    },
  } as unknown as Store;
  const stop = new AbortController();
  const beating = keepHeartbeat(7, {
    store,
    clock,
    logger: silentLogger,
    signal: stop.signal,
    onEnded: () => assert.fail("no renewal said the evaluation ended"),
  });
  const start = clock.now() / 1000;
  const issued = () => renewals.map((renewal) => renewal.now - start);
  /** Answers renewal `i`, and lets the heartbeat act on the answer. */
  const answer = async (i: number) => {
    renewals[i].answer.resolve(true);
    await new Promise((resolve) => setTimeout(resolve, 0));
  };
  try {
    await clock.advance(HEARTBEAT_INTERVAL_MS);
    assert.deepEqual(issued(), [30]);
    // Answered 40 s later: the next, due 10 s ago, goes at once.
    await clock.advance(40_000);
    await answer(0);
    assert.deepEqual(issued(), [30, 70]);
    // Answered at once: the next comes an interval after it was issued.
    await answer(1);
    await clock.advance(HEARTBEAT_INTERVAL_MS - 1000);
    assert.deepEqual(issued(), [30, 70]);
    await clock.advance(1000);
    assert.deepEqual(issued(), [30, 70, 100]);
    await answer(2);
  } finally {
    stop.abort();
    await beating;
  }
});
