// A worker session against the real dispatcher, handed a build it refuses
// (a limit no worker takes, see buildRefusal): a Lorica server gets it back
// once, for another worker to take, and a build-failed the next time; a
// worker speaking plain Cuirass answers build-failed at once.

import assert from "node:assert/strict";
import type { SessionOptions } from "../../../lib/worker/session.ts";
import { MAX_BUILD_LIMIT_SECONDS } from "../../../lib/worker/build_runner.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  eventually,
  FakeClock,
  type Fixture,
  job,
  loricaWorker,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import {
  closing,
  runningSession,
  sessionOptions,
  stopping,
  untilStatus,
} from "./_session_helpers.ts";
import {
  dealersLosingResults,
  oneSessionWorker,
  succeedingGuix,
} from "./_losing_worker.ts";

/** What a scenario of {@link withRefusingSession} has at hand. */
interface Refusal {
  f: Fixture;
  /** The build every worker refuses. */
  drv: string;
  /** What the session logs. */
  lines: string[];
}

/**
 * Runs `scenario` on a fresh fixture holding a build every worker refuses,
 * against which a session named `name` (with options `extra`) runs; then
 * asserts the session ends within 10 s once stopped.
 */
async function withRefusingSession(
  name: string,
  extra: Partial<SessionOptions>,
  scenario: (refusal: Refusal) => Promise<void>,
): Promise<void> {
  await using f = closing(await startFixture({ logPort: quietPort() }));
  const lines: string[] = [];
  const drv = await refusedJob(f);
  await using session = runningSession(
    sessionOptions(f.port, name, lines, extra),
  );
  await scenario({ f, drv, lines });
  await within(session.stop(), 10_000, "session end");
}

/** Registers a build every worker refuses; returns its derivation. */
async function refusedJob(f: Fixture): Promise<string> {
  const [drv] = await f.addJobs([{
    ...job("hello", 1),
    timeout: MAX_BUILD_LIMIT_SECONDS + 1,
  }]);
  return drv;
}

/** The times the server put `drv` back in the queue. */
function requeues(f: Fixture, drv: string): number {
  return f.lines.filter((l) => l.startsWith(`warn build requeued drv=${drv} `))
    .length;
}

/** The `build refused` lines of `lines`, the reason left out. */
function refusals(lines: string[]): string[] {
  return lines.filter((l) => l.startsWith("warn build refused ")).map((l) =>
    l.replace(/ reason=.* action=/, " action=")
  );
}

Deno.test({
  name:
    "a Lorica worker hands a build it refuses back to the server, and another worker takes it",
  fn: () =>
    withRefusingSession("REFUSER1", {
      // A long request period: the other worker asks first.
      requestPeriodMs: 60_000,
    }, async ({ f, drv, lines }) => {
      await eventually(() => requeues(f, drv) === 1, "build requeued");
      const build = await f.store.getBuildByDerivation(drv);
      assert.equal(build?.status, BuildStatus.scheduled);
      assert.equal(build?.worker, null);
      assert.deepEqual(refusals(lines), [
        `warn build refused worker=REFUSER1 drv=${drv} field=timeout action="handed back"`,
      ]);

      const other = await loricaWorker(f.port, "OTHER001");
      const reply = await other.requestWork(1);
      assert.equal(reply.type === "build" && reply.drv, drv);
      assert.equal(
        (await f.store.getBuildByDerivation(drv))?.worker,
        "OTHER001",
      );
      await other.close();
    }),
});

Deno.test({
  name:
    "a Lorica worker handed again a build it handed back refuses it with build-failed, a request period later: no loop",
  async fn() {
    // The session's own clock: its pauses end when the test says.
    const clock = new FakeClock();
    await withRefusingSession("REFUSER2", {
      clock,
      // A pause of 1000 + 0 - 500 ms after each refusal.
      requestPeriodMs: 1000,
      random: () => 0,
    }, async ({ f, drv, lines }) => {
      await eventually(() => requeues(f, drv) === 1, "build requeued");
      // Handed back and pausing: nothing asked for, the build waits in the
      // queue for another worker.
      // (The one sleep due in exactly 500 ms: the ping loop sleeps too.)
      await eventually(
        () => clock.sleepersDueWithin(500) - clock.sleepersDueWithin(499) === 1,
        "request period pause",
      );
      const waiting = await f.store.getBuildByDerivation(drv);
      assert.equal(waiting?.status, BuildStatus.scheduled);
      assert.equal(waiting?.worker, null);

      await clock.advance(500);
      await untilStatus(
        f,
        drv,
        BuildStatus.failed,
        `build failed\n${lines.join("\n")}`,
      );
      assert.equal(requeues(f, drv), 1, f.lines.join("\n"));
      assert.deepEqual(refusals(lines), [
        `warn build refused worker=REFUSER2 drv=${drv} field=timeout action="handed back"`,
        `warn build refused worker=REFUSER2 drv=${drv} field=timeout action="reported failed"`,
      ]);
    });
  },
});

Deno.test({
  name:
    "a worker remembers the builds it handed back across its sessions: a later session handed one again refuses it with build-failed",
  async fn() {
    await using f = closing(await startFixture({ logPort: quietPort() }));
    const lines: string[] = [];
    const builds: string[][] = [];
    // The second work request is lost mid-send: the session that handed
    // the build back fails, and the worker starts another one of its name.
    let requests = 0;
    const dealers = dealersLosingResults(
      () => ++requests === 2,
      ["worker-request-work"],
    );
    await using worker = stopping(
      await oneSessionWorker(f.port, lines, {
        guix: succeedingGuix(builds),
        connectDealer: dealers.connect,
      }),
    );
    const drv = await refusedJob(f);
    await untilStatus(
      f,
      drv,
      BuildStatus.failed,
      `build failed\n${lines.join("\n")}`,
    );
    assert.equal(dealers.state.failed, 1, "the second request was lost");
    assert.ok(
      lines.some((l) => l.startsWith("error session failed ")),
      lines.join("\n"),
    );
    assert.equal(builds.length, 0, "guix build never ran");
    const [name] = worker.names;
    assert.deepEqual(refusals(lines), [
      `warn build refused worker=${name} drv=${drv} field=timeout action="handed back"`,
      `warn build refused worker=${name} drv=${drv} field=timeout action="reported failed"`,
    ]);
    assert.equal(requeues(f, drv), 1, f.lines.join("\n"));
  },
});

Deno.test({
  name:
    "a worker speaking plain Cuirass answers build-failed for a build it refuses, even to a Lorica server",
  fn: () =>
    withRefusingSession(
      "CUIRASS1",
      { extensions: false },
      async ({ f, drv, lines }) => {
        await untilStatus(
          f,
          drv,
          BuildStatus.failed,
          `build failed\n${lines.join("\n")}`,
        );
        assert.equal(requeues(f, drv), 0, f.lines.join("\n"));
        assert.deepEqual(refusals(lines), [
          `warn build refused worker=CUIRASS1 drv=${drv} field=timeout action="reported failed"`,
        ]);
      },
    ),
});
