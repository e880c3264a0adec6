import assert from "node:assert/strict";
import { systemClock } from "../../../lib/clock.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { GcRoots } from "../../../lib/guix/gc_roots.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { type Spawner, spawnProcess } from "../../../lib/process.ts";
import {
  abortStaleEvaluations,
  evaluationLogPath,
  recordFailedEvaluation,
  runEvaluation,
} from "../../../lib/server/evaluation_runner.ts";
import { removeLeftWorkDirs } from "../../../lib/server/evaluation_work.ts";
import { thisHost } from "../../../lib/server/evaluation_owner.ts";
import { EvaluationStatus, type Store } from "../../../lib/store/types.ts";
import { fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";
import { FakeClock } from "./_dispatch_fixture.ts";
import { GUIX } from "../../fake-guix/test_env.ts";
import { failingStore } from "../store/_failing_store.ts";
import { REGISTRATION_CHUNK_JOBS } from "../../../lib/store/chunked_registration.ts";

const SPEC = testSpecification("s", { priority: 3 });

/** A fake guix farm knowing SPEC, closed when the test's `await using` ends. */
async function setup(scenario: unknown, spawn: Spawner = spawnProcess) {
  const farm = await fakeGuixFarm(SPEC, scenario, {
    daemonName: "server",
    spawn,
  });
  return Object.assign(farm, { [Symbol.asyncDispose]: () => farm.close() });
}

/**
 * A scenario of `count` packages p0, p1, ...: past REGISTRATION_CHUNK_JOBS,
 * an evaluation whose builds are registered in more than one chunk.
 */
function numberedPackages(count: number) {
  return {
    packages: Array.from(
      { length: count },
      (_, i) => ({ name: `p${i}`, version: "1" }),
    ),
  };
}

/** GC roots below `directory` for the store of `farm`'s daemon. */
function gcRootsIn(farm: { daemon: { storeDir: string } }, directory: string) {
  return new GcRoots({
    directory,
    storeDir: farm.daemon.storeDir,
    clock: systemClock,
    logger: silentLogger,
  });
}

Deno.test("runEvaluation() evaluates several systems in parallel within the bound", async () => {
  let running = 0;
  let peak = 0;
  const counting: Spawner = (argv, options) => {
    const child = spawnProcess(argv, options);
    running++;
    peak = Math.max(peak, running);
    child.status.finally(() => running--);
    return child;
  };
  await using farm = await setup({
    evaluationSeconds: 0.5,
    packages: [{ name: "p", version: "1" }],
  }, counting);
  const systems = [
    "x86_64-linux",
    "i686-linux",
    "aarch64-linux",
    "armhf-linux",
  ];
  const outcome = await runEvaluation(
    { ...SPEC, systems },
    { ...farm.options, parallelism: 2 },
  );
  assert.equal(outcome.status, EvaluationStatus.succeeded);
  assert.equal(outcome.jobs, 4);
  assert.equal(outcome.created, 4);
  assert.equal(peak, 2);
});

Deno.test("runEvaluation() keeps the log, records checkouts and roots derivations", async () => {
  await using farm = await setup({ packages: [{ name: "p", version: "1" }] });
  const roots = gcRootsIn(farm, `${farm.root}/roots`);
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    gcRoots: roots,
  }, {
    checkouts: [{ channel: "guix", revision: "abc", directory: "/d" }],
    prelude: ";; fetched\n",
  });
  assert.equal(outcome.status, EvaluationStatus.succeeded);
  const log = await Deno.readTextFile(
    evaluationLogPath(farm.options.stateDir, outcome.id),
  );
  assert.match(log, /^;; fetched\n;; system x86_64-linux: exit 0, 1 jobs\n/);
  assert.match(log, /Updating channel 'guix'/);
  assert.deepEqual(await farm.store.getEvaluationCheckouts(outcome.id), [
    { channel: "guix", revision: "abc", directory: "/d" },
  ]);
  assert.deepEqual(await roots.list(), outcome.derivations);
});

Deno.test("runEvaluation() whose GC roots directory cannot be made ends failed with no build registered", async () => {
  await using farm = await setup({ packages: [{ name: "p", version: "1" }] });
  await Deno.writeTextFile(`${farm.root}/afile`, "");
  const roots = gcRootsIn(farm, `${farm.root}/afile/roots`);
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    gcRoots: roots,
  });
  assert.equal(outcome.status, EvaluationStatus.failed);
  assert.equal(
    (await farm.store.getEvaluation(outcome.id))?.status,
    EvaluationStatus.failed,
  );
  assert.deepEqual(await farm.store.countBuildsByStatus(), new Map());
  assert.match(
    await Deno.readTextFile(
      evaluationLogPath(farm.options.stateDir, outcome.id),
    ),
    /Cannot create GC roots directory ".*\/afile\/roots"/,
  );
});

Deno.test("runEvaluation() ends failed with the evaluator's stderr as log", async () => {
  await using farm = await setup({
    evaluationError: "error: package `foo' not found",
    packages: [],
  });
  const outcome = await runEvaluation(SPEC, farm.options);
  assert.equal(outcome.status, EvaluationStatus.failed);
  const evaluation = await farm.store.getEvaluation(outcome.id);
  assert.equal(evaluation?.status, EvaluationStatus.failed);
  assert.ok(evaluation!.evaltime > 0);
  assert.match(
    await Deno.readTextFile(
      evaluationLogPath(farm.options.stateDir, outcome.id),
    ),
    /package `foo' not found/,
  );
});

Deno.test("recordFailedEvaluation() and abortStaleEvaluations() never leave one in progress", async () => {
  await using farm = await setup({ packages: [] });
  const lines: string[] = [];
  const logger = createLogger({ sink: (line) => lines.push(line) });
  const failed = await recordFailedEvaluation(
    SPEC,
    { ...farm.options, logger },
    { checkouts: [], log: "cannot fetch\n" },
  );
  // The log line says where the reason is.
  const logPath = evaluationLogPath(farm.options.stateDir, failed.id);
  assert.ok(
    lines.some((line) =>
      line.includes("evaluation failed") && line.includes(logPath)
    ),
    lines.join("\n"),
  );
  assert.equal(Deno.readTextFileSync(logPath), "cannot fetch\n");
  assert.equal(
    (await farm.store.getEvaluation(failed.id))?.status,
    EvaluationStatus.failed,
  );
  const stale = await farm.store.addEvaluation("s", [], 1);
  assert.equal(
    await abortStaleEvaluations(
      farm.store,
      systemClock,
      silentLogger,
      farm.options.stateDir,
    ),
    1,
  );
  assert.equal(
    (await farm.store.getEvaluation(stale))?.status,
    EvaluationStatus.aborted,
  );
});

/** The pids of the live (not zombie) children of `pid`, from /proc. */
function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const fields = statFields(Number(entry.name));
    if (fields && fields[1] === String(pid) && fields[0] !== "Z") {
      found.push(Number(entry.name));
    }
  }
  return found;
}

/** Whether `pid` runs (exists and is no zombie). */
function alive(pid: number): boolean {
  const fields = statFields(pid);
  return fields !== null && fields[0] !== "Z";
}

/** State and parent pid of `pid` (fields 3 and 4 of its stat), or null. */
function statFields(pid: number): string[] | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ").slice(0, 2);
  } catch {
    return null;
  }
}

/** `promise`, or a rejection after `ms` of real time. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test("runEvaluation() kills a hung evaluator and its children at the timeout, and ends failed", async () => {
  await using farm = await setup({
    evaluationHang: true,
    packages: [{ name: "p", version: "1" }],
  });
  const clock = new FakeClock();
  const evaluators: number[] = [];
  const guix = new Guix({
    command: GUIX,
    env: farm.daemon.env,
    logger: silentLogger,
    clock,
    spawn(argv, options) {
      const child = spawnProcess(argv, options);
      evaluators.push(child.pid);
      // What it prints, read here too.
      const [forGuix, forTest] = child.stderr.tee();
      (async () => {
        const decoder = new TextDecoder();
        for await (const chunk of forTest) said += decoder.decode(chunk);
      })();
      return {
        pid: child.pid,
        stdout: child.stdout,
        stderr: forGuix,
        stdin: child.stdin,
        status: child.status,
        kill: (signal) => child.kill(signal),
      };
    },
  });
  let said = "";
  let hung: number[] = [];
  try {
    const running = runEvaluation(SPEC, {
      ...farm.options,
      guix,
      clock,
      timeoutSeconds: 600,
    });
    // The fake evaluator starts its child, says so on its stderr, then
    // both wait. Killed between the two, it would leave no word of the
    // child: the test waits for the word too.
    const saidSo = () => /evaluate: hanging with child \d+/.test(said);
    for (let i = 0; i < 300 && (hung.length === 0 || !saidSo()); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (evaluators.length > 0) hung = childrenOf(evaluators[0]);
    }
    assert.equal(hung.length, 1, "the evaluator started no child");
    assert.ok(saidSo(), "the evaluator's stderr names no child");
    await clock.advance(599_000);
    assert.ok(alive(evaluators[0]), "killed before the timeout");
    await clock.advance(1_000);
    const outcome = await within(running, 20_000, "runEvaluation()");
    assert.equal(outcome.status, EvaluationStatus.failed);
    assert.equal(outcome.timedOut, true);
    assert.equal(
      (await farm.store.getEvaluation(outcome.id))?.status,
      EvaluationStatus.failed,
    );
    const log = await Deno.readTextFile(
      evaluationLogPath(farm.options.stateDir, outcome.id),
    );
    assert.match(log, /evaluate: hanging with child \d+/);
    assert.match(
      log,
      /lorica: evaluator killed: still running after the evaluation timeout of 600 s \(--evaluation-timeout\)/,
    );
    assert.ok(!alive(evaluators[0]), "the evaluator still runs");
    // The group's kill is sent at once, but the child dies when next
    // scheduled: on a loaded machine, some milliseconds later.
    for (let i = 0; i < 100 && alive(hung[0]); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(!alive(hung[0]), "the evaluator's child still runs");
  } finally {
    for (const pid of [...evaluators, ...hung]) {
      if (alive(pid)) Deno.kill(pid, "SIGKILL");
    }
  }
});

Deno.test("runEvaluation() with an --evaluation-timeout past 2^31 ms (about 25 days) lets the evaluator run", async () => {
  // Timers of more than 2^31 - 1 ms fire at once: the evaluator was killed
  // as it started, and every evaluation failed.
  await using farm = await setup({
    evaluationSeconds: 0.5,
    packages: [{ name: "p", version: "1" }],
  });
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    guix: new Guix({
      command: GUIX,
      env: farm.daemon.env,
      logger: silentLogger,
      clock: systemClock,
    }),
    clock: systemClock,
    timeoutSeconds: 2_200_000,
  });
  assert.equal(outcome.timedOut, false);
  assert.equal(outcome.status, EvaluationStatus.succeeded);
  assert.equal(outcome.jobs, 1);
});

Deno.test("runEvaluation() of an evaluator printing over 64 MiB says the limit and the size reached", async () => {
  await using farm = await setup({
    evaluationOutputBytes: 80 << 20,
    packages: [{ name: "p", version: "1" }],
  });
  const outcome = await runEvaluation(SPEC, farm.options);
  assert.equal(outcome.status, EvaluationStatus.failed);
  assert.equal(outcome.timedOut, false);
  const log = await Deno.readTextFile(
    evaluationLogPath(farm.options.stateDir, outcome.id),
  );
  const match = log.match(
    /lorica: evaluator output too large: killed after (\d+) bytes, over the limit of 67108864 bytes \(64 MiB\)/,
  );
  assert.ok(match, log.slice(-2000));
  assert.ok(Number(match[1]) > 64 << 20);
  assert.doesNotMatch(log, /Cannot parse/);
});

Deno.test("runEvaluation() works in the state directory, and a server's start cleans up after dead processes only", async () => {
  const argvs: string[][] = [];
  await using farm = await setup(
    { packages: [{ name: "p", version: "1" }] },
    (argv, options) => {
      argvs.push(argv);
      return spawnProcess(argv, options);
    },
  );
  // A live server sharing the state directory, running an evaluation.
  const other = new Deno.Command("sleep", { args: ["60"] }).spawn();
  try {
    const { stateDir } = farm.options;
    const outcome = await runEvaluation(SPEC, farm.options);
    assert.equal(outcome.status, EvaluationStatus.succeeded);
    const work = `${stateDir}/evaluation-work`;
    assert.ok(
      argvs.flat().some((arg) => arg.includes(`${work}/${outcome.id}/`)),
      JSON.stringify(argvs),
    );
    assert.deepEqual([...Deno.readDirSync(work)], []);

    const live = await farm.store.addEvaluation("s", [], 2);
    const dead = await farm.store.addEvaluation("s", [], 3);
    const cutShort = await farm.store.addEvaluation("s", [], 4);
    const owned = (id: number, pid: number, started: string) => {
      Deno.mkdirSync(`${work}/${id}`, { recursive: true });
      Deno.writeTextFileSync(
        `${work}/${id}/owner.json`,
        JSON.stringify({ host: thisHost(), pid, started }),
      );
    };
    owned(live, other.pid, startTime(other.pid));
    // A pid in use again, by a process started later than the dead owner.
    owned(dead, other.pid, "1");
    Deno.mkdirSync(`${work}/${cutShort}`);

    const lines: string[] = [];
    const logger = createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    });
    assert.equal(
      await abortStaleEvaluations(farm.store, systemClock, logger, stateDir),
      2,
    );
    const status = async (id: number) =>
      (await farm.store.getEvaluation(id))?.status;
    assert.equal(await status(live), EvaluationStatus.started);
    assert.equal(await status(dead), EvaluationStatus.aborted);
    assert.equal(await status(cutShort), EvaluationStatus.aborted);
    assert.equal(await removeLeftWorkDirs(stateDir, logger), 2);
    assert.deepEqual(
      [...Deno.readDirSync(work)].map((entry) => entry.name),
      [String(live)],
    );
    assert.match(
      lines.join("\n"),
      /evaluation work directories removed .*count=2/,
    );
  } finally {
    other.kill();
    await other.status;
  }
});

/** Field 22 of /proc/PID/stat: when the process started. */
function startTime(pid: number): string {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
}

Deno.test("runEvaluation() whose builds the database refuses ends aborted, recorded once the database answers, so the commits are evaluated again", async () => {
  await using farm = await setup({ packages: [{ name: "p", version: "1" }] });
  // PostgreSQL restarting under the server: the registration fails, and
  // so does the first attempt to record how the evaluation ended.
  let refuse = { registerBuilds: 1, finishEvaluation: 1 };
  const store = failingStore(
    farm.store,
    (method) =>
      (method === "registerBuilds" || method === "finishEvaluation") &&
        refuse[method]-- > 0
        ? Object.assign(
          new Error("write CONNECTION_CLOSED 127.0.0.1:54471"),
          {
            code: "CONNECTION_CLOSED",
          },
        )
        : null,
  );
  const lines: string[] = [];
  const logger = createLogger({ sink: (line) => lines.push(line) });
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    store,
    logger,
  });
  assert.equal(outcome.status, EvaluationStatus.aborted);
  assert.equal(
    (await farm.store.getEvaluation(outcome.id))?.status,
    EvaluationStatus.aborted,
  );
  assert.deepEqual(await farm.store.queue({}, 10), []);
  const notRecorded = lines.filter((l) =>
    l.includes("evaluation status not recorded")
  );
  assert.equal(notRecorded.length, 1, lines.join("\n"));
  assert.match(notRecorded[0], /CONNECTION_CLOSED/);
  assert.ok(
    lines.some((l) =>
      l.includes("evaluation failed") &&
      l.includes(`Cannot register the builds of evaluation ${outcome.id}`)
    ),
    lines.join("\n"),
  );
  refuse = { registerBuilds: 0, finishEvaluation: 0 };
  const again = await runEvaluation(SPEC, { ...farm.options, store });
  assert.equal(again.status, EvaluationStatus.succeeded);
  assert.equal((await farm.store.queue({}, 10)).length, 1);
});

Deno.test("runEvaluation() registers in chunks: a database failing between two leaves the first, and the next evaluation registers the rest", async () => {
  const count = REGISTRATION_CHUNK_JOBS + 1;
  await using farm = await setup(numberedPackages(count));
  let registrations = 0;
  let failSecond = true;
  const store = failingStore(
    farm.store,
    (method) =>
      method === "registerBuilds" && ++registrations === 2 && failSecond
        ? new Error("write CONNECTION_CLOSED 127.0.0.1:54471")
        : null,
  );
  const first = await runEvaluation(SPEC, { ...farm.options, store });
  assert.equal(first.status, EvaluationStatus.aborted);
  assert.equal(registrations, 2);
  // The first chunk's builds stay queued, to be built.
  assert.equal(
    (await farm.store.queue({}, count)).length,
    REGISTRATION_CHUNK_JOBS,
  );

  failSecond = false;
  registrations = 0;
  const again = await runEvaluation(SPEC, { ...farm.options, store });
  assert.equal(again.status, EvaluationStatus.succeeded);
  assert.equal(registrations, 2);
  assert.equal(again.jobs, count);
  assert.equal(again.created, 1);
  assert.equal((await farm.store.listJobs(again.id)).length, count);
});

Deno.test("runEvaluation() canceled between two chunks of its registration registers no more and logs the cancel, not an abort elsewhere", async () => {
  const count = REGISTRATION_CHUNK_JOBS + 1;
  await using farm = await setup(numberedPackages(count));
  const lines: string[] = [];
  const logger = createLogger({ sink: (line) => lines.push(line) });
  let registrations = 0;
  const store: Store = {
    ...farm.store,
    // An administrator cancels it once its first chunk is in.
    registerBuilds: async (id, jobs, options) => {
      if (++registrations === 2) await farm.store.cancelEvaluation(id, 5);
      return await farm.store.registerBuilds(id, jobs, options);
    },
  };
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    store,
    logger,
  });
  assert.equal(outcome.status, EvaluationStatus.aborted);
  assert.equal(registrations, 2);
  assert.deepEqual(await farm.store.queue({}, count), []);
  assert.equal(
    (await farm.store.listJobs(outcome.id)).length,
    REGISTRATION_CHUNK_JOBS,
  );
  assert.ok(
    lines.some((l) => / info evaluation canceled /.test(l)),
    lines.join("\n"),
  );
  assert.doesNotMatch(lines.join("\n"), /aborted elsewhere|ERROR/i);
});

Deno.test("runEvaluation() stopped while a chunk of its registration is written ends aborted after that chunk, logs how far it got, and the next evaluation registers the rest", async () => {
  const count = REGISTRATION_CHUNK_JOBS + 1;
  await using farm = await setup(numberedPackages(count));
  const lines: string[] = [];
  const logger = createLogger({ sink: (line) => lines.push(line) });
  const stop = new AbortController();
  let registrations = 0;
  const store: Store = {
    ...farm.store,
    registerBuilds(id, jobs, options) {
      registrations++;
      const writing = farm.store.registerBuilds(id, jobs, options);
      // systemd's SIGTERM, while the first chunk is being written.
      stop.abort();
      return writing;
    },
  };
  const outcome = await runEvaluation(SPEC, {
    ...farm.options,
    store,
    logger,
    signal: stop.signal,
  });
  assert.equal(outcome.status, EvaluationStatus.aborted);
  assert.equal(outcome.jobs, count);
  assert.equal(outcome.created, REGISTRATION_CHUNK_JOBS);
  assert.equal(registrations, 1);
  assert.equal(
    (await farm.store.getEvaluation(outcome.id))?.status,
    EvaluationStatus.aborted,
  );
  // Interrupted, not canceled: the next poll evaluates its commits again.
  assert.equal(await farm.store.evaluationCanceled(outcome.id), false);
  // The first chunk's builds stay queued, to be built.
  assert.equal(
    (await farm.store.queue({}, count)).length,
    REGISTRATION_CHUNK_JOBS,
  );
  const stopped = lines.filter((l) =>
    l.includes(" evaluation registration stopped ")
  );
  assert.equal(stopped.length, 1, lines.join("\n"));
  assert.match(
    stopped[0],
    new RegExp(
      `^\\S+ warn evaluation registration stopped evaluation=${outcome.id} ` +
        `spec=s status=${EvaluationStatus.aborted} ` +
        `registered=${REGISTRATION_CHUNK_JOBS} jobs=${count} ` +
        `created=${REGISTRATION_CHUNK_JOBS} `,
    ),
  );
  assert.doesNotMatch(lines.join("\n"), / error |evaluation failed/);
  assert.match(
    await Deno.readTextFile(
      evaluationLogPath(farm.options.stateDir, outcome.id),
    ),
    new RegExp(
      `lorica: Registration of the builds of evaluation ${outcome.id} ` +
        `stopped by a server stop after ${REGISTRATION_CHUNK_JOBS} of ` +
        `${count} jobs\n$`,
    ),
  );

  // The next start evaluates the same commits again.
  const again = await runEvaluation(SPEC, farm.options);
  assert.equal(again.status, EvaluationStatus.succeeded);
  assert.equal(again.jobs, count);
  assert.equal(again.created, 1);
  assert.equal((await farm.store.listJobs(again.id)).length, count);
  assert.equal((await farm.store.queue({}, count + 1)).length, count);
});
