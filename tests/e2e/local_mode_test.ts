// The demo specification end to end in local mode: the store, the
// evaluation runner and the local builder composed here, the fake guix
// underneath; the outcome must be the remote mode's (demo/expected.json).

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { systemClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";
import { guixSpawner } from "../../lib/guix/build_events.ts";
import { GcRoots } from "../../lib/guix/gc_roots.ts";
import { Guix } from "../../lib/guix/guix_command.ts";
import { runEvaluation } from "../../lib/server/evaluation_runner.ts";
import { LocalBuilder } from "../../lib/server/local_builder.ts";
import { readSpecificationFile } from "../../lib/spec/read_spec.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { buildStatusName, EvaluationStatus } from "../../lib/store/types.ts";
import { GUIX, makeDaemon, makeRoot } from "../fake-guix/test_env.ts";
import { gunzipSync } from "node:zlib";
import { C10_LOG, includesBytes } from "../fixtures/c10_log.ts";

const DEMO = fromFileUrl(new URL("../../demo", import.meta.url));

Deno.test({
  name:
    "the demo specification builds in local mode with the remote mode's outcome",
  async fn() {
    const expected: Record<string, string> = JSON.parse(
      await Deno.readTextFile(`${DEMO}/expected.json`),
    );
    const root = await makeRoot();
    const daemon = await makeDaemon(root, "local", {
      FAKE_GUIX_SCENARIO: `${DEMO}/scenario.json`,
    });
    const store = openSqliteStore(`${root}/lorica.db`);
    const abort = new AbortController();
    try {
      const [spec] = await readSpecificationFile(`${DEMO}/demo-spec.scm`);
      await store.upsertSpecification(spec);
      const roots = new GcRoots({
        directory: `${daemon.stateDir}/gcroots/profiles/per-user/ci/lorica`,
        storeDir: daemon.storeDir,
        clock: systemClock,
        logger: silentLogger,
      });
      const evaluation = await runEvaluation(spec, {
        store,
        guix: new Guix({
          command: GUIX,
          env: daemon.env,
          logger: silentLogger,
        }),
        clock: systemClock,
        logger: silentLogger,
        stateDir: `${root}/state`,
        gcRoots: roots,
      });
      assert.equal(evaluation.status, EvaluationStatus.succeeded);

      const builder = new LocalBuilder({
        store,
        spawnGuix: guixSpawner({ command: GUIX, env: daemon.env }),
        clock: systemClock,
        logger: silentLogger,
        logCacheDir: `${root}/logs`,
        storeDir: daemon.storeDir,
        systems: "all",
        maxJobs: 4,
        concurrency: 2,
        pollSeconds: 0.5,
        gcRoots: roots,
      });
      const running = builder.run(abort.signal);
      const total = Object.keys(expected).length;
      for (let i = 0; i < 300; i++) {
        const pending = await store.queue({}, 1000);
        const finished = await store.latestBuilds({}, 1000);
        if (pending.length === 0 && finished.length >= total) break;
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      abort.abort();
      await running;

      const outcome: Record<string, string> = {};
      for (const build of await store.latestBuilds({}, 1000)) {
        outcome[build.jobName] = buildStatusName(build.status);
      }
      assert.deepEqual(outcome, expected);
      // Every succeeded build's outputs are valid in the daemon's store.
      for (const build of await store.latestBuilds({}, 1000)) {
        if (build.status !== 0) continue;
        const check = await new Deno.Command(GUIX, {
          args: ["gc", "--references", build.outputs[0].path],
          env: daemon.env,
          stdout: "null",
          stderr: "null",
        }).output();
        assert.ok(check.success, `${build.jobName}: output not valid`);
        assert.notEqual(build.log, "");
      }
      // C10: the build whose log is not UTF-8 succeeded (above), and its
      // log file kept the bytes.
      const [unreadable] = await store.latestBuilds(
        { job: "libunistring.x86_64-linux" },
        1,
      );
      const file = await Deno.readFile(unreadable.log);
      const log = file[0] === 0x1f && file[1] === 0x8b
        ? new Uint8Array(gunzipSync(file))
        : file;
      assert.ok(includesBytes(log, C10_LOG), "C10 bytes changed");
      // The specification's build output became a build product.
      const [unistring] = await store.latestBuilds(
        { job: "libunistring.x86_64-linux" },
        1,
      );
      assert.deepEqual(
        unistring.products?.map((p) => [p.type, p.path.split("/").slice(-3)]),
        [["data", ["share", "libunistring-1.3", "data"]]],
      );
    } finally {
      abort.abort();
      await store.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
