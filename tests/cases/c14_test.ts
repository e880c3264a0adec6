// C14: a queued derivation must not be garbage-collected; if it vanishes
// anyway, only its build fails, with a clear reason.

import assert from "node:assert/strict";
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
