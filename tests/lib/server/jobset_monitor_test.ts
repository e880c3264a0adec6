import assert from "node:assert/strict";
import { systemClock } from "../../../lib/clock.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { Git } from "../../../lib/git/git.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import {
  evaluationLogPath,
  type EvaluationRunnerOptions,
  recordFailedEvaluation,
  runEvaluation,
} from "../../../lib/server/evaluation_runner.ts";
import {
  JobsetMonitor,
  type JobsetMonitorOptions,
} from "../../../lib/server/jobset_monitor.ts";
import { FakeClock } from "./_dispatch_fixture.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { REGISTRATION_CHUNK_JOBS } from "../../../lib/store/chunked_registration.ts";
import {
  EvaluationStatus,
  type Specification,
} from "../../../lib/store/types.ts";
import {
  GUIX,
  makeDaemon,
  makeRoot,
  writeScenario,
} from "../../fake-guix/test_env.ts";
import { git } from "../git/_git.ts";

const hasGit = await new Deno.Command("git", { args: ["--version"] })
  .output().then((r) => r.success, () => false);

async function commit(dir: string, text: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/file.scm`, `;; ${text}\n`);
  await git(dir, "add", "file.scm");
  await git(dir, "commit", "--quiet", "-m", text);
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

function specFor(url: string, commit: string | null = null): Specification {
  return {
    name: "polled",
    build: { type: "all", params: [] },
    channels: [{
      name: "guix",
      url,
      branch: "main",
      commit,
      introduction: null,
    }],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 9,
    systems: ["x86_64-linux"],
    isActive: true,
  };
}

/**
 * A monitor of a local git channel whose evaluation gives `packages`; its
 * disposal stops the monitor and removes everything below its root.
 */
async function setup(packages = [{ name: "p", version: "1" }]) {
  const root = await makeRoot();
  const repo = `${root}/channel`;
  await Deno.mkdir(repo);
  await git(repo, "init", "--quiet", "--initial-branch=main");
  const daemon = await makeDaemon(root, "server", {
    FAKE_GUIX_SCENARIO: await writeScenario(root, { packages }),
  });
  const store = openSqliteStore(`${root}/lorica.db`);
  const runner: EvaluationRunnerOptions = {
    store,
    guix: new Guix({ command: GUIX, env: daemon.env, logger: silentLogger }),
    clock: systemClock,
    logger: silentLogger,
    stateDir: `${root}/state`,
  };
  const monitor = new JobsetMonitor({
    store,
    git: new Git(),
    clock: systemClock,
    logger: silentLogger,
    cacheDir: `${root}/git`,
    defaultInterval: 600,
    evaluate: (spec, request) => runEvaluation(spec, runner, request),
    recordFailure: (spec, failure) =>
      recordFailedEvaluation(spec, runner, failure),
  });
  return {
    root,
    repo,
    store,
    runner,
    monitor,
    async [Symbol.asyncDispose]() {
      await monitor.stop();
      await store.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/**
 * Points a specification at `farm`'s channel, makes its first commit and
 * polls it: the specification and the evaluation that poll made (which
 * it must have made).
 */
async function evaluatedFirstCommit(
  farm: Awaited<ReturnType<typeof setup>>,
) {
  await commit(farm.repo, "first");
  const spec = specFor(farm.repo);
  await farm.store.upsertSpecification(spec);
  const one = await farm.monitor.pollOnce(spec);
  if (one.kind !== "evaluated") throw new Error("expected an evaluation");
  return { spec, one };
}

/**
 * A test driving a real git repository (setup()'s channel): ignored, its
 * name saying so, where there is no git to run.
 */
function gitTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore: !hasGit, fn });
}

gitTest(
  "JobsetMonitor: a pushed commit triggers exactly one evaluation; no change none (needs git)",
  async () => {
    await using farm = await setup();
    const first = await commit(farm.repo, "first");
    const spec = specFor(farm.repo);
    await farm.store.upsertSpecification(spec);

    const one = await farm.monitor.pollOnce(spec);
    assert.equal(one.kind, "evaluated");
    assert.equal(
      (await farm.monitor.pollOnce(spec)).kind,
      "unchanged",
    );
    const second = await commit(farm.repo, "second");
    const two = await farm.monitor.pollOnce(spec);
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");

    const evaluations = await farm.store.listEvaluations({
      specification: "polled",
      limit: 10,
    });
    assert.equal(evaluations.length, 2);
    assert.ok(
      evaluations.every((e) => e.status === EvaluationStatus.succeeded),
    );
    if (one.kind !== "evaluated" || two.kind !== "evaluated") {
      throw new Error("expected two evaluations");
    }
    const revisions = async (id: number) =>
      (await farm.store.getEvaluationCheckouts(id)).map((c) => c.revision);
    assert.deepEqual(await revisions(one.evaluation.id), [first]);
    assert.deepEqual(await revisions(two.evaluation.id), [second]);
    assert.match(
      await Deno.readTextFile(
        evaluationLogPath(farm.runner.stateDir, two.evaluation.id),
      ),
      new RegExp(`;; channel guix: ${second}`),
    );
  },
);

gitTest(
  "JobsetMonitor: a pinned commit is evaluated once (needs git)",
  async () => {
    await using farm = await setup();
    const first = await commit(farm.repo, "first");
    await commit(farm.repo, "second");
    const spec = specFor(farm.repo, first);
    await farm.store.upsertSpecification(spec);
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "evaluated");
    await commit(farm.repo, "third");
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");
  },
);

gitTest(
  "JobsetMonitor: a broken channel gives one failed evaluation with its log (needs git)",
  async () => {
    await using farm = await setup();
    const spec = specFor(`${farm.root}/no-such-repository`);
    await farm.store.upsertSpecification(spec);
    const result = await farm.monitor.pollOnce(spec);
    assert.equal(result.kind, "fetch-failed");
    if (result.kind !== "fetch-failed") return;
    const evaluation = await farm.store.getEvaluation(result.evaluation!);
    assert.equal(evaluation?.status, EvaluationStatus.failed);
    const log = await Deno.readTextFile(
      evaluationLogPath(farm.runner.stateDir, result.evaluation!),
    );
    assert.match(log, /cannot fetch channel "guix"/);
    assert.match(log, /does not appear to be a git repository|not found/);
    // The same failure again only warns.
    const again = await farm.monitor.pollOnce(spec);
    assert.deepEqual(again.kind === "fetch-failed" && again.evaluation, null);
  },
);

gitTest(
  "JobsetMonitor polls in the background and answers triggers (needs git)",
  async () => {
    await using farm = await setup();
    await commit(farm.repo, "first");
    await farm.store.upsertSpecification(specFor(farm.repo));
    farm.monitor.start();
    const count = async () =>
      (await farm.store.listEvaluations({
        specification: "polled",
        limit: 10,
      }))
        .filter((e) => e.status !== EvaluationStatus.started).length;
    for (let i = 0; i < 100 && await count() < 1; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(await count(), 1);
    await commit(farm.repo, "second");
    assert.equal(farm.monitor.trigger("polled"), "polling");
    for (let i = 0; i < 100 && await count() < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(await count(), 2);
    assert.equal(farm.monitor.lastUpdateTimes("polled")?.length, 2);
  },
);

gitTest(
  "JobsetMonitor: commits whose evaluation was interrupted are evaluated again (needs git)",
  async () => {
    await using farm = await setup();
    const { spec, one } = await evaluatedFirstCommit(farm);
    // The server died during it: the next start marks it aborted.
    await farm.store.setEvaluationStatus(
      one.evaluation.id,
      EvaluationStatus.aborted,
      0,
    );
    const again = await farm.monitor.pollOnce(spec);
    assert.equal(again.kind, "evaluated");
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");
  },
);

gitTest(
  "JobsetMonitor: commits whose registration a server stop cut short are evaluated again at the next poll, which registers the rest (needs git)",
  async () => {
    const count = REGISTRATION_CHUNK_JOBS + 1;
    await using farm = await setup(
      Array.from(
        { length: count },
        (_, i) => ({ name: `p${i}`, version: "1" }),
      ),
    );
    await commit(farm.repo, "first");
    const spec = specFor(farm.repo);
    await farm.store.upsertSpecification(spec);
    // The server is stopped while the first chunk is being written.
    const stop = new AbortController();
    let registrations = 0;
    farm.runner.signal = stop.signal;
    farm.runner.store = {
      ...farm.store,
      registerBuilds(id, jobs, options) {
        registrations++;
        const writing = farm.store.registerBuilds(id, jobs, options);
        stop.abort();
        return writing;
      },
    };
    const one = await farm.monitor.pollOnce(spec);
    if (one.kind !== "evaluated") throw new Error("expected an evaluation");
    assert.equal(one.evaluation.status, EvaluationStatus.aborted);
    assert.equal(registrations, 1);
    assert.equal(
      (await farm.store.listJobs(one.evaluation.id)).length,
      REGISTRATION_CHUNK_JOBS,
    );

    // Started again: no stop, the same commit.
    farm.runner.signal = undefined;
    farm.runner.store = farm.store;
    const again = await farm.monitor.pollOnce(spec);
    if (again.kind !== "evaluated") {
      throw new Error(`expected an evaluation, got ${again.kind}`);
    }
    assert.equal(again.evaluation.status, EvaluationStatus.succeeded);
    assert.equal(again.evaluation.created, 1);
    assert.equal((await farm.store.queue({}, count + 1)).length, count);
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");
  },
);

gitTest(
  "JobsetMonitor: commits whose evaluation an administrator canceled are not evaluated again, until it is restarted (needs git)",
  async () => {
    await using farm = await setup();
    const { spec, one } = await evaluatedFirstCommit(farm);
    // Canceled while it ran (set back to started: the monitor's own run
    // has ended by now): it ends aborted, as an interrupted one does.
    await farm.store.setEvaluationStatus(
      one.evaluation.id,
      EvaluationStatus.started,
      -1,
    );
    await farm.store.cancelEvaluation(one.evaluation.id, 0);
    assert.equal(
      (await farm.store.getEvaluation(one.evaluation.id))?.status,
      EvaluationStatus.aborted,
    );
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");
    // Wanted after all: its commits are evaluated again.
    await farm.store.restartEvaluation(one.evaluation.id, 0);
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "evaluated");
  },
);

/**
 * A monitor over an in-memory store with a stand-in for git: every fetch
 * answers `revision`, after `gate` when one is set; evaluations are only
 * recorded. Log lines are kept in `lines`.
 */
function fakeSetup(
  spec: Specification,
  extra: Partial<JobsetMonitorOptions> = {},
) {
  const store = openSqliteStore(":memory:");
  const lines: string[] = [];
  let fetches = 0;
  let gate: Promise<void> | null = null;
  const git = {
    async fetchBranch() {
      fetches++;
      await gate;
      return "c0ffee".padEnd(40, "0");
    },
    fetchCommit: (_url: string, commit: string) => Promise.resolve(commit),
  } as unknown as Git;
  const monitor = new JobsetMonitor({
    store,
    git,
    clock: systemClock,
    logger: createLogger({
      sink: (line) => lines.push(line),
      timestamps: false,
    }),
    cacheDir: "/nonexistent",
    defaultInterval: 600,
    async evaluate(spec, request) {
      const id = await store.addEvaluation(spec.name, request.checkouts, 1);
      await store.setEvaluationStatus(id, EvaluationStatus.succeeded, 2);
      return {
        id,
        status: EvaluationStatus.succeeded,
        jobs: 0,
        created: 0,
        derivations: [],
      };
    },
    recordFailure: () => Promise.reject(new Error("no failure expected")),
    ...extra,
  });
  return {
    store,
    monitor,
    lines,
    fetches: () => fetches,
    hold(): () => void {
      const { promise, resolve } = Promise.withResolvers<void>();
      gate = promise;
      return () => {
        gate = null;
        resolve();
      };
    },
    async ready() {
      await store.upsertSpecification(spec);
      monitor.start();
    },
    async [Symbol.asyncDispose]() {
      await monitor.stop();
      await store.close();
    },
  };
}

async function eventually(test: () => boolean | Promise<boolean>) {
  for (let i = 0; i < 100 && !await test(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return await test();
}

Deno.test("JobsetMonitor: a triggered poll that finds no new commit logs that the evaluation was skipped, and why", async () => {
  await using fx = fakeSetup(specFor("https://example.invalid/guix.git"));
  await fx.ready();
  const evaluations = async () =>
    (await fx.store.listEvaluations({ specification: "polled", limit: 9 }))
      .length;
  assert.ok(await eventually(async () => await evaluations() === 1));
  assert.equal(fx.monitor.trigger("polled"), "polling");
  assert.ok(
    await eventually(() =>
      fx.lines.some((line) => line.startsWith("info evaluation skipped"))
    ),
    fx.lines.join("\n"),
  );
  const line = fx.lines.find((line) => line.includes("evaluation skipped"))!;
  assert.match(line, /spec=polled/);
  assert.match(line, /reason="no channel has a new commit"/);
  assert.match(line, /commits="guix=c0ffee000000"/);
  assert.equal(await evaluations(), 1);
});

Deno.test("JobsetMonitor: a trigger that comes during a poll polls again right after it", async () => {
  await using fx = fakeSetup(specFor("https://example.invalid/guix.git"));
  const release = fx.hold();
  await fx.ready();
  assert.ok(await eventually(() => fx.fetches() === 1));
  assert.equal(fx.monitor.trigger("polled"), "polling");
  release();
  // Not at the next period, 600 s away.
  assert.ok(await eventually(() => fx.fetches() === 2), "no second poll");
  assert.ok(
    await eventually(() =>
      fx.lines.some((line) => line.includes("evaluation skipped"))
    ),
  );
});

Deno.test("JobsetMonitor: triggering an inactive specification says it is skipped", async () => {
  await using fx = fakeSetup({
    ...specFor("https://example.invalid/guix.git"),
    isActive: false,
  });
  await fx.ready();
  await fx.monitor.refresh();
  assert.equal(fx.monitor.trigger("polled"), "inactive");
  assert.equal(fx.monitor.trigger("nope"), "unknown");
  assert.ok(
    fx.lines.some((line) =>
      line.startsWith("info evaluation skipped") &&
      line.includes('reason="specification inactive"')
    ),
    fx.lines.join("\n"),
  );
  assert.equal(fx.fetches(), 0);
});

gitTest(
  "JobsetMonitor: an evaluation killed at the timeout is evaluated again at the next poll (needs git)",
  async () => {
    await using farm = await setup();
    await commit(farm.repo, "first");
    const spec = specFor(`file://${farm.repo}`);
    await farm.store.upsertSpecification(spec);
    await writeScenario(farm.root, {
      evaluationHang: true,
      packages: [{ name: "p", version: "1" }],
    });
    // A small timeout on the real clock: the fake evaluator never ends.
    farm.runner.timeoutSeconds = 1;

    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = await Promise.race([
      farm.monitor.pollOnce(spec),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the evaluator was not killed")),
          30_000,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(hung.kind, "evaluated");
    if (hung.kind !== "evaluated") return;
    assert.equal(hung.evaluation.status, EvaluationStatus.failed);
    assert.match(
      await Deno.readTextFile(
        evaluationLogPath(farm.runner.stateDir, hung.evaluation.id),
      ),
      /evaluation timeout of 1 s/,
    );

    await writeScenario(farm.root, {
      packages: [{ name: "p", version: "1" }],
    });
    const again = await farm.monitor.pollOnce(spec);
    assert.equal(again.kind, "evaluated", "the same commit not evaluated");
    if (again.kind !== "evaluated") return;
    assert.equal(again.evaluation.status, EvaluationStatus.succeeded);
    assert.equal((await farm.monitor.pollOnce(spec)).kind, "unchanged");
  },
);

Deno.test("pollOnce(): the update rate counts the time that passed: a step of the wall clock back an hour does not stop the polls", async () => {
  const clock = new FakeClock();
  const spec = specFor("https://example.invalid/guix.git");
  await using fx = fakeSetup(spec, { clock, rateLimit: 2, rateWindow: 300 });
  await fx.store.upsertSpecification(spec);
  assert.equal((await fx.monitor.pollOnce(spec)).kind, "evaluated");
  assert.equal((await fx.monitor.pollOnce(spec)).kind, "unchanged");
  assert.equal((await fx.monitor.pollOnce(spec)).kind, "rate-limited");
  // The window passes; meanwhile NTP steps the wall clock back an hour.
  await clock.step(-3_600_000);
  await clock.advance(301_000);
  assert.equal((await fx.monitor.pollOnce(spec)).kind, "unchanged");
});
