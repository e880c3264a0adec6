// C14: a queued derivation must not be garbage-collected; if it vanishes
// anyway, only its build fails, with a clear reason.

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath as fromFileUrl } from "node:url";
import { type Farm, startFarm } from "../../demo/farm.ts";
import { type Clock, systemClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { GcRoots } from "../../lib/guix/gc_roots.ts";
import {
  keepPendingDerivations,
  runEvaluation,
} from "../../lib/server/evaluation_runner.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { BuildStatus } from "../../lib/store/types.ts";
import {
  guix,
  makeDaemon,
  makeRoot,
  writeScenario,
} from "../fake-guix/test_env.ts";
import {
  evaluationOptions,
  fakeGuix,
  fakeLocalBuilder,
  gunzip,
  testSpecification,
} from "../lib/server/_guix_fixture.ts";
import {
  eventually,
  fakeSpawner,
  FakeWorker,
  job,
  startFixture,
} from "../lib/server/_dispatch_fixture.ts";
import { closing } from "../lib/worker/_session_helpers.ts";

const SPEC = testSpecification("c14");

Deno.test("C14: pending derivations keep their roots; a vanished one fails alone", async () => {
  const root = await makeRoot();
  const daemon = await makeDaemon(root, "local", {
    FAKE_GUIX_SCENARIO: await writeScenario(root, {
      packages: [
        { name: "t", version: "1", behaviour: { seconds: 0 } },
        { name: "u", version: "1", behaviour: { seconds: 0 } },
      ],
    }),
  });
  const store = openSqliteStore(`${root}/lorica.db`);
  const rootsAt = (clock: Clock) =>
    new GcRoots({
      // Inside the fake daemon's gcroots, so that `guix gc` honours them.
      directory: `${daemon.stateDir}/gcroots/profiles/per-user/ci/lorica`,
      storeDir: daemon.storeDir,
      clock,
      logger: silentLogger,
    });
  const roots = rootsAt(systemClock);
  const aged = rootsAt({ ...systemClock, now: () => Date.now() + 3600_000 });
  const expiry = {
    ttlSeconds: 1,
    keepDerivation: keepPendingDerivations(store),
  };
  try {
    await store.upsertSpecification(SPEC);
    const evaluation = await runEvaluation(SPEC, {
      ...evaluationOptions(root, store, fakeGuix(daemon)),
      gcRoots: roots,
    });
    const [t, u] = evaluation.derivations.sort((a, b) =>
      a.endsWith("-t-1.drv") ? -1 : b.endsWith("-t-1.drv") ? 1 : 0
    );
    assert.match(t, /-t-1\.drv$/);

    // With a 1 s TTL long past, the roots of scheduled builds stay.
    assert.deepEqual(await aged.expire(expiry), { removed: 0, kept: 2 });
    const alive = await guix(daemon, ["gc", "-D", u]);
    assert.equal(alive.code, 1);
    assert.match(
      alive.stderr,
      /cannot delete path `.*' since it is still alive/,
    );

    // A cleanup job outside Lorica removes t's root, then the GC takes t.
    await roots.unregister([t]);
    const deleted = await guix(daemon, ["gc", "-D", t]);
    assert.equal(deleted.code, 0, deleted.stderr);

    const builder = fakeLocalBuilder(root, store, daemon, { gcRoots: roots });
    const summary = await builder.buildBatch(await builder.takeBatch());
    assert.equal(summary.missing, 1);
    assert.equal(summary.succeeded, 1);
    const tBuild = (await store.getBuildByDerivation(t))!;
    const uBuild = (await store.getBuildByDerivation(u))!;
    assert.equal(tBuild.status, BuildStatus.failedOther);
    assert.equal(
      await gunzip(tBuild.log),
      `lorica: derivation missing from store: ${t}\n`,
    );
    assert.equal(uBuild.status, BuildStatus.succeeded);
    assert.ok((await roots.list()).includes(uBuild.outputs[0].path));

    // Finished builds age out: their .drv and output roots go.
    assert.deepEqual(await aged.expire(expiry), { removed: 2, kept: 0 });
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});

// Remote mode, server side: the dispatcher and the output fetcher with a
// store whose derivations the test removes, and workers speaking Cuirass.

/** A store seen by the server: present unless the test removed the drv. */
function storeWithout(gone: Set<string>) {
  return (path: string) => Promise.resolve(!gone.has(path));
}

/**
 * Whether `lines` (the server's) say the build of `drv` failed because its
 * .drv is missing from the store; by `worker`, if given.
 */
function loggedMissing(lines: string[], drv: string, worker?: string) {
  const failed = `warn build failed drv=${drv} ` +
    (worker === undefined ? "" : `worker=${worker} `);
  return lines.some((line) =>
    line.startsWith(failed) &&
    line.includes(' reason="derivation missing from store"')
  );
}

Deno.test({
  name:
    "C14 (remote): a build whose .drv vanished before dispatch fails alone, failed-other; the worker gets the next build",
  async fn() {
    const gone = new Set<string>();
    await using f = closing(
      await startFixture({ inStore: storeWithout(gone) }),
    );
    const [t] = await f.addJobs([job("t", 1)], 0);
    const [u, dependent] = await f.addJobs([
      job("u", 2),
      job("needs-t", 3, "x86_64-linux", [t]),
    ]);
    gone.add(t);

    // A plain Cuirass worker: no Lorica extensions.
    const worker = await FakeWorker.connect(f.port);
    await worker.ready();
    const reply = await worker.requestWork();
    assert.equal(reply.type, "build");
    assert.equal((reply as { drv: string }).drv, u);

    assert.equal(await f.status(t), BuildStatus.failedOther);
    assert.equal(await f.status(dependent), BuildStatus.failedDependency);
    const tBuild = (await f.store.getBuildByDerivation(t))!;
    assert.equal(
      await gunzip(tBuild.log),
      `lorica: derivation missing from store: ${t}\n`,
    );
    assert.ok(loggedMissing(f.lines, t), f.lines.join("\n"));
    await worker.close();
  },
});

Deno.test({
  name:
    "C14 (remote): a Cuirass worker's build-failed for a .drv gone since dispatch is failed-other",
  async fn() {
    const gone = new Set<string>();
    await using f = closing(
      await startFixture({ inStore: storeWithout(gone) }),
    );
    const [t, dependent] = await f.addJobs([
      job("t", 1),
      job("needs-t", 2, "x86_64-linux", [job("t", 1).derivation]),
    ]);
    const worker = await FakeWorker.connect(f.port);
    await worker.ready();
    const reply = await worker.requestWork();
    assert.equal((reply as { drv: string }).drv, t);
    gone.add(t);
    await worker.send({ type: "build-started", drv: t, worker: worker.name });
    await worker.send({
      type: "build-failed",
      drv: t,
      url: "http://127.0.0.1:1",
      log: null,
    });
    await eventually(
      async () => (await f.status(t)) === BuildStatus.failedOther,
      "t failed-other",
    );
    assert.equal(await f.status(dependent), BuildStatus.failedDependency);
    assert.ok(
      loggedMissing(f.lines, t, worker.name),
      f.lines.join("\n"),
    );
    await worker.close();
  },
});

Deno.test({
  name:
    "C14 (remote): a .drv gone after build-succeeded fails its build at once, unfetched; the other fetch goes on",
  async fn() {
    const gone = new Set<string>();
    const calls: string[][] = [];
    await using f = closing(
      await startFixture({
        inStore: storeWithout(gone),
        spawner: fakeSpawner(() => ({ code: 0 }), calls),
      }),
    );
    const [t, u] = await f.addJobs([job("t", 1), job("u", 2)]);
    const first = await FakeWorker.connect(f.port);
    const second = await FakeWorker.connect(f.port);
    await first.ready();
    await second.ready();
    const given = [
      (await first.requestWork() as { drv: string }).drv,
      (await second.requestWork() as { drv: string }).drv,
    ];
    assert.deepEqual(given.toSorted(), [t, u].toSorted());
    gone.add(t);
    for (
      const [worker, drv] of [[first, given[0]], [second, given[1]]] as const
    ) {
      await worker.send({ type: "build-started", drv, worker: worker.name });
      await worker.send({
        type: "build-succeeded",
        drv,
        url: "http://127.0.0.1:1",
        log: null,
      });
    }
    await eventually(
      async () =>
        (await f.status(t)) === BuildStatus.failedOther &&
        (await f.status(u)) === BuildStatus.succeeded,
      "t failed-other and u succeeded",
    );
    assert.ok(
      !calls.some((argv) => argv.includes(t)),
      "no substitution of the vanished derivation's outputs",
    );
    assert.ok(calls.some((argv) => argv.includes(u)));
    assert.ok(loggedMissing(f.lines, t), f.lines.join("\n"));
    await first.close();
    await second.close();
  },
});

// Remote mode end to end: a server and a worker as processes on the fake
// guix (demo/farm.ts), the .drv garbage-collected by the server's daemon.

const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
const FARM_SCENARIO = {
  packages: [
    { name: "t", version: "1", behaviour: { seconds: 0.2, logLines: 2 } },
    { name: "u", version: "1", behaviour: { seconds: 0.2, logLines: 2 } },
    {
      name: "needs-t",
      version: "1",
      inputs: ["t"],
      behaviour: { seconds: 0.2, logLines: 2 },
    },
  ],
};
// A local channel only: the farm replaces it with a repository of its own.
const FARM_SPEC = `(list (specification
  (name "c14")
  (build 'all)
  (channels (list (channel (name 'guix) (url "file:///nonexistent/guix")
                           (branch "main"))))
  (priority 2)
  (systems (list "x86_64-linux"))))
`;

interface BuildRow {
  derivation: string;
  status: number;
  log: string;
}

/** Every build of the farm's database, read-only (the server writes it). */
function farmBuilds(farm: Farm): BuildRow[] {
  try {
    const db = new DatabaseSync(farm.database, { readOnly: true });
    try {
      return db.prepare("SELECT derivation, status, log FROM Builds")
        .all() as unknown as BuildRow[];
    } finally {
      db.close();
    }
  } catch {
    return []; // Not created yet.
  }
}

/** Polls `check` every 200 ms for at most `seconds`; fails naming `what`. */
async function waitFor(
  seconds: number,
  what: string,
  check: () => boolean | Promise<boolean>,
) {
  const deadline = Date.now() + seconds * 1000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not after ${seconds} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/**
 * A farm of one server and one held worker (started by the test) that has
 * registered the three builds; `body` gets it and the builds by name.
 */
async function withC14Farm(
  body: (farm: Farm, drvs: Record<string, string>) => Promise<void>,
) {
  const root = await Deno.makeTempDir({ prefix: "lorica-c14-" });
  await Deno.writeTextFile(`${root}/c14.scm`, FARM_SPEC);
  await writeScenario(root, FARM_SCENARIO, "c14.json");
  const farm = await startFarm({
    root,
    specFile: `${root}/c14.scm`,
    scenarioFile: `${root}/c14.json`,
    workers: [{ systems: ["x86_64-linux"], sessions: 1, held: true }],
    webPort: 0,
    requestPeriod: 1,
  });
  try {
    await waitFor(120, "three builds registered", () => {
      return farmBuilds(farm).length === 3;
    });
    const drvs: Record<string, string> = {};
    for (const { derivation } of farmBuilds(farm)) {
      const name = derivation.match(/-([a-z-]+)-1\.drv$/)![1];
      drvs[name] = derivation;
    }
    await body(farm, drvs);
  } finally {
    await farm.stop();
    await Deno.remove(root, { recursive: true });
  }
}

/**
 * What a cleanup job and `guix gc -D` do to `drv` on the server: every
 * root of the farm goes (the .drv files of its dependents, which refer to
 * it, would keep it alive), then `drv` alone is collected.
 */
async function collectDerivation(farm: Farm, drv: string) {
  const roots = `${farm.root}/server/daemon/gcroots/lorica`;
  for await (const entry of Deno.readDir(roots)) {
    await Deno.remove(`${roots}/${entry.name}`);
  }
  const gc = await new Deno.Command(`${REPO}/tests/fake-guix/guix`, {
    args: ["gc", "-D", drv],
    env: farm.guixEnv("server"),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(gc.success, new TextDecoder().decode(gc.stderr));
  await assert.rejects(Deno.lstat(drv), Deno.errors.NotFound);
}

/** Status by build name, once all three builds are finished. */
async function finalStatuses(
  farm: Farm,
  drvs: Record<string, string>,
): Promise<Record<string, number>> {
  await waitFor(180, "every build finished", () => {
    const rows = farmBuilds(farm);
    return rows.length === 3 && rows.every((row) => row.status >= 0);
  });
  const byDrv = new Map(farmBuilds(farm).map((row) => [row.derivation, row]));
  return Object.fromEntries(
    Object.entries(drvs).map(([name, drv]) => [name, byDrv.get(drv)!.status]),
  );
}

Deno.test({
  name:
    "C14 (remote farm): a .drv garbage-collected before any worker takes it fails alone, failed-other, and is never handed out",
  async fn() {
    await withC14Farm(async (farm, drvs) => {
      await collectDerivation(farm, drvs.t);
      await farm.restart("worker1");

      assert.deepEqual(await finalStatuses(farm, drvs), {
        t: BuildStatus.failedOther,
        u: BuildStatus.succeeded,
        "needs-t": BuildStatus.failedDependency,
      });
      const t = farmBuilds(farm).find((row) => row.derivation === drvs.t)!;
      assert.equal(
        await gunzip(t.log),
        `lorica: derivation missing from store: ${drvs.t}\n`,
      );
      const server = await Deno.readTextFile(farm.logFile("server"));
      assert.match(
        server,
        new RegExp(
          `warn build failed part=dispatch drv=${drvs.t} .*reason="derivation missing from store"`,
        ),
      );
      const worker = await Deno.readTextFile(farm.logFile("worker1"));
      assert.ok(!worker.includes(drvs.t), "t was handed out");
      assert.match(worker, new RegExp(`build done worker=\\S+ drv=${drvs.u}`));
    });
  },
});

Deno.test({
  name:
    "C14 (remote farm): a .drv deleted after build-succeeded, before its outputs are fetched, fails alone; the other fetches go on",
  async fn() {
    await withC14Farm(async (farm, drvs) => {
      // Until the ACL is back, the server refuses the worker's signatures:
      // the fetch of each result is retried, the .drv still needed.
      const acl = `${farm.root}/server/etc/acl`;
      const trusted = await Deno.readTextFile(acl);
      await Deno.remove(acl);
      await farm.restart("worker1");
      await waitFor(120, "the fetch of t retried", async () => {
        const server = await Deno.readTextFile(farm.logFile("server"));
        return server.includes(`output fetch retried part=fetch drv=${drvs.t}`);
      });
      await collectDerivation(farm, drvs.t);
      await Deno.writeTextFile(acl, trusted);

      assert.deepEqual(await finalStatuses(farm, drvs), {
        t: BuildStatus.failedOther,
        u: BuildStatus.succeeded,
        "needs-t": BuildStatus.failedDependency,
      });
      const server = await Deno.readTextFile(farm.logFile("server"));
      assert.match(
        server,
        new RegExp(
          `warn build failed part=fetch drv=${drvs.t} worker=\\S+ reason="derivation missing from store"`,
        ),
      );
      const worker = await Deno.readTextFile(farm.logFile("worker1"));
      assert.match(worker, new RegExp(`build done worker=\\S+ drv=${drvs.t}`));
    });
  },
});
