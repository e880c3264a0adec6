// C14: a queued derivation must not be garbage-collected; if it vanishes
// anyway, only its build fails, with a clear reason.

import assert from "node:assert/strict";
import { type Clock, systemClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { guixSpawner } from "../../lib/guix/build_events.ts";
import { GcRoots } from "../../lib/guix/gc_roots.ts";
import { Guix } from "../../lib/guix/guix_command.ts";
import {
  keepPendingDerivations,
  runEvaluation,
} from "../../lib/server/evaluation_runner.ts";
import { LocalBuilder } from "../../lib/server/local_builder.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { BuildStatus, type Specification } from "../../lib/store/types.ts";
import {
  GUIX,
  guix,
  makeDaemon,
  makeRoot,
  writeScenario,
} from "../fake-guix/test_env.ts";

const SPEC: Specification = {
  name: "c14",
  build: { type: "all", params: [] },
  channels: [{
    name: "guix",
    url: "https://git.example.org/guix.git",
    branch: "master",
    commit: "0123456789abcdef0123456789abcdef01234567",
    introduction: null,
  }],
  buildOutputs: [],
  notifications: [],
  period: 0,
  priority: 9,
  systems: ["x86_64-linux"],
  isActive: true,
};

async function gunzip(path: string): Promise<string> {
  const file = await Deno.open(path);
  return await new Response(
    file.readable.pipeThrough(new DecompressionStream("gzip")),
  ).text();
}

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
      store,
      guix: new Guix({ command: GUIX, env: daemon.env, logger: silentLogger }),
      clock: systemClock,
      logger: silentLogger,
      stateDir: `${root}/state`,
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

    const builder = new LocalBuilder({
      store,
      spawnGuix: guixSpawner({ command: GUIX, env: daemon.env }),
      clock: systemClock,
      logger: silentLogger,
      logCacheDir: `${root}/logs`,
      storeDir: daemon.storeDir,
      systems: ["x86_64-linux"],
      gcRoots: roots,
    });
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
