// The Store contract: one suite, through the interface only, for every backend.

import assert from "node:assert/strict";
import { DELETE_CHUNK } from "../../../lib/store/sql_catalog.ts";
import {
  BuildStatus,
  EvaluationStatus,
  StoreError,
  Weather,
} from "../../../lib/store/types.ts";
import type {
  BuildSearch,
  NewJob,
  Specification,
  Store,
  Worker,
} from "../../../lib/store/types.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";

/**
 * The worker row of a local-mode server "local@box" whose holder (the
 * process that claimed the name) is `address`.
 */
export function holderRow(address: string): Worker {
  return {
    name: "local@box",
    address,
    machine: "box",
    systems: ["x86_64-linux"],
    lastSeen: 1,
    timeoutSeconds: 120,
  };
}

/** A specification named `name` with the given priority. */
export function specification(name: string, priority = 9): Specification {
  return {
    name,
    build: { type: "packages", params: ["hello"] },
    channels: [{
      name: "guix",
      url: "https://example.invalid/guix.git",
      branch: "master",
      commit: null,
      introduction: { commit: "9edb3f6", signer: "BBB0 2DDF" },
    }],
    buildOutputs: [{
      job: "hello.*",
      type: "archive",
      output: "out",
      path: "",
    }],
    notifications: [{ type: "email", to: "ci@example.invalid" }],
    period: 300,
    priority,
    systems: ["x86_64-linux", "aarch64-linux"],
    isActive: true,
  };
}

/** A job whose derivation and output are derived from `drvName`. */
export function job(
  name: string,
  options: {
    drv?: string;
    system?: string;
    inputs?: string[];
    outputs?: string[];
  } = {},
): NewJob {
  const base = options.drv ?? name;
  return {
    name,
    derivation: drv(base),
    system: options.system ?? "x86_64-linux",
    nixName: `${base}-1.0`,
    outputs: (options.outputs ?? [base]).map((out, index) => ({
      name: index === 0 ? "out" : `out${index}`,
      path: `/gnu/store/${HASH}-${out}`,
    })),
    inputs: (options.inputs ?? []).map(drv),
    timeout: 72000,
    maxSilent: 3600,
  };
}

/** The derivation file name of {@link job}'s `drv`. */
export function drv(base: string): string {
  return `/gnu/store/${HASH}-${base}.drv`;
}

/**
 * Registers Deno tests named `[name] ...` that exercise every Store method;
 * `open` must return a fresh, empty store each call; `ignore` skips them
 * all (a backend that is not available), and `needs` ends their names with
 * the reason, such as " (skipped: no server)".
 */
export function storeContract(
  name: string,
  open: () => Promise<Store> | Store,
  options: { ignore?: boolean; needs?: string } = {},
): void {
  function test(title: string, fn: (store: Store) => Promise<void>) {
    Deno.test({
      name: `[${name}] ${title}${options.needs ?? ""}`,
      ignore: options.ignore ?? false,
      async fn() {
        const store = await open();
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      },
    });
  }

  async function evaluation(
    store: Store,
    spec = "guix",
    now = 1000,
    priority = 9,
  ): Promise<number> {
    if (await store.getSpecification(spec) === null) {
      await store.upsertSpecification(specification(spec, priority));
    }
    return await store.addEvaluation(spec, [], now);
  }

  /**
   * Registers `jobs` in evaluation `id` at `now`, at the priority (9) of
   * {@link specification}'s default: how most tests here queue builds.
   */
  function register(store: Store, id: number, jobs: NewJob[], now: number) {
    return store.registerBuilds(id, jobs, { priority: 9, now });
  }

  async function status(store: Store, base: string) {
    return (await store.getBuildByDerivation(drv(base)))?.status;
  }

  // Specifications.

  test("upsertSpecification() round-trips and updates every field", async (store) => {
    assert.equal(await store.getSpecification("guix"), null);
    const spec = specification("guix");
    await store.upsertSpecification(spec);
    assert.deepEqual(await store.getSpecification("guix"), spec);

    const changed: Specification = {
      ...spec,
      build: { type: "all", params: [] },
      channels: [],
      priority: 2,
      period: 0,
      systems: ["i686-linux"],
      isActive: false,
    };
    await store.upsertSpecification(changed);
    assert.deepEqual(await store.getSpecification("guix"), changed);
  });

  test("listSpecifications() lists every specification by name", async (store) => {
    await store.upsertSpecification(specification("zeta"));
    await store.upsertSpecification(specification("alpha"));
    assert.deepEqual(
      (await store.listSpecifications()).map((spec) => spec.name),
      ["alpha", "zeta"],
    );
  });

  // Evaluations.

  test("addEvaluation() starts an evaluation with its checkouts", async (store) => {
    await store.upsertSpecification(specification("guix"));
    const checkouts = [
      { channel: "guix", revision: "abc123", directory: "/gnu/store/x-guix" },
      { channel: "extra", revision: "def456", directory: "/gnu/store/y-ex" },
    ];
    const id = await store.addEvaluation("guix", checkouts, 1234);
    assert.deepEqual(await store.getEvaluation(id), {
      id,
      specification: "guix",
      status: EvaluationStatus.started,
      timestamp: 1234,
      checkouttime: 1234,
      evaltime: 0,
    });
    assert.deepEqual(await store.getEvaluationCheckouts(id), checkouts);
    assert.deepEqual(await store.getEvaluationCheckouts(id + 100), []);
    assert.equal(await store.getEvaluation(id + 100), null);
  });

  test("addEvaluation() rejects an unknown specification", async (store) => {
    await assert.rejects(
      store.addEvaluation("nope", [], 1),
      (error: unknown) =>
        error instanceof StoreError && error.code === "not-found" &&
        error.message.includes('"nope"'),
    );
  });

  test("setEvaluationStatus() records the end time of a finished evaluation", async (store) => {
    const id = await evaluation(store);
    await store.setEvaluationStatus(id, EvaluationStatus.failed, 2000);
    const found = await store.getEvaluation(id);
    assert.equal(found?.status, EvaluationStatus.failed);
    assert.equal(found?.evaltime, 2000);
    await assert.rejects(
      store.setEvaluationStatus(id + 7, EvaluationStatus.succeeded, 1),
      (error: unknown) =>
        error instanceof StoreError && error.message.includes(`${id + 7}`),
    );
  });

  test("finishEvaluation() records the end of a started evaluation only", async (store) => {
    const id = await evaluation(store);
    assert.equal(
      await store.finishEvaluation(id, EvaluationStatus.aborted, 2000),
      true,
    );
    // Aborted by another server: a late success does not turn it back.
    assert.equal(
      await store.finishEvaluation(id, EvaluationStatus.succeeded, 3000),
      false,
    );
    const found = await store.getEvaluation(id);
    assert.equal(found?.status, EvaluationStatus.aborted);
    assert.equal(found?.evaltime, 2000);
    await assert.rejects(
      store.finishEvaluation(id + 7, EvaluationStatus.succeeded, 1),
      (error: unknown) =>
        error instanceof StoreError && error.code === "not-found" &&
        error.message.includes(`${id + 7}`),
    );
  });

  test("addEvaluation() records its owner, its first heartbeat at its own time, and the heartbeat renewals, for listRunningEvaluations()", async (store) => {
    const owner = { host: "build-a", pid: 4242, started: "987654" };
    await evaluation(store);
    const owned = await store.addEvaluation("guix", [], 1010, { owner });
    const ended = await store.addEvaluation("guix", [], 1020, { owner });
    // What other servers judge it by until a renewal: an older heartbeat
    // would have it taken for stale, and aborted, too early.
    assert.deepEqual((await store.listRunningEvaluations()).slice(1), [
      { id: owned, specification: "guix", owner, heartbeat: 1010 },
      { id: ended, specification: "guix", owner, heartbeat: 1020 },
    ]);
    await store.finishEvaluation(ended, EvaluationStatus.failed, 1021);
    assert.equal(await store.renewEvaluationHeartbeat(owned, 1030), true);
    assert.equal(await store.renewEvaluationHeartbeat(ended, 1030), false);
    const running = await store.listRunningEvaluations();
    assert.deepEqual(running.slice(1), [
      { id: owned, specification: "guix", owner, heartbeat: 1030 },
    ]);
    assert.equal(running[0].owner, null);
    assert.equal(running[0].heartbeat, null);
    // Kept once the evaluation ended: it tells where its log is.
    assert.deepEqual(await store.evaluationOwner(ended), owner);
    assert.equal(await store.evaluationOwner(running[0].id), null);
    assert.equal(await store.evaluationOwner(ended + 99), null);
    // The Cuirass-shaped record does not show them.
    assert.deepEqual(Object.keys((await store.getEvaluation(owned))!).sort(), [
      "checkouttime",
      "evaltime",
      "id",
      "specification",
      "status",
      "timestamp",
    ]);
  });

  test("abortStaleEvaluation() aborts only if no renewal came since the heartbeat seen", async (store) => {
    const owner = { host: "build-a", pid: 4242, started: "987654" };
    await evaluation(store);
    const id = await store.addEvaluation("guix", [], 1000, { owner });
    await store.renewEvaluationHeartbeat(id, 1030);
    assert.equal(
      await store.abortStaleEvaluation(id, { heartbeat: 1000, now: 1200 }),
      false,
    );
    assert.equal(
      (await store.getEvaluation(id))?.status,
      EvaluationStatus.started,
    );
    assert.equal(
      await store.abortStaleEvaluation(id, { heartbeat: 1030, now: 1200 }),
      true,
    );
    const found = await store.getEvaluation(id);
    assert.equal(found?.status, EvaluationStatus.aborted);
    assert.equal(found?.evaltime, 1200);
    // Without an owner, its heartbeat is null.
    const legacy = await evaluation(store);
    assert.equal(
      await store.abortStaleEvaluation(legacy, { heartbeat: null, now: 1300 }),
      true,
    );
  });

  test("registerBuilds({whileStarted}) refuses an evaluation no longer started, and renews its heartbeat", async (store) => {
    const owner = { host: "build-a", pid: 4242, started: "987654" };
    await evaluation(store);
    const id = await store.addEvaluation("guix", [], 1000, { owner });
    await store.registerBuilds(id, [job("a")], {
      priority: 9,
      now: 1050,
      whileStarted: true,
    });
    const [row] = (await store.listRunningEvaluations()).filter((e) =>
      e.id === id
    );
    assert.equal(row.heartbeat, 1050);
    await store.abortStaleEvaluation(id, { heartbeat: 1050, now: 1200 });
    await assert.rejects(
      store.registerBuilds(id, [job("b")], {
        priority: 9,
        now: 1300,
        whileStarted: true,
      }),
      (error: unknown) =>
        error instanceof StoreError && error.code === "evaluation-ended" &&
        error.message.includes(`${id}`),
    );
    assert.equal(await store.getBuildByDerivation(drv("b")), null);
    await assert.rejects(
      store.registerBuilds(id + 7, [], {
        priority: 9,
        now: 1300,
        whileStarted: true,
      }),
      (error: unknown) =>
        error instanceof StoreError && error.code === "not-found",
    );
  });

  test("registerBuilds({whileStarted, heartbeatNow}) commits the heartbeat read as it ends, and no later renewal moves it back", async (store) => {
    const owner = { host: "build-a", pid: 4242, started: "987654" };
    await evaluation(store);
    const id = await store.addEvaluation("guix", [], 1000, { owner });
    const reads: number[] = [];
    await store.registerBuilds(id, [job("a")], {
      priority: 9,
      now: 1050,
      whileStarted: true,
      heartbeatNow: () => {
        reads.push(1290);
        return 1290;
      },
    });
    assert.deepEqual(reads, [1290]);
    const heartbeat = async () =>
      (await store.listRunningEvaluations()).find((e) => e.id === id)
        ?.heartbeat;
    assert.equal(await heartbeat(), 1290);
    // Issued during the registration, landing after it: still started,
    // the newer heartbeat kept.
    assert.equal(await store.renewEvaluationHeartbeat(id, 1080), true);
    assert.equal(await heartbeat(), 1290);
    assert.equal(await store.renewEvaluationHeartbeat(id, 1320), true);
    assert.equal(await heartbeat(), 1320);
  });

  test("listEvaluations() lists newest first, by specification, limited", async (store) => {
    const a1 = await evaluation(store, "a");
    const b1 = await evaluation(store, "b");
    const a2 = await evaluation(store, "a");
    const ids = async (options: { specification?: string; limit: number }) =>
      (await store.listEvaluations(options)).map((e) => e.id);
    assert.deepEqual(await ids({ limit: 10 }), [a2, b1, a1]);
    assert.deepEqual(await ids({ specification: "a", limit: 10 }), [a2, a1]);
    assert.deepEqual(await ids({ limit: 1 }), [a2]);
    assert.deepEqual(await ids({ specification: "c", limit: 10 }), []);
  });

  // Registration.

  test("registerBuilds() creates scheduled builds with every field", async (store) => {
    // Every value its own, none that of the specification (priority 7)
    // nor an evaluation's default (timeout 72000, max silent 3600): a
    // store writing one of those instead of what it is given would pass.
    const id = await evaluation(store, "guix", 1000, 7);
    const hello = {
      ...job("hello.x86_64-linux", {
        drv: "hello",
        outputs: ["hello", "hello-doc"],
      }),
      timeout: 5400,
      maxSilent: 600,
    };
    const result = await store.registerBuilds(id, [hello], {
      priority: 3,
      now: 1500,
    });
    assert.deepEqual(result, { created: 1, known: 0, blocked: 0 });

    const build = await store.getBuildByDerivation(hello.derivation);
    assert.ok(build);
    assert.deepEqual(build, {
      id: build.id,
      derivation: hello.derivation,
      evaluation: id,
      specification: "guix",
      jobName: "hello.x86_64-linux",
      system: "x86_64-linux",
      worker: null,
      nixName: "hello-1.0",
      log: "",
      status: BuildStatus.scheduled,
      lastStatus: null,
      weather: Weather.unknown,
      priority: 3,
      maxSilent: 600,
      timeout: 5400,
      timestamp: 1500,
      starttime: 0,
      stoptime: 0,
      outputs: hello.outputs,
      products: [],
    });
    assert.deepEqual(await store.getBuild(build.id), build);
    assert.equal(await store.getBuild(build.id + 1000), null);
    assert.equal(await store.getBuildByDerivation(drv("missing")), null);
  });

  test("registerBuilds() gives one build to two jobs with one derivation and is idempotent (C18)", async (store) => {
    const id = await evaluation(store);
    const jobs = [
      job("hello", { drv: "hello" }),
      job("hello-alias", { drv: "hello" }),
    ];
    const options = { priority: 9, now: 1000 };
    assert.deepEqual(await store.registerBuilds(id, jobs, options), {
      created: 1,
      known: 1,
      blocked: 0,
    });
    assert.deepEqual(await store.registerBuilds(id, jobs, options), {
      created: 0,
      known: 2,
      blocked: 0,
    });
    assert.deepEqual(await store.countBuildsByStatus(), new Map([[-2, 1]]));
    const build = await store.getBuildByDerivation(drv("hello"));
    assert.equal(build?.jobName, "hello");
    assert.deepEqual(
      (await store.queue({ evaluation: id }, 10)).map((b) => b.id),
      [build?.id],
    );
  });

  test("registerBuilds() dedups by output path across evaluations", async (store) => {
    const first = await evaluation(store);
    await register(store, first, [job("hello")], 1000);
    const second = await evaluation(store);
    // Another derivation with the same output: no new build, yet the new
    // evaluation's job points at the old build.
    const same = job("hello", { drv: "hello-other", outputs: ["hello"] });
    // A derivation with one new output is a new build.
    const partly = job("partly", { outputs: ["hello", "partly"] });
    assert.deepEqual(
      await register(store, second, [same, partly], 2000),
      { created: 1, known: 1, blocked: 0 },
    );
    assert.equal(await store.getBuildByDerivation(same.derivation), null);
    const old = await store.getBuildByDerivation(drv("hello"));
    const ids = (await store.queue({ evaluation: second }, 10)).map((b) =>
      b.derivation
    );
    assert.deepEqual(ids.sort(), [drv("hello"), drv("partly")].sort());
    assert.equal(old?.evaluation, first);
  });

  test("registerBuilds() links dependencies within a batch and to earlier evaluations", async (store) => {
    const first = await evaluation(store);
    await register(store, first, [job("glibc")], 1000);
    const second = await evaluation(store);
    await register(store, second, [
      job("hello", { inputs: ["gcc", "glibc", "not-a-build"] }),
      job("gcc", { inputs: ["glibc"] }),
    ], 2000);
    const id = async (base: string) =>
      (await store.getBuildByDerivation(drv(base)))!.id;
    assert.deepEqual(
      await store.buildDependencies(await id("hello")),
      [await id("glibc"), await id("gcc")].sort((a, b) => a - b),
    );
    assert.deepEqual(await store.buildDependencies(await id("gcc")), [
      await id("glibc"),
    ]);
    assert.deepEqual(await store.buildDependencies(await id("glibc")), []);
  });

  test("registerBuilds() counts as pending each distinct input build that has not succeeded", async (store) => {
    const first = await evaluation(store);
    await register(store, first, [
      job("done"),
      job("waiting"),
      job("broken"),
    ], 1);
    await store.completeBuild(drv("done"), BuildStatus.succeeded, { now: 2 });
    await store.completeBuild(drv("broken"), BuildStatus.failed, { now: 2 });
    const second = await evaluation(store);
    const registered = await register(store, second, [
      // Duplicates, itself and a non-build do not count.
      job("ready", { inputs: ["done", "done", "ready", "not-a-build"] }),
      job("blocked", { inputs: ["done", "waiting", "sibling"] }),
      job("sibling"),
      job("doomed", { inputs: ["broken"] }),
      job("doomed-too", { inputs: ["doomed"] }),
    ], 10);
    assert.equal(await status(store, "doomed"), BuildStatus.failedDependency);
    assert.equal(
      await status(store, "doomed-too"),
      BuildStatus.failedDependency,
    );
    // Counted for the evaluation's summary (it said blocked=0).
    assert.deepEqual(registered, { created: 5, known: 0, blocked: 2 });
    const popped: string[] = [];
    for (;;) {
      const build = await store.popBuild("w", ["x86_64-linux"], 11);
      if (build === null) break;
      popped.push(build.derivation);
    }
    assert.deepEqual(
      popped.sort(),
      [drv("ready"), drv("sibling"), drv("waiting")].sort(),
    );
    await store.completeBuild(drv("waiting"), BuildStatus.succeeded, {
      worker: "w",
      now: 12,
    });
    assert.equal(await store.popBuild("w2", ["x86_64-linux"], 13), null);
    await store.completeBuild(drv("sibling"), BuildStatus.succeeded, {
      worker: "w",
      now: 14,
    });
    assert.equal(
      (await store.popBuild("w2", ["x86_64-linux"], 15))?.derivation,
      drv("blocked"),
    );
  });

  test("registerBuilds() fails a new build with a failed input at once (C05), stopped at the registration's time", async (store) => {
    const first = await evaluation(store);
    await register(store, first, [job("broken")], 1);
    await store.completeBuild(drv("broken"), BuildStatus.failed, { now: 2 });
    const second = await evaluation(store);
    await register(store, second, [
      job("doomed", { inputs: ["broken"] }),
      job("doomed-too", { inputs: ["doomed"] }),
    ], 10);
    // As completeBuild() dates the dependents a failure fails.
    for (const name of ["doomed", "doomed-too"]) {
      const build = await store.getBuildByDerivation(drv(name));
      assert.equal(build?.status, BuildStatus.failedDependency, name);
      assert.equal(build?.starttime, 10, name);
      assert.equal(build?.stoptime, 10, name);
    }
  });

  test("registerBuilds() rejects an unknown evaluation, naming it", async (store) => {
    await assert.rejects(
      store.registerBuilds(42, [job("hello")], { priority: 0, now: 1 }),
      (error: unknown) =>
        error instanceof StoreError && error.value === 42 &&
        error.message.includes(drv("hello")) &&
        error.message.includes("42"),
    );
    assert.equal(await store.getBuildByDerivation(drv("hello")), null);
  });

  // Dispatch.

  test("popBuild() takes the best build across all systems (C04)", async (store) => {
    const id = await evaluation(store);
    await store.registerBuilds(id, [
      job("x-late", { system: "x86_64-linux" }),
    ], { priority: 5, now: 300 });
    await store.registerBuilds(id, [
      job("arm-early", { system: "aarch64-linux" }),
      job("arm-early2", { system: "aarch64-linux" }),
    ], { priority: 5, now: 100 });
    await store.registerBuilds(id, [
      job("x-urgent", { system: "x86_64-linux" }),
    ], { priority: 1, now: 900 });
    await store.registerBuilds(id, [
      job("other-system", { system: "riscv64-linux" }),
    ], { priority: 0, now: 1 });

    const systems = ["x86_64-linux", "aarch64-linux"];
    const order: string[] = [];
    for (;;) {
      const build = await store.popBuild("w1", systems, 5000);
      if (build === null) break;
      assert.equal(build.status, BuildStatus.submitted);
      assert.equal(build.worker, "w1");
      assert.equal(build.starttime, 5000);
      order.push(build.jobName);
    }
    assert.deepEqual(order, ["x-urgent", "arm-early", "arm-early2", "x-late"]);
    assert.equal(await status(store, "other-system"), BuildStatus.scheduled);
    assert.equal(await store.popBuild("w1", [], 5000), null);
  });

  test("popBuild() breaks ties by lowest id", async (store) => {
    const id = await evaluation(store);
    await store.registerBuilds(id, [job("b"), job("a"), job("c")], {
      priority: 4,
      now: 100,
    });
    const names = [];
    for (let i = 0; i < 3; i++) {
      names.push((await store.popBuild("w", ["x86_64-linux"], 1))?.jobName);
    }
    assert.deepEqual(names, ["b", "a", "c"]);
  });

  test("popBuild() waits until every dependency succeeded", async (store) => {
    const id = await evaluation(store);
    await store.registerBuilds(id, [
      job("lib", { system: "aarch64-linux" }),
      job("app", { inputs: ["lib"] }),
    ], { priority: 0, now: 100 });
    await register(store, id, [job("later")], 900);

    const first = await store.popBuild("w", ["x86_64-linux"], 1000);
    assert.equal(first?.jobName, "later");
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 1000), null);

    const lib = await store.popBuild("arm", ["aarch64-linux"], 1000);
    assert.equal(lib?.jobName, "lib");
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 1000), null);
    await store.completeBuild(drv("lib"), BuildStatus.succeeded, {
      worker: "arm",
      now: 1100,
    });
    assert.equal(
      (await store.popBuild("w", ["x86_64-linux"], 1200))?.jobName,
      "app",
    );
  });

  test("popBuild() never hands one build to two concurrent callers", async (store) => {
    const id = await evaluation(store);
    const jobs = Array.from({ length: 20 }, (_, i) => job(`j${i}`));
    await store.registerBuilds(id, jobs, { priority: 9, now: 1 });
    const popped = await Promise.all(
      Array.from(
        { length: 30 },
        (_, i) => store.popBuild(`w${i % 3}`, ["x86_64-linux"], 2),
      ),
    );
    const ids = popped.filter((b) => b !== null).map((b) => b!.id);
    assert.equal(ids.length, 20);
    assert.equal(new Set(ids).size, 20);
  });

  test("popBuilds() gives earlier requests earlier builds, across systems, null when none is left", async (store) => {
    const id = await evaluation(store);
    await store.registerBuilds(id, [
      job("x-1"),
      job("x-2"),
      job("x-3"),
    ], { priority: 5, now: 100 });
    await store.registerBuilds(id, [
      job("arm-1", { system: "aarch64-linux" }),
      job("arm-2", { system: "aarch64-linux" }),
    ], { priority: 5, now: 50 });
    await store.registerBuilds(id, [
      job("x-blocked", { inputs: ["x-1"] }),
    ], { priority: 0, now: 10 });

    const both = ["x86_64-linux", "aarch64-linux"];
    const builds = await store.popBuilds([
      { worker: "a", systems: both },
      { worker: "x", systems: ["x86_64-linux"] },
      { worker: "b", systems: [...both].reverse() },
      { worker: "c", systems: both },
      { worker: "d", systems: both },
      { worker: "e", systems: both },
    ], 700);
    assert.deepEqual(builds.map((b) => b?.jobName ?? null), [
      // One walk for a, b, c, d and e (the same systems in any order),
      // then one for x, which gets what is left.
      "arm-1",
      null,
      "arm-2",
      "x-1",
      "x-2",
      "x-3",
    ]);
    for (const [i, worker] of ["a", "b", "c"].entries()) {
      const build = builds[[0, 2, 3][i]]!;
      assert.equal(build.status, BuildStatus.submitted);
      assert.equal(build.worker, worker);
      assert.equal(build.starttime, 700);
      assert.equal(
        (await store.getBuildByDerivation(build.derivation))?.worker,
        worker,
      );
    }
    assert.deepEqual(builds[3]?.outputs, job("x-1").outputs);
    assert.equal(await status(store, "x-blocked"), BuildStatus.scheduled);
    assert.deepEqual(await store.popBuilds([], 700), []);
  });

  test("popBuilds() never hands one build to two concurrent batches", async (store) => {
    const id = await evaluation(store);
    const jobs = Array.from({ length: 20 }, (_, i) => job(`j${i}`));
    await store.registerBuilds(id, jobs, { priority: 9, now: 1 });
    const batches = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        store.popBuilds(
          Array.from({ length: 5 }, (_, j) => ({
            worker: `w${i}-${j}`,
            systems: ["x86_64-linux"],
          })),
          2,
        )),
    );
    const ids = batches.flat().filter((b) => b !== null).map((b) => b!.id);
    assert.equal(ids.length, 20);
    assert.equal(new Set(ids).size, 20);
  });

  test("popBuilds() without outputs hands out the same builds, their outputs left empty", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [
      job("o1", { outputs: ["o1", "o1-doc"] }),
      job("o2"),
    ], 1);
    const request = { worker: "w", systems: ["x86_64-linux"] };
    const [bare] = await store.popBuilds([request], 2, {
      withoutOutputs: true,
    });
    const [whole] = await store.popBuilds([request], 2);
    // As stored, products aside (a pop does not read them).
    const stored = async (base: string) => {
      const { products: _, ...build } = (await store.getBuildByDerivation(
        drv(base),
      ))!;
      return build;
    };
    assert.equal(bare?.derivation, drv("o1"));
    assert.deepEqual(bare, { ...await stored("o1"), outputs: [] });
    assert.equal((await stored("o1")).outputs.length, 2);
    assert.deepEqual(whole, await stored("o2"), "with outputs by default");
  });

  test("popBuilds() with a holder address takes builds only while the worker's row has that address", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("h1"), job("h2"), job("h3")], 1);
    const request = { worker: "local@box", systems: ["x86_64-linux"] };
    const pop = (holderAddress: string) =>
      store.popBuilds([request, request], 2, { holderAddress });
    // No row: nothing.
    assert.deepEqual(await pop("pid=1"), [null, null]);
    await store.upsertWorker(holderRow("pid=1"));
    assert.deepEqual(
      (await pop("pid=1")).map((b) => b?.worker ?? null),
      ["local@box", "local@box"],
    );
    // Taken over by another holder: nothing, the last build left queued.
    await store.upsertWorker(holderRow("pid=2"));
    assert.deepEqual(await pop("pid=1"), [null, null]);
    assert.equal(await status(store, "h3"), BuildStatus.scheduled);
    await assert.rejects(
      store.popBuilds([request, { ...request, worker: "w2" }], 2, {
        holderAddress: "pid=2",
      }),
      /holder address "pid=2".*"local@box", "w2"/,
    );
    assert.equal(await status(store, "h3"), BuildStatus.scheduled);
  });

  test("markStarted(), completeBuild() and requeueBuild() with a holder address change a build only while the worker's row has that address", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("s1"), job("s2"), job("s3")], 1);
    await store.upsertWorker(holderRow("pid=1"));
    const request = { worker: "local@box", systems: ["x86_64-linux"] };
    const taken = await store.popBuilds([request, request, request], 2, {
      holderAddress: "pid=1",
    });
    const [s1, s2, s3] = taken.map((build) => build!.derivation);
    const under = (address: string) => ({ holderAddress: address });
    const worker = "local@box";
    const build = (derivation: string) =>
      store.getBuildByDerivation(derivation);

    // The claim stands: each write is made.
    assert.equal(
      await store.markStarted(s1, worker, "/log/s1", 3, under("pid=1")),
      true,
    );
    assert.equal(
      (await store.completeBuild(s1, BuildStatus.succeeded, {
        worker,
        now: 4,
        ...under("pid=1"),
      })).changed,
      true,
    );
    assert.equal(
      await store.requeueBuild(s2, 4, { worker, ...under("pid=1") }),
      true,
    );
    assert.equal((await build(s1))?.status, BuildStatus.succeeded);
    assert.equal((await build(s2))?.status, BuildStatus.scheduled);

    // Another server claimed the name: the old claim's writes change
    // nothing, whatever the build's holder name says.
    await store.upsertWorker(holderRow("pid=2"));
    assert.equal(
      await store.markStarted(s3, worker, "/log/old", 5, under("pid=1")),
      false,
    );
    assert.deepEqual(
      await store.completeBuild(s3, BuildStatus.failed, {
        worker,
        now: 5,
        ...under("pid=1"),
      }),
      { changed: false, dependentsFailed: 0 },
    );
    assert.equal(
      (await store.completeBuild(s3, BuildStatus.succeeded, {
        worker,
        now: 5,
        ...under("pid=1"),
      })).changed,
      false,
    );
    assert.equal(
      await store.requeueBuild(s3, 5, { worker, ...under("pid=1") }),
      false,
    );
    const untouched = await build(s3);
    assert.equal(untouched?.status, BuildStatus.submitted);
    assert.equal(untouched?.log, "");
    // The new claim's own writes are made.
    assert.equal(
      await store.markStarted(s3, worker, "/log/s3", 6, under("pid=2")),
      true,
    );
    assert.equal(
      await store.requeueBuild(s3, 6, { worker, ...under("pid=2") }),
      true,
    );

    // An address says whose claim: it needs the worker it is of.
    await assert.rejects(
      store.completeBuild(s3, BuildStatus.failed, {
        now: 7,
        ...under("pid=2"),
      }),
      /holder address "pid=2": no worker named/,
    );
    await assert.rejects(
      store.requeueBuild(s3, 7, under("pid=2")),
      /holder address "pid=2": no worker named/,
    );
  });

  test("searchBuilds() matches a name or job prefix in any case, with the filters, newest first, paged by id; %, _ and \\ match themselves", async (store) => {
    const id = await evaluation(store);
    const other = await evaluation(store, "other");
    await register(store, id, [
      job("Hello-a"),
      job("hello-b", { system: "aarch64-linux" }),
      job("help"),
      job("x_y%"),
      job("b\\c"),
    ], 1);
    await register(store, other, [job("hello-c")], 1);
    const failed = (await store.popBuild("w", ["x86_64-linux"], 2))!;
    assert.equal(failed.jobName, "Hello-a");
    await store.completeBuild(failed.derivation, BuildStatus.failed, {
      now: 3,
    });
    const names = async (search: Partial<BuildSearch>, limit = 10) =>
      (await store.searchBuilds({ namePrefix: "", ...search }, limit))
        .map((build) => build.jobName);

    assert.deepEqual(await names({ namePrefix: "HELLO" }), [
      "hello-c",
      "hello-b",
      "Hello-a",
    ]);
    assert.deepEqual(await names({ namePrefix: "hel" }, 2), [
      "hello-c",
      "help",
    ]);
    // The next page: below the last build of the one before.
    const help = (await store.getBuildByDerivation(drv("help")))!;
    assert.deepEqual(await names({ namePrefix: "hel", beforeId: help.id }), [
      "hello-b",
      "Hello-a",
    ]);
    assert.deepEqual(
      await names({ namePrefix: "hello", specification: "other" }),
      [
        "hello-c",
      ],
    );
    assert.deepEqual(
      await names({ namePrefix: "he", system: "aarch64-linux" }),
      [
        "hello-b",
      ],
    );
    assert.deepEqual(await names({ status: BuildStatus.failed }), ["Hello-a"]);
    assert.deepEqual(await names({ status: BuildStatus.scheduled }), [
      "hello-c",
      "b\\c",
      "x_y%",
      "help",
      "hello-b",
    ]);
    assert.deepEqual(await names({ namePrefix: "x_y%" }), ["x_y%"]);
    assert.deepEqual(await names({ namePrefix: "B\\" }), ["b\\c"]);
    assert.deepEqual(await names({ namePrefix: "x%" }), []);
    assert.deepEqual(await names({ namePrefix: "h_llo" }), []);
    assert.deepEqual(await names({ namePrefix: "zzz" }), []);
  });

  // Listing.

  test("queue() lists pending builds: started, scheduled, submitted, each in dispatch order", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("p9-old")], 100);
    await store.registerBuilds(id, [job("p0-new")], { priority: 0, now: 500 });
    await store.registerBuilds(id, [job("p0-old"), job("p0-old2")], {
      priority: 0,
      now: 200,
    });
    await store.registerBuilds(id, [job("done")], { priority: 0, now: 1 });
    await store.completeBuild(drv("done"), BuildStatus.succeeded, { now: 2 });
    const names = async (filter = {}, limit = 100) =>
      (await store.queue(filter, limit)).map((b) => b.jobName);
    const expected = ["p0-old", "p0-old2", "p0-new", "p9-old"];
    assert.deepEqual(await names(), expected);

    // The dispatcher hands builds out in exactly the queue's order (C19).
    const dispatched = [];
    for (let i = 0; i < expected.length; i++) {
      dispatched.push(
        (await store.popBuild(`w${i}`, ["x86_64-linux"], 700))?.jobName,
      );
    }
    assert.deepEqual(dispatched, expected);

    assert.equal(await store.markStarted(drv("p0-new"), "w2", "/l", 800), true);
    assert.equal(await store.requeueBuild(drv("p9-old"), 801), true);
    assert.deepEqual(await names(), ["p0-new", "p9-old", "p0-old", "p0-old2"]);
    assert.deepEqual(await names({ worker: "w2" }), ["p0-new"]);
    assert.deepEqual(await names({ job: "p0-old2" }), ["p0-old2"]);
    assert.deepEqual(await names({}, 2), ["p0-new", "p9-old"]);
    await assert.rejects(store.queue({}, -1), RangeError);
  });

  test("latestBuilds() lists finished builds, newest evaluation first", async (store) => {
    const e1 = await evaluation(store, "guix");
    await register(store, e1, [job("a1"), job("a2"), job("pending")], 1);
    const e2 = await evaluation(store, "other");
    await register(store, e2, [job("b1", { system: "i686-linux" })], 2);
    for (const name of ["a2", "a1", "b1"]) {
      await store.completeBuild(drv(name), BuildStatus.failed, { now: 5 });
    }
    const names = async (filter: object, limit = 10) =>
      (await store.latestBuilds(filter, limit)).map((b) => b.jobName);
    assert.deepEqual(await names({}), ["b1", "a2", "a1"]);
    assert.deepEqual(await names({}, 2), ["b1", "a2"]);
    assert.deepEqual(await names({ specification: "guix" }), ["a2", "a1"]);
    assert.deepEqual(await names({ job: "a1" }), ["a1"]);
    assert.deepEqual(await names({ system: "i686-linux" }), ["b1"]);
    assert.deepEqual(await names({ evaluation: e1 }), ["a2", "a1"]);
    const [latest] = await store.latestBuilds({}, 1);
    assert.equal(latest.specification, "other");
    assert.equal(latest.outputs.length, 1);
  });

  test("latestBuilds() and queue() filter on the build id and on older evaluations", async (store) => {
    const e1 = await evaluation(store, "guix");
    await register(store, e1, [job("old-done"), job("old-wait")], 1);
    const e2 = await evaluation(store, "guix");
    await register(store, e2, [job("new-done"), job("new-wait")], 2);
    const e3 = await evaluation(store, "other");
    await register(store, e3, [job("other-done")], 3);
    for (const name of ["old-done", "new-done", "other-done"]) {
      await store.completeBuild(drv(name), BuildStatus.succeeded, { now: 5 });
    }
    const finished = async (filter: object) =>
      (await store.latestBuilds(filter, 10)).map((b) => b.jobName);
    const pending = async (filter: object) =>
      (await store.queue(filter, 10)).map((b) => b.jobName);

    const oldDone = await idOf(store, "old-done");
    const newWait = await idOf(store, "new-wait");
    assert.deepEqual(await finished({ id: oldDone }), ["old-done"]);
    assert.deepEqual(await pending({ id: oldDone }), []);
    assert.deepEqual(await pending({ id: newWait }), ["new-wait"]);
    assert.deepEqual(await finished({ id: newWait }), []);
    assert.deepEqual(await finished({ id: newWait + 100 }), []);

    // Strictly older: the evaluation itself is not included.
    assert.deepEqual(await finished({ beforeEvaluation: e3 }), [
      "new-done",
      "old-done",
    ]);
    assert.deepEqual(await finished({ beforeEvaluation: e2 }), ["old-done"]);
    assert.deepEqual(await finished({ beforeEvaluation: e1 }), []);
    assert.deepEqual(await pending({ beforeEvaluation: e2 }), ["old-wait"]);
    assert.deepEqual(await pending({ beforeEvaluation: e3 }), [
      "old-wait",
      "new-wait",
    ]);
    // Combined with the other filters.
    assert.deepEqual(
      await finished({ beforeEvaluation: e3 + 1, specification: "other" }),
      ["other-done"],
    );
    assert.deepEqual(
      await finished({ beforeEvaluation: e3, job: "old-done", id: oldDone }),
      ["old-done"],
    );
    assert.deepEqual(
      await store.countBuildsByStatus({ beforeEvaluation: e2 }),
      new Map([[-2, 1], [0, 1]]),
    );
  });

  test("addDashboard() saves a specification's job names; getDashboard() reads them back", async (store) => {
    await store.upsertSpecification(specification("guix"));
    const dashboard = {
      id: "AbCdEfGh01234567",
      specification: "guix",
      jobs: ["hello.x86_64-linux", "guile-3.0.9", "hello.x86_64-linux"],
    };
    assert.equal(await store.getDashboard(dashboard.id), null);
    assert.equal(
      await store.addDashboard(dashboard, { now: 100 }),
      dashboard.id,
    );
    // Sorted, each name once: the grid shows them so.
    assert.deepEqual(await store.getDashboard(dashboard.id), {
      ...dashboard,
      jobs: ["guile-3.0.9", "hello.x86_64-linux"],
      lastUsed: 100,
    });
    // A taken id changes nothing.
    assert.equal(
      await store.addDashboard({ ...dashboard, jobs: ["other"] }, { now: 200 }),
      null,
    );
    assert.equal((await store.getDashboard(dashboard.id))?.lastUsed, 100);
    // Ids are compared exactly, case included.
    assert.equal(await store.getDashboard(dashboard.id.toLowerCase()), null);

    await assert.rejects(
      store.addDashboard({ ...dashboard, id: "x", specification: "nope" }, {
        now: 200,
      }),
      (error: unknown) =>
        error instanceof StoreError && error.code === "not-found" &&
        error.value === "nope" && error.message.includes(`"nope"`),
    );
    for (const jobs of [[], ["a,b"], ["a", ""]]) {
      await assert.rejects(
        store.addDashboard({ ...dashboard, id: "y", jobs }, { now: 200 }),
        TypeError,
      );
    }
    assert.equal(await store.getDashboard("y"), null);

    // Deleting the specification deletes its dashboards.
    await store.deleteSpecification("guix");
    assert.equal(await store.getDashboard(dashboard.id), null);
  });

  test("addDashboard() saves the same names of a specification once, whatever their order", async (store) => {
    await store.upsertSpecification(specification("guix"));
    await store.upsertSpecification(specification("other"));
    const add = (id: string, spec: string, jobs: string[], now: number) =>
      store.addDashboard({ id, specification: spec, jobs }, { now });
    assert.equal(
      await add("A".repeat(16), "guix", ["b", "a"], 100),
      "A".repeat(16),
    );
    // The same set: the first id, its use recorded once a minute at most.
    assert.equal(
      await add("B".repeat(16), "guix", ["a", "b", "a"], 130),
      "A".repeat(16),
    );
    assert.equal((await store.getDashboard("A".repeat(16)))?.lastUsed, 100);
    assert.equal(
      await add("C".repeat(16), "guix", ["a", "b"], 160),
      "A".repeat(16),
    );
    assert.equal((await store.getDashboard("A".repeat(16)))?.lastUsed, 160);
    assert.equal(await store.getDashboard("B".repeat(16)), null);
    assert.equal(await store.getDashboard("C".repeat(16)), null);
    // Another set, or the same set of another specification: a new one.
    assert.equal(await add("D".repeat(16), "guix", ["a"], 170), "D".repeat(16));
    assert.equal(
      await add("E".repeat(16), "other", ["a", "b"], 170),
      "E".repeat(16),
    );
    // A name that holds the separator of another set is no match either.
    assert.equal(
      await add("F".repeat(16), "guix", ["a b"], 170),
      "F".repeat(16),
    );
  });

  test("addDashboard() keeps the dashboards used last, dropping the least recently used", async (store) => {
    await store.upsertSpecification(specification("guix"));
    const add = (id: string, jobs: string[], now: number) =>
      store.addDashboard({ id, specification: "guix", jobs }, { now, keep: 3 });
    const kept = async () => {
      const ids = [];
      for (const id of ["A", "B", "C", "D", "E", "F"]) {
        const found = await store.getDashboard(id.repeat(16));
        if (found !== null) ids.push(id);
      }
      return ids.join("");
    };
    await add("A".repeat(16), ["a"], 100);
    await add("B".repeat(16), ["b"], 110);
    await add("C".repeat(16), ["c"], 120);
    assert.equal(await kept(), "ABC");
    // A shown, then C registered again: B is the least recently used.
    assert.equal(
      (await store.useDashboard("A".repeat(16), 200))?.lastUsed,
      200,
    );
    assert.equal(await add("X".repeat(16), ["c"], 210), "C".repeat(16));
    await add("D".repeat(16), ["d"], 300);
    assert.equal(await kept(), "ACD");
    // The new one stays even when the others look newer (the clock
    // stepped back).
    await add("E".repeat(16), ["e"], 50);
    assert.equal(await kept(), "CDE");
    // With the default bound, nothing goes.
    await store.addDashboard(
      { id: "F".repeat(16), specification: "guix", jobs: ["f"] },
      { now: 400 },
    );
    assert.equal(await kept(), "CDEF");
  });

  test("useDashboard() reads a dashboard, recording its use once a minute at most", async (store) => {
    await store.upsertSpecification(specification("guix"));
    const id = "A".repeat(16);
    assert.equal(await store.useDashboard(id, 100), null);
    await store.addDashboard({ id, specification: "guix", jobs: ["a"] }, {
      now: 100,
    });
    const lastUsed = async () => (await store.getDashboard(id))?.lastUsed;
    assert.deepEqual(await store.useDashboard(id, 159), {
      id,
      specification: "guix",
      jobs: ["a"],
      lastUsed: 100,
    });
    assert.equal(await lastUsed(), 100);
    assert.equal((await store.useDashboard(id, 160))?.lastUsed, 160);
    assert.equal(await lastUsed(), 160);
    // A use before the one recorded (the clock stepped back) is recorded.
    assert.equal((await store.useDashboard(id, 150))?.lastUsed, 150);
    assert.equal(await lastUsed(), 150);
  });

  test("countBuildsByStatus() counts builds per status, filtered", async (store) => {
    const e1 = await evaluation(store, "guix");
    await register(store, e1, [job("a"), job("b"), job("c"), job("d")], 1);
    const e2 = await evaluation(store, "other");
    await register(store, e2, [job("e")], 1);
    await store.completeBuild(drv("a"), BuildStatus.succeeded, { now: 2 });
    await store.completeBuild(drv("b"), BuildStatus.canceled, { now: 2 });
    await store.popBuild("w", ["x86_64-linux"], 3);
    assert.deepEqual(
      await store.countBuildsByStatus(),
      new Map([[-3, 1], [-2, 2], [0, 1], [4, 1]]),
    );
    assert.deepEqual(
      await store.countBuildsByStatus({ specification: "other" }),
      new Map([[-2, 1]]),
    );
    assert.deepEqual(
      await store.countBuildsByStatus({ worker: "w" }),
      new Map([[-3, 1]]),
    );
  });

  // Build life cycle.

  test("markStarted() starts only a build the worker owns", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("hello")], 1);
    const hello = drv("hello");
    assert.equal(await store.markStarted(hello, "w1", "/l", 2), false);
    await store.popBuild("w1", ["x86_64-linux"], 3);
    assert.equal(await store.markStarted(hello, "w2", "/l", 4), false);
    assert.equal(await store.markStarted(drv("nope"), "w1", "/l", 4), false);
    assert.equal(await store.markStarted(hello, "w1", "/logs/h.gz", 5), true);
    const build = await store.getBuildByDerivation(hello);
    assert.equal(build?.status, BuildStatus.started);
    assert.equal(build?.starttime, 5);
    assert.equal(build?.log, "/logs/h.gz");
    assert.equal(build?.worker, "w1");
  });

  test("markStartedMany() starts, in one call, only the builds each worker owns", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b"), job("c")], 1);
    await store.popBuilds([
      { worker: "w1", systems: ["x86_64-linux"] },
      { worker: "w2", systems: ["x86_64-linux"] },
    ], 3);
    const recorded = await store.markStartedMany([
      { derivation: drv("a"), worker: "w1", log: "/logs/a.gz" },
      { derivation: drv("b"), worker: "w1", log: "/logs/b.gz" },
      { derivation: drv("c"), worker: "w1", log: "/logs/c.gz" },
      { derivation: drv("nope"), worker: "w2", log: "/logs/n.gz" },
      { derivation: drv("b"), worker: "w2", log: "/logs/b2.gz" },
    ], 5);
    assert.deepEqual(recorded, [true, false, false, false, true]);
    const a = await store.getBuildByDerivation(drv("a"));
    assert.equal(a?.status, BuildStatus.started);
    assert.equal(a?.starttime, 5);
    assert.equal(a?.log, "/logs/a.gz");
    const b = await store.getBuildByDerivation(drv("b"));
    assert.equal(b?.status, BuildStatus.started);
    assert.equal(b?.log, "/logs/b2.gz");
    assert.equal(await status(store, "c"), BuildStatus.scheduled);
    assert.deepEqual(await store.markStartedMany([], 6), []);
  });

  test("completeBuild() with a worker changes only that worker's build", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("hello")], 1);
    const hello = drv("hello");
    const unchanged = { changed: false, dependentsFailed: 0 };
    // Still scheduled: no worker owns it.
    assert.deepEqual(
      await store.completeBuild(hello, 0, { worker: "w1", now: 2 }),
      unchanged,
    );
    await store.popBuild("w1", ["x86_64-linux"], 3);
    assert.deepEqual(
      await store.completeBuild(hello, 0, { worker: "w2", now: 4 }),
      unchanged,
    );
    // The build is lost to a requeue; w1's late result changes nothing.
    assert.equal(await store.requeueBuild(hello, 5), true);
    await store.popBuild("w2", ["x86_64-linux"], 6);
    await store.markStarted(hello, "w2", "/l", 7);
    assert.deepEqual(
      await store.completeBuild(hello, 1, { worker: "w1", now: 8 }),
      unchanged,
    );
    assert.deepEqual(
      await store.completeBuild(hello, 0, { worker: "w2", now: 9 }),
      { changed: true, dependentsFailed: 0 },
    );
    const build = await store.getBuildByDerivation(hello);
    assert.equal(build?.status, BuildStatus.succeeded);
    assert.equal(build?.stoptime, 9);
    assert.equal(build?.starttime, 7);
    // Finished builds stay finished, with or without a worker.
    assert.deepEqual(
      await store.completeBuild(hello, 1, { worker: "w2", now: 10 }),
      unchanged,
    );
    assert.deepEqual(
      await store.completeBuild(hello, 4, { now: 10 }),
      unchanged,
    );
    assert.deepEqual(
      await store.completeBuild(drv("nope"), 0, { now: 10 }),
      unchanged,
    );
  });

  test("completeBuild() without a worker finishes any pending build", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b"), job("c")], 1);
    await store.popBuild("w", ["x86_64-linux"], 2);
    await store.popBuild("w", ["x86_64-linux"], 2);
    await store.markStarted(drv("b"), "w", "/l", 3);
    for (const [name, final] of [["a", 0], ["b", 3], ["c", 4]] as const) {
      const result = await store.completeBuild(drv(name), final, { now: 9 });
      assert.equal(result.changed, true, name);
      assert.equal(await status(store, name), final);
    }
  });

  test("completeBuild() rejects a status that is not final", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a")], 1);
    for (const bad of [-3, -2, -1, 5]) {
      await assert.rejects(
        store.completeBuild(drv("a"), bad as BuildStatus, { now: 2 }),
        (error: unknown) =>
          error instanceof RangeError && error.message.includes(`${bad}`),
      );
    }
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
  });

  for (const failure of [1, 2, 3, 4] as const) {
    test(`completeBuild() with status ${failure} fails scheduled dependents transitively`, async (store) => {
      const id = await evaluation(store);
      // lib, sibling -> base ; app, tool -> lib ; free stands alone.
      await register(store, id, [
        job("base"),
        job("lib", { inputs: ["base"] }),
        job("app", { inputs: ["lib"] }),
        job("tool", { inputs: ["lib"] }),
        job("sibling", { inputs: ["base"] }),
        job("free"),
      ], 1);
      assert.equal(
        (await store.popBuild("w", ["x86_64-linux"], 2))?.jobName,
        "base",
      );
      await store.completeBuild(drv("free"), 0, { now: 2 });
      const result = await store.completeBuild(drv("base"), failure, {
        worker: "w",
        now: 50,
      });
      assert.deepEqual(result, { changed: true, dependentsFailed: 4 });
      for (const name of ["lib", "app", "tool", "sibling"]) {
        const build = await store.getBuildByDerivation(drv(name));
        assert.equal(build?.status, BuildStatus.failedDependency, name);
        assert.equal(build?.starttime, 50, name);
        assert.equal(build?.stoptime, 50, name);
      }
      assert.equal(await status(store, "base"), failure);
      assert.equal(await status(store, "free"), BuildStatus.succeeded);
    });
  }

  test("completeBuild() with propagate false leaves dependents waiting (C06)", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [
      job("base"),
      job("a", { inputs: ["base"] }),
    ], 1);
    assert.deepEqual(
      await store.completeBuild(drv("base"), BuildStatus.failedOther, {
        now: 3,
        propagate: false,
      }),
      { changed: true, dependentsFailed: 0 },
    );
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    // Blocked, not runnable: its input never succeeded.
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 4), null);
    const base = await store.getBuildByDerivation(drv("base"));
    assert.ok((await store.restartBuild(base!.id, 5)).changed);
    assert.equal(
      (await store.popBuild("w", ["x86_64-linux"], 6))?.jobName,
      "base",
    );
    await store.completeBuild(drv("base"), 0, { worker: "w", now: 7 });
    assert.equal(
      (await store.popBuild("w", ["x86_64-linux"], 8))?.jobName,
      "a",
    );
  });

  test("completeBuild() succeeding fails nothing", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [
      job("base"),
      job("a", { inputs: ["base"] }),
    ], 1);
    await store.popBuild("w", ["x86_64-linux"], 2);
    assert.deepEqual(
      await store.completeBuild(drv("base"), 0, { worker: "w", now: 3 }),
      { changed: true, dependentsFailed: 0 },
    );
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
  });

  test("completeBuild() failing skips dependents that are no longer scheduled", async (store) => {
    const id = await evaluation(store);
    // done -> base ; after -> done ; other -> base.
    await register(store, id, [
      job("base"),
      job("done", { inputs: ["base"] }),
      job("after", { inputs: ["done"] }),
      job("other", { inputs: ["base"] }),
    ], 1);
    // An administrator (no worker) finished "done" already.
    await store.completeBuild(drv("done"), 0, { now: 2 });
    // A later evaluation adds a dependent of base too.
    const later = await evaluation(store);
    await register(store, later, [job("new", { inputs: ["base"] })], 3);
    assert.deepEqual(await store.completeBuild(drv("base"), 1, { now: 4 }), {
      changed: true,
      dependentsFailed: 2,
    });
    assert.equal(await status(store, "done"), BuildStatus.succeeded);
    assert.equal(await status(store, "after"), BuildStatus.scheduled);
    assert.equal(await status(store, "other"), BuildStatus.failedDependency);
    assert.equal(await status(store, "new"), BuildStatus.failedDependency);
  });

  test("completeBuild() sets last status and weather from the job's previous result", async (store) => {
    const cases: [number, number | null, Weather][] = [
      [0, null, Weather.unknown],
      [1, 0, Weather.newFailure],
      [3, 1, Weather.stillFailing],
      [0, 3, Weather.newSuccess],
      [0, 0, Weather.stillSucceeding],
    ];
    for (const [index, [final, last, weather]] of cases.entries()) {
      const id = await evaluation(store);
      // Same job name, a new derivation each evaluation.
      await register(
        store,
        id,
        [job("hello", { drv: `hello-${index}` })],
        index,
      );
      // Another spec's job of the same name does not count.
      const other = await evaluation(store, "other");
      await register(store, other, [
        job("hello", { drv: `other-hello-${index}` }),
      ], index);
      await store.completeBuild(drv(`other-hello-${index}`), 4, { now: 1 });

      await store.completeBuild(drv(`hello-${index}`), final as BuildStatus, {
        now: 100 + index,
      });
      const build = await store.getBuildByDerivation(drv(`hello-${index}`));
      assert.equal(build?.lastStatus, last, `evaluation ${index}`);
      assert.equal(build?.weather, weather, `evaluation ${index}`);
    }
  });

  test("completeBuild() ignores results of later evaluations for the weather", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [job("hello", { drv: "hello1" })], 1);
    const e2 = await evaluation(store);
    await register(store, e2, [job("hello", { drv: "hello2" })], 2);
    await store.completeBuild(drv("hello2"), 1, { now: 3 });
    await store.completeBuild(drv("hello1"), 0, { now: 4 });
    const older = await store.getBuildByDerivation(drv("hello1"));
    assert.equal(older?.lastStatus, null);
    assert.equal(older?.weather, Weather.unknown);
  });

  test("completeBuild() gives failed dependents a weather too", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [job("lib"), job("app", { drv: "app1" })], 1);
    await store.completeBuild(drv("lib"), 0, { now: 2 });
    await store.completeBuild(drv("app1"), 0, { now: 2 });
    const e2 = await evaluation(store);
    await register(store, e2, [
      job("lib", { drv: "lib2" }),
      job("app", { drv: "app2", inputs: ["lib2"] }),
    ], 3);
    await store.completeBuild(drv("lib2"), 1, { now: 4 });
    const app = await store.getBuildByDerivation(drv("app2"));
    assert.equal(app?.status, BuildStatus.failedDependency);
    assert.equal(app?.lastStatus, 0);
    assert.equal(app?.weather, Weather.newFailure);
  });

  test("requeueBuild() puts a submitted or started build back", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    assert.equal(await store.requeueBuild(drv("a"), 2), false);
    await store.popBuild("w", ["x86_64-linux"], 3);
    await store.popBuild("w", ["x86_64-linux"], 3);
    await store.markStarted(drv("b"), "w", "/l", 4);
    for (const name of ["a", "b"]) {
      assert.equal(await store.requeueBuild(drv(name), 5), true);
      const build = await store.getBuildByDerivation(drv(name));
      assert.equal(build?.status, BuildStatus.scheduled);
      assert.equal(build?.worker, null);
      assert.equal(build?.starttime, 0);
    }
    await store.completeBuild(drv("a"), 0, { now: 6 });
    assert.equal(await store.requeueBuild(drv("a"), 7), false);
    assert.equal(await status(store, "a"), BuildStatus.succeeded);
  });

  test("requeueBuild() with a worker changes only a build that worker holds", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    await store.popBuild("owner", ["x86_64-linux"], 2); // a
    await store.popBuild("owner", ["x86_64-linux"], 2); // b
    await store.markStarted(drv("b"), "owner", "/l", 3);
    for (const name of ["a", "b"]) {
      assert.equal(
        await store.requeueBuild(drv(name), 4, { worker: "intruder" }),
        false,
        name,
      );
      const build = await store.getBuildByDerivation(drv(name));
      assert.equal(build?.worker, "owner");
      assert.notEqual(build?.status, BuildStatus.scheduled);
    }
    assert.equal(
      await store.requeueBuild(drv("b"), 5, { worker: "owner" }),
      true,
    );
    assert.equal(await status(store, "b"), BuildStatus.scheduled);
  });

  test("stillHeld() says which builds each worker still holds, submitted or started", async (store) => {
    assert.deepEqual(await store.stillHeld([]), []);
    const id = await evaluation(store);
    await register(store, id, [
      job("submitted"),
      job("started"),
      job("canceled"),
      job("requeued"),
      job("done"),
      job("waiting"),
    ], 1);
    for (const worker of ["w1", "w2", "w3", "w4", "w5"]) {
      await store.popBuild(worker, ["x86_64-linux"], 2);
    }
    await store.markStarted(drv("started"), "w2", "l", 3);
    await store.cancelBuild(
      (await store.getBuildByDerivation(drv("canceled")))!.id,
      4,
    );
    await store.requeueBuild(drv("requeued"), 4);
    await store.completeBuild(drv("done"), 0, { worker: "w5", now: 5 });
    assert.deepEqual(
      await store.stillHeld([
        { worker: "w1", derivation: drv("submitted") },
        { worker: "w2", derivation: drv("started") },
        { worker: "w2", derivation: drv("submitted") },
        { worker: "w3", derivation: drv("canceled") },
        { worker: "w4", derivation: drv("requeued") },
        { worker: "w5", derivation: drv("done") },
        { worker: "w1", derivation: drv("waiting") },
        { worker: "w1", derivation: drv("unknown") },
        { worker: "w1", derivation: drv("submitted") },
      ]),
      [true, true, false, false, false, false, false, false, true],
    );
  });

  test("requeueWorkerBuilds() requeues one worker's submitted and started builds", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b"), job("c"), job("d")], 1);
    await store.popBuild("w1", ["x86_64-linux"], 2); // a
    await store.popBuild("w1", ["x86_64-linux"], 2); // b
    await store.popBuild("w2", ["x86_64-linux"], 2); // c
    await store.popBuild("w1", ["x86_64-linux"], 2); // d
    await store.markStarted(drv("b"), "w1", "/l", 3);
    await store.completeBuild(drv("d"), 0, { worker: "w1", now: 4 });
    assert.equal(await store.requeueWorkerBuilds("w1", 5), 2);
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.equal(await status(store, "b"), BuildStatus.scheduled);
    assert.equal(await status(store, "c"), BuildStatus.submitted);
    assert.equal(await status(store, "d"), BuildStatus.succeeded);
    assert.equal(await store.requeueWorkerBuilds("w1", 6), 0);
  });

  // Workers.

  /** A worker heard at `lastSeen` by a server of `timeoutSeconds`. */
  const worker = (
    name: string,
    lastSeen: number,
    timeoutSeconds: number | null = 120,
  ): Worker => ({
    name,
    address: "127.0.0.1",
    machine: "box",
    systems: ["x86_64-linux", "i686-linux"],
    lastSeen,
    timeoutSeconds,
  });

  test("upsertWorker() inserts, then refreshes every field", async (store) => {
    assert.equal(await store.getWorker("w1"), null);
    await store.upsertWorker(worker("w1", 10));
    assert.deepEqual(await store.getWorker("w1"), worker("w1", 10));
    const moved = {
      name: "w1",
      address: "::1",
      machine: "other",
      systems: ["aarch64-linux"],
      lastSeen: 20,
      timeoutSeconds: 600,
    };
    await store.upsertWorker(moved);
    assert.deepEqual(await store.getWorker("w1"), moved);
    await store.upsertWorker(worker("w0", 5));
    assert.deepEqual(await store.listWorkers(), [worker("w0", 5), moved]);
  });

  test("touchWorker() refreshes last seen and timeout of a known worker only", async (store) => {
    await store.upsertWorker(worker("w1", 10));
    assert.equal(await store.touchWorker("w1", 30, 600), true);
    assert.deepEqual(await store.getWorker("w1"), worker("w1", 30, 600));
    assert.equal(await store.touchWorker("ghost", 30, 600), false);
    assert.equal(await store.getWorker("ghost"), null);
  });

  test("upsertWorker(), claimWorker() and touchWorker() refuse a timeout that is not whole positive seconds", async (store) => {
    for (const bad of [0, -5, 1.5, Number.NaN]) {
      await assert.rejects(
        store.upsertWorker(worker("w1", 10, bad)),
        (error: unknown) =>
          error instanceof RangeError &&
          error.message.includes(`timeout ${JSON.stringify(bad)}`),
      );
      await assert.rejects(
        store.claimWorker(worker("w1", 10, bad), null),
        RangeError,
      );
      await assert.rejects(store.touchWorker("w1", 10, bad), RangeError);
    }
    assert.deepEqual(await store.listWorkers(), []);
  });

  test("claimWorker() saves a worker only over the row it expects", async (store) => {
    const first = { ...worker("h1", 10), address: "first" };
    assert.equal(await store.claimWorker(first, null), true);
    assert.deepEqual(await store.getWorker("h1"), first);
    // Absent expected, but there: not saved.
    const second = { ...worker("h1", 20), address: "second" };
    assert.equal(await store.claimWorker(second, null), false);
    // Another address, or the same seen at another time: not saved.
    assert.equal(
      await store.claimWorker(second, { address: "other" }),
      false,
    );
    assert.equal(
      await store.claimWorker(second, { address: "first", lastSeen: 11 }),
      false,
    );
    assert.deepEqual(await store.getWorker("h1"), first);
    assert.equal(
      await store.claimWorker(second, { address: "first", lastSeen: 10 }),
      true,
    );
    assert.deepEqual(await store.getWorker("h1"), second);
    // A renewal: the address alone.
    const renewed = { ...second, lastSeen: 40, systems: ["i686-linux"] };
    assert.equal(
      await store.claimWorker(renewed, { address: "second" }),
      true,
    );
    assert.deepEqual(await store.getWorker("h1"), renewed);
    assert.equal(
      await store.claimWorker(worker("ghost", 1), { address: "x" }),
      false,
    );
    assert.equal(await store.getWorker("ghost"), null);
  });

  test("releaseWorker() deletes and requeues only a worker of that address", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a")], 1);
    await store.upsertWorker({ ...worker("h1", 10), address: "mine" });
    await store.popBuild("h1", ["x86_64-linux"], 2);
    assert.equal(await store.releaseWorker("h1", "not mine"), null);
    assert.equal(await status(store, "a"), BuildStatus.submitted);
    assert.notEqual(await store.getWorker("h1"), null);
    assert.equal(await store.releaseWorker("h1", "mine"), 1);
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.equal(await store.getWorker("h1"), null);
    assert.equal(await store.releaseWorker("h1", "mine"), null);
  });

  test("removeWorker() deletes the worker and requeues its builds", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    await store.upsertWorker(worker("w1", 10));
    await store.upsertWorker(worker("w2", 10));
    await store.popBuild("w1", ["x86_64-linux"], 2);
    await store.popBuild("w2", ["x86_64-linux"], 2);
    await store.removeWorker("w1", 20);
    assert.equal(await store.getWorker("w1"), null);
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.equal(await status(store, "b"), BuildStatus.submitted);
    await store.removeWorker("ghost", 20);
  });

  test("addBuildProducts() records products once per path; catalog reads return them", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    const a = (await store.getBuildByDerivation(drv("a")))!;
    const tarball = {
      type: "tarball",
      fileSize: 4096,
      path: "/gnu/store/x-a/a.tar",
    };
    await store.addBuildProducts(a.id, [tarball]);
    // Registered again (a restarted build): the path is not repeated.
    await store.addBuildProducts(a.id, [
      { ...tarball, fileSize: 1 },
      { type: "doc", fileSize: 7, path: "/gnu/store/x-a/README" },
    ]);
    const products = (await store.getBuild(a.id))!.products!;
    assert.deepEqual(
      products.map((p) => [p.build, p.type, p.fileSize, p.checksum, p.path]),
      [
        [a.id, "tarball", 4096, "", "/gnu/store/x-a/a.tar"],
        [a.id, "doc", 7, "", "/gnu/store/x-a/README"],
      ],
    );
    assert.deepEqual(await store.getBuildProduct(products[1].id), products[1]);
    assert.equal(await store.getBuildProduct(products[1].id + 100), null);
    const b = (await store.getBuildByDerivation(drv("b")))!;
    assert.deepEqual(b.products, []);
    assert.deepEqual(
      (await store.queue({}, 10)).map((build) => build.products?.length),
      [2, 0],
    );
    await assert.rejects(
      store.addBuildProducts(a.id, [{ ...tarball, fileSize: 1.5 }]),
      /file size 1.5 is not an integer/,
    );
  });

  // Group commit.

  test("batch() commits its writes together and passes the result through", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    const popped = await store.batch(async (tx) => {
      const a = await tx.popBuild("w1", ["x86_64-linux"], 2);
      // Reads through the batch see its own writes.
      assert.equal(
        (await tx.getBuildByDerivation(drv("a")))?.status,
        BuildStatus.submitted,
      );
      const b = await tx.popBuild("w2", ["x86_64-linux"], 2);
      return [a?.derivation, b?.derivation];
    });
    assert.deepEqual(popped, [drv("a"), drv("b")]);
    assert.equal(await status(store, "a"), BuildStatus.submitted);
    assert.equal(await status(store, "b"), BuildStatus.submitted);
  });

  test("batch(): a failing write throws to its caller and the others commit", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a")], 1);
    await store.batch(async (tx) => {
      await tx.popBuild("w", ["x86_64-linux"], 2);
      await assert.rejects(
        tx.setEvaluationStatus(id + 7, EvaluationStatus.succeeded, 3),
        (error: unknown) =>
          error instanceof StoreError && error.message.includes(`${id + 7}`),
      );
      await tx.markStarted(drv("a"), "w", "/log", 4);
    });
    assert.equal(await status(store, "a"), BuildStatus.started);
  });

  test("batch(): a failing pop throws to its caller alone, as a failing write does; in an optimistic batch it aborts the batch", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b"), job("c")], 1);
    // A pop failing in its own procedure: one holder address for the
    // requests of two workers.
    const failingPop = (tx: Store) =>
      tx.popBuilds(
        [
          { worker: "w1", systems: ["x86_64-linux"] },
          { worker: "w2", systems: ["x86_64-linux"] },
        ],
        3,
        { holderAddress: "192.0.2.1" },
      );
    await store.batch(async (tx) => {
      await tx.popBuild("w", ["x86_64-linux"], 2);
      await assert.rejects(failingPop(tx), /several workers/);
      await tx.markStarted(drv("a"), "w", "/log", 4);
      const next = await tx.popBuild("v", ["x86_64-linux"], 5);
      assert.equal(next?.derivation, drv("b"));
    });
    assert.equal(await status(store, "a"), BuildStatus.started);
    assert.equal(await status(store, "b"), BuildStatus.submitted);

    // Optimistic, it aborts the batch (to be replayed with savepoints).
    const aborted = (error: unknown) =>
      error instanceof StoreError && error.code === "batch-aborted" &&
      /several workers/.test((error.cause as Error)?.message);
    await assert.rejects(
      store.batch(async (tx) => {
        await assert.rejects(failingPop(tx), aborted);
        await assert.rejects(tx.popBuild("v", ["x86_64-linux"], 6), aborted);
      }, { optimistic: true }),
      aborted,
    );
    assert.equal(await status(store, "c"), BuildStatus.scheduled);
  });

  test("batch({optimistic}): writes commit together without savepoints", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    await store.batch(async (tx) => {
      await tx.popBuild("w1", ["x86_64-linux"], 2);
      await tx.markStarted(drv("a"), "w1", "/log", 3);
      await tx.popBuild("w2", ["x86_64-linux"], 4);
    }, { optimistic: true });
    assert.equal(await status(store, "a"), BuildStatus.started);
    assert.equal(await status(store, "b"), BuildStatus.submitted);
  });

  test("batch({optimistic}): the first failing write aborts the whole batch", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    const aborted = (error: unknown) =>
      error instanceof StoreError && error.code === "batch-aborted" &&
      error.cause instanceof StoreError && error.cause.code === "not-found" &&
      error.message.includes(`${id + 7}`);
    await assert.rejects(
      store.batch(async (tx) => {
        await tx.popBuild("w", ["x86_64-linux"], 2);
        await assert.rejects(
          tx.setEvaluationStatus(id + 7, EvaluationStatus.succeeded, 3),
          aborted,
        );
        // Everything after it is refused as well, reads included.
        await assert.rejects(tx.markStarted(drv("a"), "w", "/log", 4), aborted);
        await assert.rejects(tx.listWorkers(), aborted);
      }, { optimistic: true }),
      aborted,
    );
    // Nothing of it was recorded.
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.equal(await status(store, "b"), BuildStatus.scheduled);
  });

  test("batch(): work that throws rolls every write back", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a")], 1);
    await assert.rejects(
      store.batch(async (tx) => {
        await tx.popBuild("w", ["x86_64-linux"], 2);
        throw new Error("handler bug");
      }),
      /handler bug/,
    );
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
  });

  test("batch(): its store refuses nesting, closing and use after the batch", async (store) => {
    let leaked: Store | undefined;
    await store.batch(async (tx) => {
      leaked = tx;
      const misuse = (error: unknown) =>
        error instanceof StoreError && error.code === "batch-misuse";
      await assert.rejects(tx.batch(() => Promise.resolve()), misuse);
      await assert.rejects(tx.close(), misuse);
    });
    await assert.rejects(
      leaked!.listWorkers(),
      (error: unknown) =>
        error instanceof StoreError && error.code === "batch-misuse" &&
        error.message.includes("after the batch ended"),
    );
    assert.deepEqual(await store.listWorkers(), []);
  });

  test("batch(): a write through the store itself meanwhile is not lost", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    let outside: Promise<unknown> | undefined;
    await store.batch(async (tx) => {
      await tx.popBuild("w1", ["x86_64-linux"], 2);
      outside = store.upsertWorker(worker("beside", 5));
      await tx.markStarted(drv("a"), "w1", "/log", 3);
    });
    await outside;
    assert.equal((await store.getWorker("beside"))?.lastSeen, 5);
    assert.equal(await status(store, "a"), BuildStatus.started);
  });

  test("batch(): a write through the store meanwhile survives the batch's failure", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a")], 1);
    let outside: Promise<unknown> | undefined;
    await assert.rejects(
      store.batch(async (tx) => {
        await tx.popBuild("w1", ["x86_64-linux"], 2);
        outside = store.upsertWorker(worker("beside", 5));
        throw new Error("handler bug");
      }),
      /handler bug/,
    );
    await outside;
    assert.equal((await store.getWorker("beside"))?.lastSeen, 5);
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
  });

  test("writes issued together each take effect or fail on their own", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    const [a, b] = await store.popBuilds([
      { worker: "w1", systems: ["x86_64-linux"] },
      { worker: "w2", systems: ["x86_64-linux"] },
    ], 2);
    const outcomes = await Promise.allSettled([
      store.completeBuild(a!.derivation, BuildStatus.succeeded, {
        worker: "w1",
        now: 3,
      }),
      store.setEvaluationStatus(id + 9, EvaluationStatus.succeeded, 3),
      store.completeBuild(b!.derivation, BuildStatus.failed, {
        worker: "w2",
        now: 3,
      }),
    ]);
    assert.deepEqual(outcomes.map((o) => o.status), [
      "fulfilled",
      "rejected",
      "fulfilled",
    ]);
    assert.equal(await status(store, "a"), BuildStatus.succeeded);
    assert.equal(await status(store, "b"), BuildStatus.failed);
  });

  test("expireWorkers() removes silent workers and requeues submitted and started builds", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b"), job("c")], 1);
    await store.upsertWorker(worker("old1", 10));
    await store.upsertWorker(worker("old2", 50));
    await store.upsertWorker(worker("fresh", 100));
    await store.popBuild("old1", ["x86_64-linux"], 2); // a, submitted
    await store.popBuild("old2", ["x86_64-linux"], 2); // b, started below
    await store.popBuild("fresh", ["x86_64-linux"], 2); // c
    await store.markStarted(drv("b"), "old2", "/l", 3);

    // Each heard by a server of 120 s, swept by one of 120 s at 200.
    const sweep = { timeoutSeconds: 120 };
    assert.deepEqual(await store.expireWorkers(200, sweep), [
      { name: "old1", timeoutSeconds: 120, requeued: 1 },
      { name: "old2", timeoutSeconds: 120, requeued: 1 },
    ]);
    assert.deepEqual((await store.listWorkers()).map((w) => w.name), [
      "fresh",
    ]);
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.equal(await status(store, "b"), BuildStatus.scheduled);
    assert.equal(await status(store, "c"), BuildStatus.submitted);
    assert.equal((await store.getBuildByDerivation(drv("a")))?.worker, null);
    // Silent for its whole timeout, not longer: kept.
    assert.deepEqual(await store.expireWorkers(220, sweep), []);
  });

  test("shortestWorkerTimeout() is the shortest timeout the rows record, null without one", async (store) => {
    assert.equal(await store.shortestWorkerTimeout(), null);
    // A row from before timeouts were recorded counts for nothing.
    await store.upsertWorker(worker("legacy", 1000, null));
    assert.equal(await store.shortestWorkerTimeout(), null);
    await store.upsertWorker(worker("slow", 1000, 600));
    await store.upsertWorker(worker("fast", 1000, 20));
    assert.equal(await store.shortestWorkerTimeout(), 20);
    await store.removeWorker("fast", 1001);
    assert.equal(await store.shortestWorkerTimeout(), 600);
  });

  test("expireWorkers() judges each worker by the timeout its row records, whichever sweeper's is shorter or longer", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    // Heard at 1000 by a server of 600 s (a bad link), and by one of 120.
    await store.upsertWorker(worker("slow", 1000, 600));
    await store.upsertWorker(worker("fast", 1000, 120));
    await store.popBuild("slow", ["x86_64-linux"], 1000);
    await store.markStarted(drv("a"), "slow", "/l", 1000);
    await store.popBuild("fast", ["x86_64-linux"], 1000);

    // 300 s later: the sweep of a 120-s server leaves the 600-s row, and
    // that of a 600-s server takes the 120-s one.
    assert.deepEqual(
      await store.expireWorkers(1300, { timeoutSeconds: 120 }),
      [{ name: "fast", timeoutSeconds: 120, requeued: 1 }],
    );
    assert.deepEqual(
      await store.expireWorkers(1300, { timeoutSeconds: 600 }),
      [],
    );
    assert.equal(await status(store, "a"), BuildStatus.started);
    assert.deepEqual(
      await store.expireWorkers(1600, { timeoutSeconds: 120 }),
      [],
    );
    // Past its own 600 s, whichever server sweeps.
    assert.deepEqual(
      await store.expireWorkers(1601, { timeoutSeconds: 120 }),
      [{ name: "slow", timeoutSeconds: 600, requeued: 1 }],
    );
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    assert.deepEqual(await store.listWorkers(), []);
  });

  test("expireWorkers() judges a row recording no timeout by the sweeper's own, until a contact records one", async (store) => {
    // Rows as servers before timeouts were recorded wrote them.
    await store.upsertWorker(worker("old", 1000, null));
    await store.upsertWorker(worker("heard", 1000, null));
    assert.equal((await store.getWorker("old"))?.timeoutSeconds, null);
    assert.equal(await store.touchWorker("heard", 1000, 600), true);
    assert.deepEqual(
      await store.expireWorkers(1300, { timeoutSeconds: 600 }),
      [],
    );
    assert.deepEqual(
      await store.expireWorkers(1300, { timeoutSeconds: 120 }),
      [{ name: "old", timeoutSeconds: null, requeued: 0 }],
    );
    assert.deepEqual(await store.listWorkers(), [worker("heard", 1000, 600)]);
  });

  test("expireWorkers() counts silence from silentFrom at the earliest, each row by its own timeout", async (store) => {
    await store.upsertWorker(worker("slow", 0, 600));
    await store.upsertWorker(worker("old", 0, null));
    // The database failed until 950: both long silent, neither heard
    // since; each gets a whole timeout of its own from then.
    const after = { timeoutSeconds: 120, silentFrom: 950 };
    assert.deepEqual(await store.expireWorkers(1070, after), []);
    assert.deepEqual(await store.expireWorkers(1071, after), [
      { name: "old", timeoutSeconds: null, requeued: 0 },
    ]);
    assert.deepEqual(await store.expireWorkers(1550, after), []);
    assert.deepEqual(await store.expireWorkers(1551, after), [
      { name: "slow", timeoutSeconds: 600, requeued: 0 },
    ]);
  });

  test("resumeWorkerClock() credits the time since a clean stop, and only once", async (store) => {
    await store.upsertWorker(worker("quiet", 100));
    await store.upsertWorker(worker("chatty", 190));
    assert.equal(await store.resumeWorkerClock(150), 0, "no stop recorded");
    await store.stopWorkerClock(200);
    assert.equal(await store.resumeWorkerClock(1200), 1000);
    const lastSeen = Object.fromEntries(
      (await store.listWorkers()).map((w) => [w.name, w.lastSeen]),
    );
    // Each keeps the silence it had at the stop: 100 s and 10 s.
    assert.deepEqual(lastSeen, { chatty: 1190, quiet: 1100 });
    // Silent 150 s and 60 s by then.
    assert.deepEqual(
      await store.expireWorkers(1250, { timeoutSeconds: 120 }),
      [{ name: "quiet", timeoutSeconds: 120, requeued: 0 }],
    );
    // The record is used up: a crash later credits nothing.
    assert.equal(await store.resumeWorkerClock(5000), 0);
    assert.equal((await store.getWorker("chatty"))?.lastSeen, 1190);
  });

  test("creditWorkers() moves ahead only the workers last seen by then", async (store) => {
    await store.upsertWorker(worker("before", 100));
    await store.upsertWorker(worker("after", 5000));
    assert.equal(await store.creditWorkers(4000, 1000), 1);
    const lastSeen = Object.fromEntries(
      (await store.listWorkers()).map((w) => [w.name, w.lastSeen]),
    );
    assert.deepEqual(lastSeen, { after: 5000, before: 4100 });
  });

  test("owedFetches() returns the fetches saved until each is forgotten", async (store) => {
    assert.deepEqual(await store.owedFetches(), []);
    await store.saveOwedFetches([
      { drv: drv("b"), worker: "w1", url: "http://10.0.0.1:5558" },
      { drv: drv("a"), worker: "w1", url: "http://10.0.0.1:5558" },
    ]);
    // Another worker's result of b is kept beside the first (the store
    // tells later which one holds the build); w1's saved again replaces.
    await store.saveOwedFetches([
      { drv: drv("b"), worker: "w2", url: "http://10.0.0.2:5558" },
      { drv: drv("b"), worker: "w1", url: "http://10.0.0.9:5558" },
    ]);
    const all = [
      { drv: drv("a"), worker: "w1", url: "http://10.0.0.1:5558" },
      { drv: drv("b"), worker: "w1", url: "http://10.0.0.9:5558" },
      { drv: drv("b"), worker: "w2", url: "http://10.0.0.2:5558" },
    ];
    // Read, not taken: a start that dies before the fetches end leaves
    // them for the next.
    assert.deepEqual(await store.owedFetches(), all);
    assert.deepEqual(await store.owedFetches(), all);
    await store.forgetOwedFetch({ drv: drv("b"), worker: "w1" });
    await store.forgetOwedFetch({ drv: drv("c"), worker: "w1" });
    assert.deepEqual(await store.owedFetches(), [all[0], all[2]]);
  });

  test("completeBuild() forgets the fetches owed for the build it finishes, and only when it finishes it", async (store) => {
    const first = await evaluation(store);
    await register(store, first, [job("a"), job("b"), job("c")], 1);
    const held: Record<string, string> = {};
    for (let n = 0; n < 3; n++) {
      const build = await store.popBuild(`w${n}`, ["x86_64-linux"], 2);
      held[build!.derivation] = `w${n}`;
    }
    const owed = (base: string, worker: string) => ({
      drv: drv(base),
      worker,
      url: `http://${worker}:5558`,
    });
    await store.saveOwedFetches([
      owed("a", held[drv("a")]),
      owed("a", "elsewhere"),
      owed("b", held[drv("b")]),
      owed("c", held[drv("c")]),
    ]);
    // A success (PostgreSQL's one-statement path) and a failure.
    await store.completeBuild(drv("a"), BuildStatus.succeeded, {
      worker: held[drv("a")],
      now: 3,
    });
    await store.completeBuild(drv("b"), BuildStatus.failedOther, {
      worker: held[drv("b")],
      now: 3,
    });
    // Not c's holder: nothing changes, its fetch stays owed.
    await store.completeBuild(drv("c"), BuildStatus.succeeded, {
      worker: "not-the-holder",
      now: 3,
    });
    assert.deepEqual(await store.owedFetches(), [owed("c", held[drv("c")])]);
  });

  test("saveOwedFetches() keeps the last of one call's fetches of a worker's result", async (store) => {
    await store.saveOwedFetches([
      { drv: drv("a"), worker: "w1", url: "http://10.0.0.1:5558" },
      { drv: drv("b"), worker: "w1", url: "http://10.0.0.1:5558" },
      { drv: drv("a"), worker: "w1", url: "http://10.0.0.7:5558" },
    ]);
    await store.saveOwedFetches([]);
    assert.deepEqual(await store.owedFetches(), [
      { drv: drv("a"), worker: "w1", url: "http://10.0.0.7:5558" },
      { drv: drv("b"), worker: "w1", url: "http://10.0.0.1:5558" },
    ]);
  });

  test("saveOwedFetches() in a batch that rolls back saves nothing", async (store) => {
    await assert.rejects(
      store.batch(async (tx) => {
        await tx.saveOwedFetches([
          { drv: drv("a"), worker: "w1", url: "http://10.0.0.1:5558" },
        ]);
        throw new Error("turn failed");
      }),
      /turn failed/,
    );
    assert.deepEqual(await store.owedFetches(), []);
  });

  // Admin actions, channel polling and notifications (issues #4, #6, #7).

  async function idOf(store: Store, base: string): Promise<number> {
    const build = await store.getBuildByDerivation(drv(base));
    assert.ok(build, base);
    return build.id;
  }

  test("deleteSpecification() removes its evaluations and builds only", async (store) => {
    const e1 = await evaluation(store, "gone");
    await register(store, e1, [job("a"), job("b")], 1);
    const e2 = await evaluation(store, "kept");
    await register(store, e2, [job("c", { inputs: ["a"] })], 1);
    assert.equal(await store.deleteSpecification("gone"), true);
    assert.equal(await store.deleteSpecification("gone"), false);
    assert.equal(await store.getSpecification("gone"), null);
    assert.equal(await store.getEvaluation(e1), null);
    assert.equal(await store.getBuildByDerivation(drv("a")), null);
    const c = await store.getBuildByDerivation(drv("c"));
    assert.equal(c?.status, BuildStatus.scheduled);
    assert.deepEqual(await store.buildDependencies(c!.id), []);
    // With its dependency gone, c can be dispatched.
    assert.equal((await store.popBuild("w", ["x86_64-linux"], 2))?.id, c!.id);
  });

  test("deleteSpecification() deletes more than one chunk of builds with their dependent rows", async (store) => {
    // Two chunks in one evaluation, and a second evaluation.
    const count = DELETE_CHUNK + 5;
    const e1 = await evaluation(store, "gone");
    const jobs = Array.from(
      { length: count },
      (_, i) => job(`j${i}`, { inputs: i > 0 ? [`j${i - 1}`] : [] }),
    );
    await store.registerBuilds(e1, jobs, { priority: 9, now: 1 });
    const e2 = await store.addEvaluation("gone", [], 2);
    await register(store, e2, [job("late", { inputs: ["j0"] })], 2);
    const last = await idOf(store, `j${count - 1}`);
    await store.addBuildProducts(last, [{
      type: "file",
      fileSize: 1,
      path: "/gnu/store/x-product",
    }]);
    const [product] = (await store.getBuild(last))!.products!;
    // Another specification's build depends on the last chunk's last build.
    const e3 = await evaluation(store, "kept");
    await register(store, e3, [job("c", { inputs: [`j${count - 1}`] })], 3);
    const c = await idOf(store, "c");

    assert.equal(await store.deleteSpecification("gone"), true);
    assert.equal(await store.getEvaluation(e1), null);
    assert.equal(await store.getEvaluation(e2), null);
    assert.deepEqual(await store.listJobs(e1), []);
    for (const base of ["j0", `j${DELETE_CHUNK}`, `j${count - 1}`, "late"]) {
      assert.equal(await store.getBuildByDerivation(drv(base)), null, base);
    }
    assert.equal(await store.getBuildProduct(product.id), null);
    assert.deepEqual(await store.buildDependencies(c), []);
    assert.deepEqual(
      await store.countBuildsByStatus(),
      new Map([[BuildStatus.scheduled, 1]]),
    );
    assert.equal((await store.popBuild("w", ["x86_64-linux"], 3))?.id, c);
    // No output row is left behind: the same jobs register again, whole.
    const again = await evaluation(store, "again");
    await store.registerBuilds(again, jobs.slice(-2), { priority: 9, now: 4 });
    assert.deepEqual(
      (await store.getBuildByDerivation(drv(`j${count - 1}`)))?.outputs,
      jobs.at(-1)!.outputs,
    );
  });

  // Text with a NUL character: PostgreSQL cannot store it, SQLite can.

  async function refusesNul(
    call: Promise<unknown>,
    method: string,
    detail: string,
  ): Promise<void> {
    await assert.rejects(call, (error: unknown) => {
      assert.ok(error instanceof StoreError, String(error));
      assert.equal(error.code, "invalid-text");
      assert.equal(
        error.message,
        `Cannot run ${method}(): argument ${detail}`,
      );
      return true;
    });
  }

  test("a job name holding a lone UTF-16 surrogate is refused alike, naming the field, and nothing is written", async (store) => {
    // JSON's "\ud800" reads as one; stored, it would become U+FFFD.
    const e1 = await evaluation(store);
    const bad = job("lone");
    bad.name = JSON.parse('"lone\\ud800"');
    await assert.rejects(
      register(store, e1, [job("good"), bad], 1),
      (error: unknown) => {
        assert.ok(error instanceof StoreError, String(error));
        assert.equal(error.code, "invalid-text");
        assert.equal(
          error.message,
          `Cannot run registerBuilds(): argument 2 field "[1].name" holds a lone UTF-16 surrogate, no Unicode character: "lone\\ud800"`,
        );
        return true;
      },
    );
    assert.deepEqual(await store.listJobs(e1), []);
    assert.equal(await store.getBuildByDerivation(drv("good")), null);
  });

  test("text holding a NUL character is refused alike, naming the field, and nothing is written", async (store) => {
    const spec = specification("guix");
    spec.channels[0].url = "file:///srv/guix\0.git";
    await refusesNul(
      store.upsertSpecification(spec),
      "upsertSpecification",
      `1 field "channels[0].url" holds a NUL character (U+0000): "file:///srv/guix\\u0000.git"`,
    );
    assert.equal(await store.getSpecification("guix"), null);

    const e1 = await evaluation(store);
    const bad = job("bad");
    bad.name = "bad\0job";
    await refusesNul(
      register(store, e1, [job("good"), bad], 1),
      "registerBuilds",
      `2 field "[1].name" holds a NUL character (U+0000): "bad\\u0000job"`,
    );
    assert.deepEqual(await store.listJobs(e1), []);
    assert.equal(await store.getBuildByDerivation(drv("good")), null);

    await refusesNul(
      store.upsertWorker({
        name: "w\0",
        address: "127.0.0.1",
        machine: "m",
        systems: ["x86_64-linux"],
        lastSeen: 1,
        timeoutSeconds: 120,
      }),
      "upsertWorker",
      `1 field "name" holds a NUL character (U+0000): "w\\u0000"`,
    );
    assert.deepEqual(await store.listWorkers(), []);
    await refusesNul(
      store.getBuildByDerivation(drv("a\0b")),
      "getBuildByDerivation",
      `1 holds a NUL character (U+0000): "${drv("a\\u0000b")}"`,
    );
    // The store still works.
    await register(store, e1, [job("good")], 1);
    assert.equal((await store.listJobs(e1)).length, 1);
  });

  test("a batch's store refuses NUL text as the store does, and the batch goes on", async (store) => {
    await store.batch(async (tx) => {
      await refusesNul(
        tx.getWorker("w\0"),
        "getWorker",
        `1 holds a NUL character (U+0000): "w\\u0000"`,
      );
      await tx.upsertWorker({
        name: "w",
        address: "127.0.0.1",
        machine: "m",
        systems: ["x86_64-linux"],
        lastSeen: 1,
        timeoutSeconds: 120,
      });
    });
    assert.deepEqual((await store.listWorkers()).map((w) => w.name), ["w"]);
  });

  test("a batch's store method called apart from its store is refused, naming it; the store's own may be", async (store) => {
    // The store's methods are its own: passed around, they still work.
    const { listWorkers } = store;
    assert.deepEqual(await listWorkers(), []);
    await store.batch(async (tx) => {
      const { getWorker } = tx;
      await assert.rejects(
        getWorker("w"),
        (error: unknown) =>
          error instanceof StoreError && error.code === "batch-misuse" &&
          error.message.includes("getWorker()"),
      );
      assert.equal(await tx.getWorker("w"), null);
    });
  });

  test("latestCheckouts() gives the newest revision of each channel", async (store) => {
    await store.upsertSpecification(specification("guix"));
    await store.upsertSpecification(specification("other"));
    const at = (channel: string, revision: string) => ({
      channel,
      revision,
      directory: `/gnu/store/${revision}-${channel}`,
    });
    assert.deepEqual(await store.latestCheckouts("guix"), []);
    await store.addEvaluation("guix", [at("guix", "r1"), at("extra", "x1")], 1);
    await store.addEvaluation("guix", [at("guix", "r2")], 2);
    await store.addEvaluation("other", [at("guix", "o9")], 3);
    assert.deepEqual(await store.latestCheckouts("guix"), [
      at("extra", "x1"),
      at("guix", "r2"),
    ]);
    assert.deepEqual(await store.latestCheckouts("other"), [at("guix", "o9")]);
  });

  test("listJobs() lists an evaluation's jobs by name, filtered", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [
      job("zlib"),
      job("hello", { drv: "hello" }),
      job("hello-alias", { drv: "hello" }),
      job("arm", { system: "aarch64-linux" }),
    ], 1);
    await store.completeBuild(drv("zlib"), BuildStatus.failed, { now: 2 });
    const hello = await idOf(store, "hello");
    assert.deepEqual(await store.listJobs(e1), [
      { name: "arm", build: await idOf(store, "arm"), status: -2 },
      { name: "hello", build: hello, status: -2 },
      { name: "hello-alias", build: hello, status: -2 },
      { name: "zlib", build: await idOf(store, "zlib"), status: 1 },
    ]);
    assert.deepEqual(
      (await store.listJobs(e1, { names: ["zlib", "hello", "nope"] })).map(
        (row) => row.name,
      ),
      ["hello", "zlib"],
    );
    assert.deepEqual(
      (await store.listJobs(e1, { system: "aarch64-linux" })).map((row) =>
        row.name
      ),
      ["arm"],
    );
    assert.deepEqual(await store.listJobs(e1 + 50), []);
  });

  test("cancelBuild() cancels a pending build and fails its dependents", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [
      job("base"),
      job("mid", { inputs: ["base"] }),
      job("top", { inputs: ["mid"] }),
      job("running"),
      job("done"),
    ], 1);
    assert.deepEqual(await store.cancelBuild(await idOf(store, "base"), 5), {
      changed: true,
      worker: null,
    });
    assert.equal(await status(store, "base"), BuildStatus.canceled);
    assert.equal(await status(store, "mid"), BuildStatus.failedDependency);
    assert.equal(await status(store, "top"), BuildStatus.failedDependency);

    assert.equal(
      (await store.popBuild("w7", ["x86_64-linux"], 6))?.jobName,
      "running",
    );
    assert.deepEqual(await store.cancelBuild(await idOf(store, "running"), 7), {
      changed: true,
      worker: "w7",
    });
    // A late result of the worker changes nothing.
    assert.equal(
      (await store.completeBuild(drv("running"), 0, { worker: "w7", now: 8 }))
        .changed,
      false,
    );
    assert.equal(await status(store, "running"), BuildStatus.canceled);

    await store.completeBuild(drv("done"), 0, { now: 8 });
    assert.deepEqual(await store.cancelBuild(await idOf(store, "done"), 9), {
      changed: false,
      worker: null,
    });
    assert.equal(await status(store, "done"), BuildStatus.succeeded);
    assert.deepEqual(await store.cancelBuild(9999, 9), {
      changed: false,
      worker: null,
    });
  });

  test("restartBuild() schedules a build anew and returns its worker", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    await store.popBuild("w1", ["x86_64-linux"], 2);
    await store.markStarted(drv("a"), "w1", "/l", 3);
    await store.completeBuild(drv("a"), 1, { worker: "w1", now: 4 });
    assert.deepEqual(await store.restartBuild(await idOf(store, "a"), 5), {
      changed: true,
      worker: null,
    });
    const a = await store.getBuildByDerivation(drv("a"));
    assert.equal(a?.status, BuildStatus.scheduled);
    assert.equal(a?.starttime, 0);
    assert.equal(a?.stoptime, 0);
    assert.equal(a?.weather, Weather.unknown);
    assert.equal(a?.worker, null);

    assert.equal(
      (await store.popBuild("w2", ["x86_64-linux"], 6))?.jobName,
      "a",
    );
    assert.deepEqual(await store.restartBuild(await idOf(store, "a"), 7), {
      changed: true,
      worker: "w2",
    });
    assert.equal(await status(store, "a"), BuildStatus.scheduled);
    // Already scheduled, or unknown: nothing to do.
    assert.deepEqual(await store.restartBuild(await idOf(store, "b"), 8), {
      changed: false,
      worker: null,
    });
    assert.deepEqual(await store.restartBuild(9999, 8), {
      changed: false,
      worker: null,
    });
  });

  test("restartBuild() and restartEvaluation() leave a build no log until it starts again", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    for (const [worker, name] of [["w1", "a"], ["w2", "b"]]) {
      await store.popBuild(worker, ["x86_64-linux"], 2);
      await store.markStarted(drv(name), worker, `/logs/${name}.log.gz`, 3);
      await store.completeBuild(drv(name), 1, { worker, now: 4 });
    }
    const logOf = async (name: string) =>
      (await store.getBuildByDerivation(drv(name)))?.log;
    assert.equal(await logOf("a"), "/logs/a.log.gz");
    // The file left at that path is the earlier attempt's log.
    assert.ok((await store.restartBuild(await idOf(store, "a"), 5)).changed);
    assert.equal(await logOf("a"), "");
    assert.equal((await store.restartEvaluation(id, 5)).changed, 1);
    assert.equal(await logOf("b"), "");
    await store.popBuild("w3", ["x86_64-linux"], 6);
    await store.markStarted(drv("a"), "w3", "/logs/a.log.gz", 7);
    assert.equal(await logOf("a"), "/logs/a.log.gz");
  });

  test("requeueBuild() and requeueWorker() leave a build no log until it starts again", async (store) => {
    const id = await evaluation(store);
    await register(store, id, [job("a"), job("b")], 1);
    for (const [worker, name] of [["w1", "a"], ["w2", "b"]]) {
      await store.popBuild(worker, ["x86_64-linux"], 2);
      await store.markStarted(drv(name), worker, `/logs/${name}.log.gz`, 3);
    }
    const logOf = async (name: string) =>
      (await store.getBuildByDerivation(drv(name)))?.log;
    assert.equal(await logOf("a"), "/logs/a.log.gz");
    // Its worker lost: the file at that path is the lost attempt's log.
    assert.ok(await store.requeueBuild(drv("a"), 4, { worker: "w1" }));
    assert.equal(await logOf("a"), "");
    assert.equal(await store.requeueWorkerBuilds("w2", 4), 1);
    assert.equal(await logOf("b"), "");
  });

  test("C05: restarting a failed dependency and having it succeed makes its dependent eligible again", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [
      job("A"),
      job("B", { drv: "B1" }),
      job("P", { inputs: ["A", "B1"] }),
      job("Q", { inputs: ["P"] }),
      job("R", { inputs: ["P", "other"] }),
      job("other"),
    ], 1);
    await store.completeBuild(drv("B1"), 0, { now: 2 });
    await store.completeBuild(drv("other"), 1, { now: 2 });
    await store.completeBuild(drv("A"), 1, { now: 3 });
    assert.equal(await status(store, "P"), BuildStatus.failedDependency);
    assert.equal(await status(store, "Q"), BuildStatus.failedDependency);

    // Evaluation 2: B changed, A is byte-identical: P2 fails at once.
    const e2 = await evaluation(store);
    await register(store, e2, [
      job("A"),
      job("B", { drv: "B2" }),
      job("P", { drv: "P2", inputs: ["A", "B2"] }),
    ], 4);
    assert.equal(await status(store, "P2"), BuildStatus.failedDependency);
    const a = await idOf(store, "A");
    assert.deepEqual(
      (await store.pendingDependencies(await idOf(store, "P2"))).map((d) =>
        d.id
      ),
      [a, await idOf(store, "B2")],
    );
    await store.completeBuild(drv("B2"), 0, { now: 5 });
    assert.deepEqual(await store.pendingDependencies(await idOf(store, "P2")), [
      { id: a, status: BuildStatus.failed, system: "x86_64-linux" },
    ]);

    assert.equal((await store.restartBuild(a, 6)).changed, true);
    // P and Q are eligible again; R still has a failed dependency.
    assert.equal(await status(store, "P"), BuildStatus.scheduled);
    assert.equal(await status(store, "Q"), BuildStatus.scheduled);
    assert.equal(await status(store, "R"), BuildStatus.failedDependency);
    assert.equal(
      (await store.popBuild("w", ["x86_64-linux"], 7))?.jobName,
      "A",
    );
    assert.equal(await store.popBuild("w", ["x86_64-linux"], 7), null);
    await store.completeBuild(drv("A"), 0, { worker: "w", now: 8 });
    const next = [];
    for (;;) {
      const build = await store.popBuild("w", ["x86_64-linux"], 9);
      if (build === null) break;
      next.push(build.derivation);
      await store.completeBuild(build.derivation, 0, { worker: "w", now: 9 });
    }
    assert.deepEqual(next, [drv("P"), drv("Q"), drv("P2")]);
  });

  test("restartEvaluation() makes the dependents of its succeeded builds, in any evaluation, wait for them again", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [job("lib"), job("tool")], 1);
    // "app" is the later evaluation's, and depends on both.
    const e2 = await evaluation(store);
    await register(store, e2, [
      job("lib"),
      job("tool"),
      job("app", { inputs: ["lib", "tool"] }),
    ], 2);
    await store.completeBuild(drv("lib"), 0, { now: 3 });
    await store.completeBuild(drv("tool"), 0, { now: 3 });
    assert.equal((await store.restartEvaluation(e1, 4)).changed, 2);
    const pop = async (worker: string) =>
      (await store.popBuild(worker, ["x86_64-linux"], 5))?.jobName ?? null;
    assert.deepEqual([await pop("w1"), await pop("w2"), await pop("w3")], [
      "lib",
      "tool",
      null,
    ]);
    await store.completeBuild(drv("lib"), 0, { worker: "w1", now: 6 });
    assert.equal(await pop("w3"), null);
    await store.completeBuild(drv("tool"), 0, { worker: "w2", now: 7 });
    assert.equal(await pop("w3"), "app");
  });

  test("cancelEvaluation() and restartEvaluation() act on the builds it created", async (store) => {
    const e1 = await evaluation(store);
    await register(store, e1, [job("old"), job("oldDone")], 1);
    await store.completeBuild(drv("oldDone"), 1, { now: 2 });
    const e2 = await evaluation(store);
    await register(store, e2, [
      job("old"),
      job("new1"),
      job("new2", { inputs: ["new1"] }),
      job("finished"),
    ], 3);
    const e3 = await evaluation(store);
    await register(store, e3, [job("later", { inputs: ["new1"] })], 4);
    await store.completeBuild(drv("finished"), 0, { now: 5 });
    await store.popBuild("w", ["x86_64-linux"], 6); // old, from e1

    assert.deepEqual(await store.cancelEvaluation(e2, 7), {
      changed: 2,
      held: [],
    });
    assert.equal(await status(store, "old"), BuildStatus.submitted);
    assert.equal(await status(store, "new1"), BuildStatus.canceled);
    assert.equal(await status(store, "new2"), BuildStatus.canceled);
    assert.equal(await status(store, "later"), BuildStatus.failedDependency);
    assert.equal(await status(store, "finished"), BuildStatus.succeeded);
    assert.equal((await store.cancelEvaluation(e2, 8)).changed, 0);

    assert.deepEqual(await store.restartEvaluation(e2, 9), {
      changed: 3,
      held: [],
    });
    for (const name of ["new1", "new2", "finished", "later"]) {
      assert.equal(await status(store, name), BuildStatus.scheduled, name);
    }
    assert.equal(await status(store, "old"), BuildStatus.submitted);
    assert.equal(await status(store, "oldDone"), BuildStatus.failed);
    assert.equal((await store.restartEvaluation(e2, 10)).changed, 0);
    // new2 waits for new1 again.
    const popped = [];
    for (;;) {
      const build = await store.popBuild("w", ["x86_64-linux"], 11);
      if (build === null) break;
      popped.push(build.jobName);
    }
    assert.deepEqual(popped, ["new1", "finished"]);
  });

  test("cancelEvaluation() and restartEvaluation() name the workers of the held builds they change", async (store) => {
    const other = await evaluation(store);
    await store.registerBuilds(other, [job("elsewhere")], {
      priority: 1,
      now: 1,
    });
    const id = await evaluation(store);
    await register(store, id, [
      job("submitted"),
      job("started"),
      job("waiting"),
      job("done"),
    ], 2);
    const idOf = async (base: string) =>
      (await store.getBuildByDerivation(drv(base)))!.id;
    // Priority 1 first: the other evaluation's build is held too.
    assert.equal(
      (await store.popBuild("w0", ["x86_64-linux"], 3))?.derivation,
      drv("elsewhere"),
    );
    assert.equal(
      (await store.popBuild("w1", ["x86_64-linux"], 3))?.derivation,
      drv("submitted"),
    );
    assert.equal(
      (await store.popBuild("w2", ["x86_64-linux"], 3))?.derivation,
      drv("started"),
    );
    assert.equal(await store.markStarted(drv("started"), "w2", "l", 4), true);
    await store.completeBuild(drv("done"), 1, { now: 5 });

    assert.deepEqual(await store.cancelEvaluation(id, 6), {
      changed: 3,
      held: [
        {
          id: await idOf("submitted"),
          derivation: drv("submitted"),
          worker: "w1",
        },
        { id: await idOf("started"), derivation: drv("started"), worker: "w2" },
      ],
    });
    assert.equal(await status(store, "elsewhere"), BuildStatus.submitted);
    // Canceled builds are held by no one: restarting them names no worker.
    assert.deepEqual(await store.restartEvaluation(id, 7), {
      changed: 4,
      held: [],
    });
    assert.equal(
      (await store.popBuild("w3", ["x86_64-linux"], 8))?.derivation,
      drv("submitted"),
    );
    assert.deepEqual(await store.restartEvaluation(id, 9), {
      changed: 1,
      held: [
        {
          id: await idOf("submitted"),
          derivation: drv("submitted"),
          worker: "w3",
        },
      ],
    });
    assert.equal(await status(store, "submitted"), BuildStatus.scheduled);
    assert.equal(
      (await store.getBuildByDerivation(drv("submitted")))?.worker,
      null,
    );
    assert.equal(
      (await store.getBuildByDerivation(drv("elsewhere")))?.worker,
      "w0",
    );
  });

  test("queueLengthBySystem() counts scheduled builds per system", async (store) => {
    assert.deepEqual(await store.queueLengthBySystem(), new Map());
    const id = await evaluation(store);
    await register(store, id, [
      job("a"),
      job("b"),
      job("c"),
      job("arm", { system: "aarch64-linux" }),
    ], 1);
    await store.popBuild("w", ["x86_64-linux"], 2);
    await store.completeBuild(drv("c"), 0, { now: 3 });
    assert.deepEqual(
      await store.queueLengthBySystem(),
      new Map([["aarch64-linux", 1], ["x86_64-linux", 1]]),
    );
  });

  /** Stores specification "guix" notifying `sinks`; returns it. */
  async function notifying(
    store: Store,
    sinks: Specification["notifications"],
  ): Promise<Specification> {
    const spec = { ...specification("guix"), notifications: sinks };
    await store.upsertSpecification(spec);
    return spec;
  }

  /**
   * One evaluation of "guix" per entry of `finals`, at times 0, 1, ...,
   * each with a build of job "hello" (derivation `${tag}${index}`) that
   * ends with that status at 10 + index: a history of weathers, hence of
   * notifications. Returns the derivations in order.
   */
  async function helloHistory(
    store: Store,
    tag: string,
    finals: BuildStatus[],
  ): Promise<string[]> {
    const builds = [];
    for (const [index, final] of finals.entries()) {
      const id = await store.addEvaluation("guix", [], index);
      await register(
        store,
        id,
        [job("hello", { drv: `${tag}${index}` })],
        index,
      );
      await store.completeBuild(drv(`${tag}${index}`), final, {
        now: 10 + index,
      });
      builds.push(drv(`${tag}${index}`));
    }
    return builds;
  }

  test("popNotifications() takes queued notifications on a change of weather", async (store) => {
    const spec = await notifying(store, [
      { type: "email", to: "a@example.invalid" },
      { type: "mastodon", instance: "example.invalid" },
    ]);
    // succeed (no previous), fail (new failure), fail (still failing),
    // succeed (new success).
    const weathers = [];
    for (const build of await helloHistory(store, "h", [0, 1, 1, 0])) {
      weathers.push((await store.getBuildByDerivation(build))?.weather);
    }
    assert.deepEqual(weathers, [
      Weather.unknown,
      Weather.newFailure,
      Weather.stillFailing,
      Weather.newSuccess,
    ]);
    const first = await store.popNotifications(3, 100);
    assert.deepEqual(
      first.map((n) => [n.sink.type, n.build.derivation, n.build.weather]),
      [
        ["email", drv("h1"), Weather.newFailure],
        ["mastodon", drv("h1"), Weather.newFailure],
        ["email", drv("h3"), Weather.newSuccess],
      ],
    );
    assert.deepEqual(first[0].sink, spec.notifications[0]);
    assert.ok(first[0].id < first[1].id && first[1].id < first[2].id);
    const rest = await store.popNotifications(10, 100);
    assert.deepEqual(rest.map((n) => [n.sink.type, n.build.derivation]), [
      ["mastodon", drv("h3")],
    ]);
    assert.deepEqual(await store.popNotifications(10, 100), []);
  });

  test("popNotifications() leaves them queued until finishNotifications(), and a claim an hour old is taken again", async (store) => {
    await notifying(store, [{ type: "email", to: "a@example.invalid" }]);
    await helloHistory(store, "l", [0, 1, 0]);
    const taken = await store.popNotifications(10, 1000);
    assert.equal(taken.length, 2);
    // Claimed: another sender (or this one) does not take them again...
    assert.deepEqual(await store.popNotifications(10, 1000 + 3599), []);
    await store.finishNotifications([taken[0].id]);
    // ...until the claim is an hour old: its sender died with it.
    const again = await store.popNotifications(10, 1000 + 3600);
    assert.deepEqual(again.map((n) => n.id), [taken[1].id]);
    await store.finishNotifications([taken[1].id]);
    assert.deepEqual(await store.popNotifications(10, 1000 + 9999), []);
  });

  test("returnNotifications() puts taken notifications back under their ids", async (store) => {
    await notifying(store, [{ type: "email", to: "a@example.invalid" }]);
    await helloHistory(store, "r", [0, 1]);
    const taken = await store.popNotifications(10, 100);
    assert.equal(taken.length, 1);
    assert.deepEqual(await store.popNotifications(10, 100), []);
    assert.equal(await store.returnNotifications(taken), 1);
    // Returned twice (two stopping senders): queued once.
    assert.equal(await store.returnNotifications(taken), 0);
    const again = await store.popNotifications(10, 100);
    assert.deepEqual(
      again.map((n) => [n.id, n.sink, n.build.derivation]),
      taken.map((n) => [n.id, n.sink, n.build.derivation]),
    );
    // A build deleted meanwhile has nothing left to notify about.
    const gone = { ...taken[0], build: { ...taken[0].build, id: 999_999 } };
    assert.equal(await store.returnNotifications([gone]), 0);
  });
}
