import assert from "node:assert/strict";
import zlib from "node:zlib";
import { logFileName } from "../../../lib/protocol/log_channel.ts";
import { runEvaluation } from "../../../lib/server/evaluation_runner.ts";
import { LocalBuilder } from "../../../lib/server/local_builder.ts";
import { buildStatusName, type Store } from "../../../lib/store/types.ts";
import { type DaemonEnv, GUIX, guix } from "../../fake-guix/test_env.ts";
import { catchesSigterm, processExists as alive } from "../../_processes.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import {
  type GuixSpawner,
  guixSpawner,
} from "../../../lib/guix/build_events.ts";
import { spawnProcess } from "../../../lib/process.ts";
import { eventually, FakeClock, within } from "./_dispatch_fixture.ts";
import { systemClock } from "../../../lib/clock.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { mountSmallDisk, smallDiskAvailability } from "../../_small_disk.ts";
import { GcRoots } from "../../../lib/guix/gc_roots.ts";
import {
  fakeGuixFarm,
  fakeLocalBuilder,
  gunzip,
  testSpecification,
} from "./_guix_fixture.ts";
import { connectionRefused, failingStore } from "../store/_failing_store.ts";
import { backends, sharedDatabase } from "./_shared_database.ts";
import { holderAddress } from "../../../lib/server/local_holder.ts";

const SPEC = testSpecification("local");

/** A fake guix farm knowing SPEC, closed when the test's `await using` ends. */
async function setup(scenario: unknown) {
  const farm = await fakeGuixFarm(SPEC, scenario);
  return {
    ...farm,
    runner: farm.options,
    builder: (maxJobs = 1) =>
      fakeLocalBuilder(farm.root, farm.store, farm.daemon, { maxJobs }),
    [Symbol.asyncDispose]: () => farm.close(),
  };
}

/** Builds batches until the queue is empty. */
async function drain(builder: LocalBuilder): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const batch = await builder.takeBatch();
    if (batch.length === 0) return;
    await builder.buildBatch(batch);
  }
  throw new Error("the queue never emptied");
}

async function statuses(store: Store, jobs: string[]) {
  const result: Record<string, string> = {};
  for (const build of await store.latestBuilds({}, 100)) {
    if (jobs.includes(build.jobName)) {
      result[build.jobName] = buildStatusName(build.status);
    }
  }
  return result;
}

Deno.test("LocalBuilder builds with the daemon: statuses, dependents and logs", async () => {
  await using farm = await setup({
    packages: [
      { name: "a", version: "1", behaviour: { seconds: 0.1, logLines: 3 } },
      { name: "b", version: "1", behaviour: { seconds: 0, exit: 1 } },
      { name: "c", version: "1", inputs: ["b"], behaviour: { seconds: 0 } },
      { name: "d", version: "1", inputs: ["a"], behaviour: { seconds: 0 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  const builder = farm.builder();
  await drain(builder);
  assert.deepEqual(
    await statuses(farm.store, [
      "a.x86_64-linux",
      "b.x86_64-linux",
      "c.x86_64-linux",
      "d.x86_64-linux",
    ]),
    {
      "a.x86_64-linux": "succeeded",
      "b.x86_64-linux": "failed",
      "c.x86_64-linux": "failed-dependency",
      "d.x86_64-linux": "succeeded",
    },
  );
  const a = (await farm.store.latestBuilds({ job: "a.x86_64-linux" }, 1))[0];
  assert.equal(a.worker, await builder.holderName());
  assert.match(a.worker!, /^local@/);
  assert.equal(
    a.log,
    logFileName(`${farm.root}/logs`, farm.daemon.storeDir, a.derivation),
  );
  assert.match(await gunzip(a.log), /\[a-1\] step 3 of 3 \(x86_64-linux\)/);
  const b = (await farm.store.latestBuilds({ job: "b.x86_64-linux" }, 1))[0];
  assert.ok(b.log !== "", "a failed build keeps its log");
});

Deno.test("LocalBuilder: outputs that cannot be rooted leave the builds succeeded and the batch done", async () => {
  await using farm = await setup({
    packages: [
      { name: "a", version: "1", behaviour: { seconds: 0 } },
      { name: "b", version: "1", behaviour: { seconds: 0 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  // Built once; scheduled again, they are found already built.
  await drain(farm.builder());
  for (const build of await farm.store.latestBuilds({}, 10)) {
    assert.ok((await farm.store.restartBuild(build.id, 1)).changed);
  }
  await Deno.writeTextFile(`${farm.root}/afile`, "");
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    gcRoots: new GcRoots({
      directory: `${farm.root}/afile/roots`,
      storeDir: farm.daemon.storeDir,
      clock: systemClock,
      logger: silentLogger,
    }),
  });
  const summary = await builder.buildBatch(await builder.takeBatch());
  assert.equal(summary.succeeded, 2);
  assert.equal(summary.requeued, 0);
  assert.deepEqual(
    await statuses(farm.store, ["a.x86_64-linux", "b.x86_64-linux"]),
    { "a.x86_64-linux": "succeeded", "b.x86_64-linux": "succeeded" },
  );
  assert.deepEqual(await builder.takeBatch(), []);
});

Deno.test("LocalBuilder honours each build's timeout and max-silent-time", async () => {
  await using farm = await setup({
    packages: [
      {
        name: "quiet",
        version: "1",
        maxSilentTime: 1,
        behaviour: { seconds: 0, silenceSeconds: 20 },
      },
      {
        name: "long",
        version: "1",
        timeout: 1,
        behaviour: { seconds: 20, logLines: 40 },
      },
      { name: "fine", version: "1", behaviour: { seconds: 0.2 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  await drain(farm.builder());
  assert.deepEqual(
    await statuses(farm.store, [
      "quiet.x86_64-linux",
      "long.x86_64-linux",
      "fine.x86_64-linux",
    ]),
    {
      "quiet.x86_64-linux": "failed",
      "long.x86_64-linux": "failed",
      "fine.x86_64-linux": "succeeded",
    },
  );
});

Deno.test("LocalBuilder gives up on a daemon silent past the max-silent-time: the driver is stopped and the whole batch requeued, its other groups untried", async () => {
  // Two groups (their max-silent-times differ), and a daemon stuck for
  // both: only the first group is waited for.
  await using farm = await setup({
    packages: ["stuck", "next"].map((name, i) => ({
      name,
      version: "1",
      maxSilentTime: i + 1,
      behaviour: { seconds: 0, daemonHangs: true },
    })),
  });
  const lines: string[] = [];
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    daemonSilenceGraceSeconds: 0.5,
    logger: loggerInto(lines),
  });
  const summary = await builder.buildBatch(await builder.takeBatch());
  assert.equal(summary.requeued, 2);
  for (const job of ["stuck.x86_64-linux", "next.x86_64-linux"]) {
    const [build] = await farm.store.queue({ job }, 1);
    assert.equal(buildStatusName(build.status), "scheduled", job);
    assert.equal(build.worker, null, job);
  }
  const silent = lines.filter((line) => line.includes("daemon silent"));
  assert.equal(silent.length, 1, lines.join("\n"));
  assert.match(silent[0], /max_silent=[12] builds=1/);
  assert.ok(
    !lines.some((line) => line.includes("build driver failed")),
    lines.join("\n"),
  );
});

/**
 * The server's way to run guix (server.ts) on `daemon`, with a kill grace
 * of 300 ms and the pids of the build drivers it starts.
 */
function driverSpawner(daemon: DaemonEnv, lines: string[]) {
  const drivers: number[] = [];
  /** How each driver ended, for the messages of failed assertions. */
  const ended = new Map<number, string>();
  const wrapper = new Guix({
    command: GUIX,
    env: daemon.env,
    logger: loggerInto(lines),
    killGraceMs: 300,
    spawn: (argv, options) => {
      const child = spawnProcess(argv, options);
      if (argv[1] === "repl" && !argv.includes("--query")) {
        drivers.push(child.pid);
        child.status.then((status) =>
          ended.set(child.pid, JSON.stringify(status))
        );
      }
      return child;
    },
  });
  const spawnGuix: GuixSpawner = (args, options) =>
    wrapper.spawn(args, options);
  return { drivers, spawnGuix, ended };
}

/** A logger writing its lines, without timestamps, into `lines`. */
function loggerInto(lines: string[]) {
  return createLogger({ timestamps: false, sink: (l) => lines.push(l) });
}

/**
 * A scenario of `names`, each a build that runs for an hour printing one
 * line: still running whenever a test cancels, restarts or takes it back.
 */
function hourLongBuilds(names: string[]) {
  return {
    packages: names.map((name) => ({
      name,
      version: "1",
      behaviour: { seconds: 3600, logLines: 1 },
    })),
  };
}

/**
 * A farm (setup()) for tests that stop build drivers: driverSpawner()'s
 * `spawnGuix` and the pids it started, and the `lines` its guix logs. Its
 * disposal kills what drivers a failed test left alive, so that none
 * outlives the test, then closes the farm.
 */
async function farmWithDrivers(scenario: unknown) {
  const farm = await setup(scenario);
  const lines: string[] = [];
  const spawner = driverSpawner(farm.daemon, lines);
  return {
    ...farm,
    ...spawner,
    lines,
    async [Symbol.asyncDispose]() {
      for (const pid of spawner.drivers) {
        if (alive(pid)) Deno.kill(pid, "SIGKILL");
      }
      await farm.close();
    },
  };
}

Deno.test("LocalBuilder gives up on a silent daemon whose driver ignores SIGTERM: the driver is killed after the grace and the batch requeued", async () => {
  await using farm = await farmWithDrivers({
    packages: [{
      name: "deaf",
      version: "1",
      maxSilentTime: 1,
      behaviour: { seconds: 0, daemonHangs: true, ignoresSigterm: true },
    }],
  });
  const { drivers, spawnGuix, lines } = farm;
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    daemonSilenceGraceSeconds: 0.5,
    spawnGuix,
    logger: loggerInto(lines),
  });
  const summary = await within(
    builder.buildBatch(await builder.takeBatch()),
    15_000,
    "end of the batch",
  );
  assert.equal(summary.requeued, 1);
  assert.equal(drivers.length, 1);
  assert.ok(!alive(drivers[0]), "the driver is gone");
  assert.ok(
    lines.some((l) =>
      l.startsWith(
        `warn process killed pid=${drivers[0]} signal=SIGKILL grace=0.3 `,
      )
    ),
    lines.join("\n"),
  );
});

Deno.test("LocalBuilder stopped while its driver ignores SIGTERM kills the driver after the grace, requeues the build and ends", async () => {
  await using farm = await farmWithDrivers({
    packages: [{
      name: "deaf",
      version: "1",
      behaviour: { seconds: 3600, logLines: 1, ignoresSigterm: true },
    }],
  });
  const { drivers, spawnGuix, ended, lines } = farm;
  const abort = new AbortController();
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      spawnGuix,
      pollSeconds: 3600,
    });
    const running = builder.run(abort.signal);
    const deadline = Date.now() + 20_000;
    while (!catchesSigterm(drivers[0] ?? 0)) {
      assert.ok(Date.now() < deadline, "the build never started");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    abort.abort();
    await within(running, 10_000, "end of the builder");
    assert.ok(!alive(drivers[0]), "the driver is gone");
    assert.ok(
      lines.some((l) =>
        l.startsWith(`warn process killed pid=${drivers[0]} signal=SIGKILL `)
      ),
      `driver ${drivers[0]} ended ${ended.get(drivers[0])}; lines:\n${
        lines.join("\n")
      }`,
    );
    const [build] = await farm.store.queue({ job: "deaf.x86_64-linux" }, 1);
    assert.equal(buildStatusName(build.status), "scheduled");
    assert.equal(build.worker, null);
  } finally {
    abort.abort();
  }
});

Deno.test("LocalBuilder pauses after a batch given up on a silent daemon, even when the requeue's own notification wakes it (PostgreSQL)", async () => {
  await using farm = await setup({
    packages: [{
      name: "stuck",
      version: "1",
      maxSilentTime: 1,
      behaviour: { seconds: 0, daemonHangs: true },
    }],
  });
  const abort = new AbortController();
  const lines: string[] = [];
  // The SQLite store with the PostgreSQL store's watchQueue, told of every
  // requeue as PostgreSQL's NOTIFY tells it.
  let queueChanged = () => {};
  const store: Store = {
    ...farm.store,
    watchQueue: (onChange) => queueChanged = onChange,
    requeueBuild: async (...args) => {
      const changed = await farm.store.requeueBuild(...args);
      if (changed) setTimeout(() => queueChanged(), 0);
      return changed;
    },
  };
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      daemonSilenceGraceSeconds: 0.5,
      pollSeconds: 3600,
      logger: loggerInto(lines),
    });
    const running = builder.run(abort.signal);
    const deadline = Date.now() + 20_000;
    while (!lines.some((l) => l.includes("local batch interrupted"))) {
      assert.ok(Date.now() < deadline, lines.join("\n"));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    // Woken by the notification, it would take the build again at once.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    abort.abort();
    await running;
    const started = lines.filter((l) => l.includes("local batch started"));
    assert.equal(started.length, 1, lines.join("\n"));
  } finally {
    abort.abort();
  }
});

Deno.test("LocalBuilder: a builder printing events cannot change another build's status", async () => {
  // The victim's derivation is known first; the liar then prints a
  // success line for it while the victim is still building (and failing).
  const victim = {
    name: "victim",
    version: "1",
    behaviour: { seconds: 0, silenceSeconds: 2, exit: 1 },
  };
  let victimDrv: string;
  {
    // A farm of its own, closed before the test's.
    await using first = await setup({ packages: [victim] });
    await runEvaluation(SPEC, first.runner);
    victimDrv = (await first.store.queue({}, 1))[0].derivation;
  }
  await using farm = await setup({
    packages: [victim, {
      name: "liar",
      version: "1",
      behaviour: {
        seconds: 0,
        logText: `starting\n@ build-succeeded ${victimDrv} -\n`,
      },
    }],
  });
  await runEvaluation(SPEC, farm.runner);
  await drain(farm.builder(2));
  assert.deepEqual(
    await statuses(farm.store, ["victim.x86_64-linux", "liar.x86_64-linux"]),
    { "victim.x86_64-linux": "failed", "liar.x86_64-linux": "succeeded" },
  );
});

Deno.test("LocalBuilder resumes after a restart without losing or repeating work", async () => {
  await using farm = await setup({
    packages: [
      { name: "done", version: "1", behaviour: { seconds: 0 } },
      { name: "todo", version: "1", behaviour: { seconds: 0 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  // A previous run took both builds, then died; one of them was built
  // meanwhile (behind Lorica's back).
  const live = new Set([1001]);
  const run = (pid: number) =>
    fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      holder: {
        self: { host: "box", pid, started: "1" },
        hostName: "box",
        isLive: (owner) => Promise.resolve(live.has(owner.pid)),
      },
    });
  const taken = await run(1001).takeBatch();
  live.delete(1001);
  assert.equal(taken.length, 2);
  const done = taken.find((b) => b.jobName === "done.x86_64-linux")!;
  const built = await guix(farm.daemon, ["build", done.derivation]);
  assert.equal(built.code, 0, built.stderr);

  const builder = run(1002);
  assert.equal(await builder.recover(), 2);
  await drain(builder);
  assert.deepEqual(
    await statuses(farm.store, ["done.x86_64-linux", "todo.x86_64-linux"]),
    { "done.x86_64-linux": "succeeded", "todo.x86_64-linux": "succeeded" },
  );
  // Reconciled from the store, not rebuilt: no build-started, no log.
  const log = logFileName(
    `${farm.root}/logs`,
    farm.daemon.storeDir,
    done.derivation,
  );
  await assert.rejects(Deno.stat(log), Deno.errors.NotFound);
});

Deno.test("LocalBuilder.run() builds until aborted", async () => {
  await using farm = await setup({
    packages: [
      { name: "x", version: "1", behaviour: { seconds: 0 } },
      { name: "y", version: "1", inputs: ["x"], behaviour: { seconds: 0 } },
    ],
  });
  const abort = new AbortController();
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      systems: "all",
      pollSeconds: 0.2,
    });
    const running = builder.run(abort.signal);
    for (let i = 0; i < 200; i++) {
      const pending = await farm.store.queue({}, 10);
      const finished = await farm.store.latestBuilds({}, 10);
      if (pending.length === 0 && finished.length === 2) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    abort.abort();
    await running;
    assert.deepEqual(
      await statuses(farm.store, ["x.x86_64-linux", "y.x86_64-linux"]),
      { "x.x86_64-linux": "succeeded", "y.x86_64-linux": "succeeded" },
    );
  } finally {
    abort.abort();
  }
});

/** Waits (up to 10 s) until a build of `store` has finished. */
async function untilOneFinished(store: Store): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await store.latestBuilds({}, 1)).length > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("LocalBuilder.run() wakes when the store says another process queued builds, not at its next poll", async () => {
  await using farm = await setup({
    packages: [{ name: "late", version: "1", behaviour: { seconds: 0 } }],
  });
  const abort = new AbortController();
  let queueChanged = () => {};
  // The SQLite store with the PostgreSQL store's watchQueue: a callback
  // this test calls as another process's notification would.
  const store: Store = {
    ...farm.store,
    watchQueue: (onChange) => queueChanged = onChange,
  };
  try {
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      systems: "all",
      pollSeconds: 3600,
    });
    const running = builder.run(abort.signal);
    // Its first look finds nothing; then it waits for the hour's poll.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await runEvaluation(SPEC, farm.runner);
    queueChanged();
    await untilOneFinished(farm.store);
    abort.abort();
    await running;
    assert.deepEqual(await statuses(farm.store, ["late.x86_64-linux"]), {
      "late.x86_64-linux": "succeeded",
    });
  } finally {
    abort.abort();
  }
});

Deno.test("LocalBuilder.run() looks again when woken while taking a batch that could not see the new builds", async () => {
  await using farm = await setup({
    packages: [{ name: "racing", version: "1", behaviour: { seconds: 0 } }],
  });
  const abort = new AbortController();
  let queueChanged = () => {};
  let raced = false;
  // The first batch is taken before the evaluation commits, and the
  // notification of its builds arrives before that empty batch returns.
  const store: Store = {
    ...farm.store,
    watchQueue: (onChange) => queueChanged = onChange,
    popBuilds: async (requests, now, options) => {
      const builds = await farm.store.popBuilds(requests, now, options);
      if (!raced) {
        raced = true;
        await runEvaluation(SPEC, farm.runner);
        queueChanged();
      }
      return builds;
    },
  };
  try {
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      systems: "all",
      pollSeconds: 3600,
    });
    const running = builder.run(abort.signal);
    await untilOneFinished(farm.store);
    abort.abort();
    await running;
    assert.ok(raced);
    assert.deepEqual(await statuses(farm.store, ["racing.x86_64-linux"]), {
      "racing.x86_64-linux": "succeeded",
    });
  } finally {
    abort.abort();
  }
});

const smallDisk = smallDiskAvailability();

Deno.test({
  name: smallDisk.ok
    ? "LocalBuilder on a full log disk records the build, warns with the log's path, and stores logs again once space is back"
    : `LocalBuilder on a full log disk records the build (skipped: ${smallDisk.reason})`,
  ignore: !smallDisk.ok,
  async fn() {
    await using disk = await mountSmallDisk(1024 * 1024);
    const chatty = { seconds: 0.2, logLines: 20000 };
    await using farm = await setup({
      packages: [
        { name: "a", version: "1", behaviour: chatty },
        { name: "c", version: "1", inputs: ["a"], behaviour: chatty },
      ],
    });
    const lines: string[] = [];
    const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      logCacheDir: disk.path,
      logger: loggerInto(lines),
    });
    await runEvaluation(SPEC, farm.runner);
    await disk.fill();
    // a builds while the disk is full (c waits for it).
    const first = await builder.takeBatch();
    assert.deepEqual(first.map((build) => build.jobName), ["a.x86_64-linux"]);
    await builder.buildBatch(first);
    const path = logFileName(
      disk.path,
      farm.daemon.storeDir,
      first[0].derivation,
    );
    assert.ok(
      lines.some((l) =>
        l.startsWith("warn log not stored") && l.includes(`path=${path}`) &&
        /os error 28/.test(l)
      ),
      lines.join("\n"),
    );

    // Space is back: the next build's log is whole.
    await disk.free();
    await drain(builder);
    assert.deepEqual(
      await statuses(farm.store, ["a.x86_64-linux", "c.x86_64-linux"]),
      { "a.x86_64-linux": "succeeded", "c.x86_64-linux": "succeeded" },
    );
    const c = (await farm.store.latestBuilds({ job: "c.x86_64-linux" }, 1))[0];
    assert.match(
      await gunzip(
        logFileName(disk.path, farm.daemon.storeDir, c.derivation),
      ),
      /step 20000 of 20000/,
    );
  },
});

Deno.test("LocalBuilder.run() outlives a database that goes down as a batch ends: the batch is requeued once it is back, then recorded", async () => {
  await using farm = await setup({
    packages: [{ name: "z", version: "1", behaviour: { seconds: 0 } }],
  });
  const abort = new AbortController();
  try {
    await runEvaluation(SPEC, farm.runner);
    // PostgreSQL stops as the daemon finishes: the result cannot be
    // recorded, nor the batch given back, until it is up again.
    let down = false;
    let tripped = false;
    const store = failingStore(farm.store, (method) => {
      if (method === "completeBuild" && !tripped) {
        tripped = down = true;
        setTimeout(() => down = false, 1500);
      }
      return down ? connectionRefused() : null;
    });
    const lines: string[] = [];
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      systems: "all",
      pollSeconds: 0.2,
      logger: createLogger({ sink: (line) => lines.push(line) }),
    });
    let failed: unknown = null;
    const running = builder.run(abort.signal).catch((error) => {
      failed = error;
    });
    for (let i = 0; i < 100 && failed === null; i++) {
      const finished = await farm.store.latestBuilds({}, 10);
      if (finished.length === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    abort.abort();
    await running;
    assert.equal(failed, null, `the builder stopped: ${failed}`);
    assert.deepEqual(await statuses(farm.store, ["z.x86_64-linux"]), {
      "z.x86_64-linux": "succeeded",
    });
    assert.ok(
      lines.some((l) =>
        l.includes("local builds not requeued") && l.includes("ECONNREFUSED")
      ),
      lines.join("\n"),
    );
  } finally {
    abort.abort();
  }
});

Deno.test("LocalBuilder marks a log as being written until the build ends, so that a start after a crash repairs it", async () => {
  await using farm = await setup({
    packages: [
      { name: "s", version: "1", behaviour: { seconds: 1.5, logLines: 5 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  const builder = farm.builder();
  const building = builder.buildBatch(await builder.takeBatch());
  const logs = `${farm.root}/logs`;
  let marked = false;
  for (let i = 0; i < 100 && !marked; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    marked = await partLinkedToLog(logs);
  }
  assert.ok(marked, "the log being written has its upload name");
  await building;
  const s = (await farm.store.latestBuilds({ job: "s.x86_64-linux" }, 1))[0];
  assert.equal(buildStatusName(s.status), "succeeded");
  assert.match(await gunzip(s.log), /\[s-1\] step 5 of 5/);
  const names = [...Deno.readDirSync(logs)].map((entry) => entry.name);
  assert.deepEqual(names.filter((name) => name.endsWith(".part")), []);
});

/** Whether an upload file in `dir` is, by a second name, its build log. */
async function partLinkedToLog(dir: string): Promise<boolean> {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  } catch {
    return false; // not made yet
  }
  for (const name of names) {
    if (!name.endsWith(".part")) continue;
    const part = await Deno.stat(`${dir}/${name}`).catch(() => null);
    const log = await Deno.stat(`${dir}/${name.slice(0, -22)}`)
      .catch(() => null);
    if (part && log && part.ino === log.ino) return true;
  }
  return false;
}

Deno.test("LocalBuilder writes a log readable while the build runs, so that the live view and a repair after a crash keep what was printed", async () => {
  await using farm = await setup({
    packages: [
      { name: "s", version: "1", behaviour: { seconds: 4, logLines: 40 } },
    ],
  });
  await runEvaluation(SPEC, farm.runner);
  const builder = farm.builder();
  let finished = false;
  const building = builder.buildBatch(await builder.takeBatch())
    .finally(() => (finished = true));
  const logs = `${farm.root}/logs`;
  // What the file holds mid-build, decoded as far as it goes: a server
  // killed now leaves just that behind.
  let text = "";
  while (!finished && !text.includes("[s-1] step 5 of 40")) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    text = await partialLog(logs);
  }
  assert.ok(
    !finished,
    `the build ended first; the file held ${text.length} characters`,
  );
  await building;
});

/** The text of the log being written in `dir`, as far as it decodes. */
async function partialLog(dir: string): Promise<string> {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  } catch {
    return ""; // not made yet
  }
  const name = names.find((name) => name.endsWith(".log.gz"));
  if (name === undefined) return "";
  const bytes = await Deno.readFile(`${dir}/${name}`);
  if (bytes.length === 0) return "";
  try {
    return new TextDecoder().decode(
      zlib.gunzipSync(bytes, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
    );
  } catch {
    return "";
  }
}

/**
 * `store` with its method `method` replaced by `wrap(real)`, `real` being
 * the store's own: for tests that hold or watch one call to the database.
 */
function intercepting<
  K extends "completeBuild" | "restartBuild" | "getBuildByDerivation",
>(
  store: Store,
  method: K,
  wrap: (real: Store[K]) => Store[K],
): Store {
  const replaced = wrap(store[method].bind(store) as Store[K]);
  return new Proxy(store, {
    get: (target, key) => key === method ? replaced : Reflect.get(target, key),
  });
}

/** Waits (up to 20 s) until every job of `jobs` is started. */
async function untilStarted(store: Store, jobs: string[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (true) {
    const running = await store.queue({}, 100);
    const started = running.filter((build) =>
      jobs.includes(build.jobName) &&
      buildStatusName(build.status) === "started"
    );
    if (started.length === jobs.length) return;
    assert.ok(Date.now() < deadline, `${jobs} never all started`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function buildOf(store: Store, job: string) {
  const [build] = await store.latestBuilds({ job }, 1);
  return build ?? (await store.queue({ job }, 1))[0];
}

Deno.test("LocalBuilder: a build canceled while it runs stops its driver, stays canceled, and the rest of its batch is requeued and built", async () => {
  await using farm = await farmWithDrivers({
    packages: [
      { name: "long", version: "1", behaviour: { seconds: 3600, logLines: 1 } },
      { name: "other", version: "1", behaviour: { seconds: 3, logLines: 3 } },
    ],
  });
  const { drivers, spawnGuix, lines } = farm;
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    spawnGuix,
    maxJobs: 2,
    logger: loggerInto(lines),
  });
  const batch = builder.buildBatch(await builder.takeBatch());
  await untilStarted(farm.store, ["long.x86_64-linux", "other.x86_64-linux"]);
  const long = await buildOf(farm.store, "long.x86_64-linux");

  assert.equal(await builder.cancelBuild(long.id), true);
  const summary = await within(batch, 5_000, "end of the batch");
  assert.equal(summary.interruption, "withdrawal");
  assert.equal(summary.requeued, 1);
  assert.equal(drivers.length, 1);
  assert.ok(!alive(drivers[0]), "the driver is gone");
  const other = await buildOf(farm.store, "other.x86_64-linux");
  assert.equal(buildStatusName(other.status), "scheduled");
  assert.equal(other.worker, null);

  await drain(builder);
  assert.deepEqual(
    await statuses(farm.store, ["long.x86_64-linux", "other.x86_64-linux"]),
    { "long.x86_64-linux": "canceled", "other.x86_64-linux": "succeeded" },
  );
  const about = lines.filter((l) => l.includes(long.derivation));
  assert.ok(
    about.some((l) => l.startsWith("info build canceled ")),
    lines.join("\n"),
  );
  assert.ok(
    !about.some((l) => /^\w+ build (succeeded|failed) /.test(l)),
    lines.join("\n"),
  );
});

Deno.test("LocalBuilder: a build restarted while it runs stops its driver, is scheduled again and built again", async () => {
  await using farm = await farmWithDrivers({
    packages: [
      { name: "again", version: "1", behaviour: { seconds: 5, logLines: 5 } },
    ],
  });
  const { drivers, spawnGuix, lines } = farm;
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    spawnGuix,
    logger: loggerInto(lines),
  });
  const batch = builder.buildBatch(await builder.takeBatch());
  await untilStarted(farm.store, ["again.x86_64-linux"]);
  const build = await buildOf(farm.store, "again.x86_64-linux");

  assert.equal(await builder.restartBuild(build.id), true);
  const summary = await within(batch, 3_000, "end of the batch");
  assert.equal(summary.interruption, "withdrawal");
  assert.ok(!alive(drivers[0]), "the driver is gone");
  const restarted = await buildOf(farm.store, "again.x86_64-linux");
  assert.equal(buildStatusName(restarted.status), "scheduled");
  assert.equal(restarted.worker, null);

  await drain(builder);
  assert.deepEqual(await statuses(farm.store, ["again.x86_64-linux"]), {
    "again.x86_64-linux": "succeeded",
  });
  const about = lines.filter((l) => l.includes(build.derivation));
  assert.equal(
    about.filter((l) => l.startsWith("info build started ")).length,
    2,
    lines.join("\n"),
  );
  assert.equal(
    about.filter((l) => l.startsWith("info build succeeded ")).length,
    1,
    lines.join("\n"),
  );
});

Deno.test("LocalBuilder does not log as succeeded a build canceled behind its back (another process) before it ended", async () => {
  await using farm = await setup({
    packages: [
      { name: "gone", version: "1", behaviour: { seconds: 2, logLines: 2 } },
    ],
  });
  const lines: string[] = [];
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    logger: loggerInto(lines),
  });
  const batch = builder.buildBatch(await builder.takeBatch());
  await untilStarted(farm.store, ["gone.x86_64-linux"]);
  const build = await buildOf(farm.store, "gone.x86_64-linux");
  assert.ok((await farm.store.cancelBuild(build.id, 1)).changed);
  const summary = await within(batch, 10_000, "end of the batch");

  assert.equal(summary.succeeded, 0);
  assert.deepEqual(await statuses(farm.store, ["gone.x86_64-linux"]), {
    "gone.x86_64-linux": "canceled",
  });
  assert.ok(
    !lines.some((l) => l.startsWith("info build succeeded ")),
    lines.join("\n"),
  );
});

Deno.test("LocalBuilder: a build restarted while its batch is being reconciled keeps its new run, not the state read before the restart", async () => {
  await using farm = await setup({
    packages: [
      { name: "first", version: "1", behaviour: { seconds: 0 } },
      { name: "second", version: "1", behaviour: { seconds: 0 } },
    ],
  });
  // A driver that reports nothing leaves both builds to the reconciliation
  // after it, where the daemon's "none" means failed-dependency.
  const spawnGuix = silentDriver(farm);
  const firstHeld = Promise.withResolvers<string>();
  const release = Promise.withResolvers<void>();
  let completions = 0;
  const store = intercepting(
    farm.store,
    "completeBuild",
    (real) => async (...args) => {
      if (completions++ === 0) {
        firstHeld.resolve(args[0]);
        await release.promise;
      }
      return await real(...args);
    },
  );
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      spawnGuix,
    });
    const taken = await builder.takeBatch();
    assert.equal(taken.length, 2);
    const batch = builder.buildBatch(taken);
    const settling = await within(
      firstHeld.promise,
      10_000,
      "the first reconciliation",
    );
    const later = taken.find((build) => build.derivation !== settling)!;

    // Restarted, then taken again by another lane while the first batch
    // still reconciles its first build.
    assert.equal(await builder.restartBuild(later.id), true);
    const again = await builder.takeBatch();
    assert.deepEqual(again.map((build) => build.id), [later.id]);
    release.resolve();
    await within(batch, 10_000, "end of the batch");

    const now = (await farm.store.getBuild(later.id))!;
    assert.equal(
      buildStatusName(now.status),
      "submitted",
      "the new batch's build is left to it",
    );
  } finally {
    release.resolve();
  }
});

for (const action of ["canceled", "restarted"] as const) {
  Deno.test(`LocalBuilder: a build ${action} by another process while it runs stops its driver at the next look at the database, and the rest of its batch is requeued`, async () => {
    await using farm = await farmWithDrivers(hourLongBuilds(["long", "other"]));
    const { drivers, spawnGuix, lines } = farm;
    const clock = new FakeClock();
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      spawnGuix,
      maxJobs: 2,
      clock,
      heldCheckSeconds: 5,
      logger: loggerInto(lines),
    });
    const batch = builder.buildBatch(await builder.takeBatch());
    await untilStarted(farm.store, [
      "long.x86_64-linux",
      "other.x86_64-linux",
    ]);
    const long = await buildOf(farm.store, "long.x86_64-linux");

    // Through the store alone, as a web front end in another process.
    const result = action === "canceled"
      ? await farm.store.cancelBuild(long.id, 1)
      : await farm.store.restartBuild(long.id, 1);
    assert.equal(result.changed, true);
    await clock.advance(5_000);
    const summary = await within(batch, 10_000, "end of the batch");
    assert.equal(summary.interruption, "withdrawal");
    assert.equal(summary.requeued, 1);
    assert.ok(!alive(drivers[0]), "the driver is gone");
    const other = await buildOf(farm.store, "other.x86_64-linux");
    assert.equal(buildStatusName(other.status), "scheduled");
    assert.equal(other.worker, null);
    const now = (await farm.store.getBuild(long.id))!;
    assert.equal(
      buildStatusName(now.status),
      action === "canceled" ? "canceled" : "scheduled",
    );
    assert.ok(
      lines.some((l) =>
        l.startsWith(`info build taken back drv=${long.derivation} `)
      ),
      lines.join("\n"),
    );
  });
}

Deno.test("LocalBuilder.run(): a build canceled by another process is taken from its batch when the store says holdings changed, not at the batch's next look", async () => {
  await using farm = await farmWithDrivers(hourLongBuilds(["long"]));
  const { drivers, spawnGuix, lines } = farm;
  const abort = new AbortController();
  let holdingsChanged = () => {};
  // The SQLite store with the PostgreSQL store's watchHoldings: a callback
  // this test calls as another process's notification would.
  const store: Store = {
    ...farm.store,
    watchHoldings: (onChange) => holdingsChanged = onChange,
  };
  let running: Promise<void> | null = null;
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      spawnGuix,
      // Time stands still: the batch's looks never come.
      clock: new FakeClock(),
      heldCheckSeconds: 5,
      logger: loggerInto(lines),
    });
    running = builder.run(abort.signal);
    await untilStarted(farm.store, ["long.x86_64-linux"]);
    const long = await buildOf(farm.store, "long.x86_64-linux");
    assert.equal((await farm.store.cancelBuild(long.id, 1)).changed, true);
    holdingsChanged();
    await eventually(
      () => drivers.length === 1 && !alive(drivers[0]),
      "the driver stopped",
    );
    assert.ok(
      lines.some((l) =>
        l.startsWith(`info build taken back drv=${long.derivation} `)
      ),
      lines.join("\n"),
    );
    assert.equal(
      buildStatusName((await farm.store.getBuild(long.id))!.status),
      "canceled",
    );
  } finally {
    abort.abort();
    await running;
  }
});

Deno.test("LocalBuilder: a look at the database right after a build is recorded does not take it for one canceled elsewhere", async () => {
  await using farm = await setup({
    packages: [
      { name: "first", version: "1", behaviour: { seconds: 0 } },
      { name: "second", version: "1", behaviour: { seconds: 2, logLines: 2 } },
    ],
  });
  const clock = new FakeClock();
  // The first result is in the database, not yet out of the batch, when
  // the look reads which builds the server holds.
  const looked = Promise.withResolvers<void>();
  let completions = 0;
  const store = new Proxy(farm.store, {
    get(target, key) {
      if (key === "queue") {
        return async (...args: Parameters<Store["queue"]>) => {
          const held = await target.queue(...args);
          looked.resolve();
          return held;
        };
      }
      if (key === "completeBuild") {
        return async (...args: Parameters<Store["completeBuild"]>) => {
          const result = await target.completeBuild(...args);
          if (completions++ === 0) {
            await clock.advance(5_000);
            await looked.promise;
            await new Promise((resolve) => setTimeout(resolve, 0));
          }
          return result;
        };
      }
      return Reflect.get(target, key);
    },
  });
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
    clock,
    heldCheckSeconds: 5,
  });
  const summary = await builder.buildBatch(await builder.takeBatch());
  assert.equal(summary.interruption, null);
  assert.equal(summary.succeeded, 2);
  assert.deepEqual(
    await statuses(farm.store, ["first.x86_64-linux", "second.x86_64-linux"]),
    { "first.x86_64-linux": "succeeded", "second.x86_64-linux": "succeeded" },
  );
});

Deno.test("LocalBuilder: a build restarted by another process and taken by a second batch is left to it by the first, which neither records nor requeues it", async () => {
  await using farm = await farmWithDrivers(hourLongBuilds(["long", "again"]));
  const { spawnGuix, lines } = farm;
  await runEvaluation(SPEC, farm.runner);
  // No look at the database: the clock never moves.
  const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
    spawnGuix,
    maxJobs: 2,
    clock: new FakeClock(),
    logger: loggerInto(lines),
  });
  const first = builder.buildBatch(await builder.takeBatch());
  await untilStarted(farm.store, ["long.x86_64-linux", "again.x86_64-linux"]);
  const long = await buildOf(farm.store, "long.x86_64-linux");
  const again = await buildOf(farm.store, "again.x86_64-linux");

  assert.equal((await farm.store.restartBuild(again.id, 1)).changed, true);
  const second = await builder.takeBatch();
  assert.deepEqual(second.map((build) => build.id), [again.id]);
  // Whatever else ends the first batch, it requeues what it holds.
  await builder.cancelBuild(long.id);
  await within(first, 10_000, "end of the first batch");

  const now = (await farm.store.getBuild(again.id))!;
  assert.equal(buildStatusName(now.status), "submitted");
  assert.equal(now.worker, await builder.holderName());
  assert.ok(
    lines.some((l) =>
      l.startsWith(`info build taken back drv=${again.derivation} `)
    ),
    lines.join("\n"),
  );
});

Deno.test("LocalBuilder: a restart saved after its build went to another batch stops that batch, not only the one that held the build when the restart was asked", async () => {
  await using farm = await farmWithDrivers(hourLongBuilds(["long", "again"]));
  const { drivers, spawnGuix } = farm;
  // The restart reaches the database only once the test lets it.
  const restartAsked = Promise.withResolvers<void>();
  const saveRestart = Promise.withResolvers<void>();
  const store = intercepting(
    farm.store,
    "restartBuild",
    (real) => async (...args) => {
      restartAsked.resolve();
      await saveRestart.promise;
      return await real(...args);
    },
  );
  try {
    await runEvaluation(SPEC, farm.runner);
    // No periodic look at the database: the clock never moves.
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      spawnGuix,
      maxJobs: 2,
      clock: new FakeClock(),
    });
    const first = builder.buildBatch(await builder.takeBatch());
    await untilStarted(farm.store, ["long.x86_64-linux", "again.x86_64-linux"]);
    const long = await buildOf(farm.store, "long.x86_64-linux");
    const again = await buildOf(farm.store, "again.x86_64-linux");

    const restarting = builder.restartBuild(again.id);
    await restartAsked.promise;
    // Meanwhile the first batch ends, and a second takes the build.
    await builder.cancelBuild(long.id);
    await within(first, 10_000, "end of the first batch");
    const secondBatch = await builder.takeBatch();
    assert.deepEqual(secondBatch.map((build) => build.id), [again.id]);
    const second = builder.buildBatch(secondBatch);
    await untilStarted(farm.store, ["again.x86_64-linux"]);

    saveRestart.resolve();
    assert.equal(await restarting, true);
    const summary = await within(second, 10_000, "end of the second batch");
    assert.equal(summary.interruption, "withdrawal");
    assert.equal(drivers.length, 2);
    assert.ok(!alive(drivers[1]), "the second driver is gone");
    const now = (await farm.store.getBuild(again.id))!;
    assert.equal(buildStatusName(now.status), "scheduled");
  } finally {
    saveRestart.resolve();
  }
});

Deno.test("LocalBuilder: builds held under its name past its batches (left by a batch the database could not give back) do not hide its own from its look at the database", async () => {
  await using farm = await farmWithDrivers(hourLongBuilds(["p1", "p2", "p3"]));
  const { drivers, spawnGuix, lines } = farm;
  const clock = new FakeClock();
  const readAlone = Promise.withResolvers<void>();
  const store = intercepting(
    farm.store,
    "getBuildByDerivation",
    (real) => async (drv: string) => {
      const build = await real(drv);
      readAlone.resolve();
      return build;
    },
  );
  await runEvaluation(SPEC, farm.runner);
  const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
    spawnGuix,
    batchSize: 1,
    clock,
    heldCheckSeconds: 5,
    logger: loggerInto(lines),
  });
  // Two builds held under its name, outside its batches, come first in
  // the list.
  const worker = await builder.holderName();
  const request = { worker, systems: ["x86_64-linux"] };
  for (const build of await farm.store.popBuilds([request, request], 1)) {
    await farm.store.markStarted(build!.derivation, worker, "", 1);
  }
  // Its list of held builds is then cut after those two.
  const taken = await builder.takeBatch();
  assert.equal(taken.length, 1);
  let ended = false;
  const batch = builder.buildBatch(taken).finally(() => ended = true);
  await untilStarted(farm.store, [taken[0].jobName]);

  await clock.advance(5_000);
  await within(readAlone.promise, 10_000, "read of the build past the cut");
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.ok(
    !lines.some((l) => l.startsWith("info build taken back ")),
    lines.join("\n"),
  );
  assert.ok(!ended, "the batch goes on");
  assert.ok(alive(drivers[0]), "the driver goes on");

  assert.ok((await farm.store.cancelBuild(taken[0].id, 1)).changed);
  await clock.advance(5_000);
  const summary = await within(batch, 10_000, "end of the batch");
  assert.equal(summary.interruption, "withdrawal");
});

for (const action of ["cancel", "restart"] as const) {
  Deno.test(`LocalBuilder: to ${action} an evaluation stops the drivers building its builds at once`, async () => {
    await using farm = await farmWithDrivers(hourLongBuilds(["long", "other"]));
    const { drivers, spawnGuix } = farm;
    const evaluation = await runEvaluation(SPEC, farm.runner);
    // No periodic look at the database: the clock never moves.
    const builder = fakeLocalBuilder(farm.root, farm.store, farm.daemon, {
      spawnGuix,
      maxJobs: 2,
      clock: new FakeClock(),
    });
    const batch = builder.buildBatch(await builder.takeBatch());
    await untilStarted(farm.store, [
      "long.x86_64-linux",
      "other.x86_64-linux",
    ]);

    const count = action === "cancel"
      ? await builder.cancelEvaluation(evaluation.id)
      : await builder.restartEvaluation(evaluation.id);
    assert.equal(count, 2);
    const summary = await within(batch, 10_000, "end of the batch");
    assert.equal(summary.interruption, "withdrawal");
    assert.equal(summary.requeued, 0);
    assert.ok(!alive(drivers[0]), "the driver is gone");
    for (const job of ["long.x86_64-linux", "other.x86_64-linux"]) {
      const build = await buildOf(farm.store, job);
      assert.equal(
        buildStatusName(build.status),
        action === "cancel" ? "canceled" : "scheduled",
        job,
      );
    }
  });
}

Deno.test("LocalBuilder: a look at the database while a batch is reconciled does not log as taken back the build it has just recorded", async () => {
  await using farm = await setup({
    packages: [
      { name: "first", version: "1", behaviour: { seconds: 0 } },
      { name: "second", version: "1", behaviour: { seconds: 0 } },
    ],
  });
  // A driver that reports nothing leaves both builds to the reconciliation.
  const spawnGuix = silentDriver(farm);
  const recorded = Promise.withResolvers<string>();
  const release = Promise.withResolvers<void>();
  let completions = 0;
  const store = intercepting(
    farm.store,
    "completeBuild",
    (real) => async (...args) => {
      const result = await real(...args);
      if (completions++ === 0) {
        recorded.resolve(args[0]);
        await release.promise;
      }
      return result;
    },
  );
  const lines: string[] = [];
  try {
    await runEvaluation(SPEC, farm.runner);
    const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
      spawnGuix,
      logger: loggerInto(lines),
    });
    const taken = await builder.takeBatch();
    const batch = builder.buildBatch(taken);
    const settled = await within(recorded.promise, 10_000, "a record");
    const later = taken.find((build) => build.derivation !== settled)!;

    // In the database, not yet out of the batch, when the restart of the
    // other build looks at what the server holds.
    assert.equal(await builder.restartBuild(later.id), true);
    release.resolve();
    await within(batch, 10_000, "end of the batch");
    assert.ok(
      !lines.some((l) => l.startsWith(`info build taken back drv=${settled} `)),
      lines.join("\n"),
    );
  } finally {
    release.resolve();
  }
});

/**
 * A spawner whose build driver exits at once without a word, the daemon's
 * queries answered by the fake guix of `farm`.
 */
function silentDriver(farm: { daemon: { env: Record<string, string> } }) {
  const real = guixSpawner({ command: GUIX, env: farm.daemon.env });
  const spawnGuix: GuixSpawner = (args, options) =>
    args.includes("--query")
      ? real(args, options)
      : spawnProcess(["true"], options);
  return spawnGuix;
}

for (const { name: backend, ignore, needs } of backends) {
  Deno.test({
    name:
      `LocalBuilder.run() on ${backend}: a look at the database while a batch is built finds the holder row no longer this server's, though a server of the same host took the name again and its build, and gives up the batch rather than build and record it under that server's claim${needs}`,
    ignore,
    async fn() {
      await using farm = await farmWithDrivers(hourLongBuilds(["long"]));
      const db = await sharedDatabase(backend, SPEC, "lorica_look");
      const { drivers, spawnGuix, lines } = farm;
      const abort = new AbortController();
      const clock = new FakeClock();
      let holdingsChanged = () => {};
      const store: Store = {
        ...db.a,
        watchQueue: undefined,
        watchHoldings: (onChange) => holdingsChanged = onChange,
      };
      // Two servers of host "box": this one (pid 1) and a later one (4).
      const host = "box pid:[1]";
      const live = new Set([1, 4]);
      let running: Promise<void> | null = null;
      try {
        await runEvaluation(SPEC, { ...farm.runner, store: db.a });
        const builder = fakeLocalBuilder(farm.root, store, farm.daemon, {
          spawnGuix,
          clock,
          heldCheckSeconds: 5,
          logger: loggerInto(lines),
          holder: {
            self: { host, pid: 1, started: "7" },
            hostName: "box",
            isLive: (owner) => Promise.resolve(live.has(owner.pid)),
          },
        });
        running = builder.run(abort.signal);
        await untilStarted(db.a, ["long.x86_64-linux"]);
        const name = await builder.holderName();
        // This server paused past the timeout: another's sweep expired
        // its row, the server started since on the host took the name
        // again, then the build.
        const now = Math.floor(clock.now() / 1000);
        // A sweep once the row's own 120 s are over, by a server of 30 s.
        const expired = await db.b.expireWorkers(now + 121, {
          timeoutSeconds: 30,
        });
        assert.deepEqual(expired.map((worker) => worker.name), [name]);
        const later = holderAddress({ host, pid: 4, started: "7" }, "l8.1");
        assert.ok(
          await db.b.claimWorker({
            name,
            address: later,
            machine: "box",
            systems: ["x86_64-linux"],
            lastSeen: now,
            timeoutSeconds: 120,
          }, null),
        );
        const [taken] = await db.b.popBuilds(
          [{ worker: name, systems: ["x86_64-linux"] }],
          now,
          { holderAddress: later },
        );
        assert.equal(taken?.jobName, "long.x86_64-linux");
        // Any notification: the look it brings reads the holder row too.
        holdingsChanged();
        await eventually(
          () => drivers.length === 1 && !alive(drivers[0]),
          "the driver stopped",
        );
        assert.ok(
          lines.some((l) =>
            l.startsWith(`warn local holder lost worker=${name}`)
          ),
          lines.join("\n"),
        );
        const now2 = (await db.a.getBuild(taken!.id))!;
        assert.equal(buildStatusName(now2.status), "submitted");
        assert.equal(now2.worker, name);
      } finally {
        abort.abort();
        await running;
        await db.close();
      }
    },
  });
}
