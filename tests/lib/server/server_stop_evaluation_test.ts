// A clean stop of the whole server while an evaluation registers its
// builds: the stop waits for the chunk being written, not for the rest of
// the registration (at 250,000 jobs, longer than systemd's stop timeout).

import assert from "node:assert/strict";
import { startServer } from "../../../lib/server/server.ts";
import { REGISTRATION_CHUNK_JOBS } from "../../../lib/store/chunked_registration.ts";
import { EvaluationStatus, type Store } from "../../../lib/store/types.ts";
import { FakeClock } from "./_dispatch_fixture.ts";
import { fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";
import { linesLogger, testServerConfig } from "./_test_server.ts";

const SPEC = testSpecification("s");

Deno.test({
  name:
    "server.stop() during the registration of an evaluation's builds ends it after the chunk being written, aborted",
  async fn() {
    const count = REGISTRATION_CHUNK_JOBS + 1;
    const farm = await fakeGuixFarm(SPEC, {
      packages: Array.from(
        { length: count },
        (_, i) => ({ name: `p${i}`, version: "1" }),
      ),
    }, { daemonName: "server" });
    const firstChunk = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    let registrations = 0;
    const store: Store = {
      ...farm.store,
      // The first chunk is held until the stop has been asked for.
      async registerBuilds(id, jobs, options) {
        if (++registrations === 1) {
          firstChunk.resolve();
          await release.promise;
        }
        return await farm.store.registerBuilds(id, jobs, options);
      },
    };
    const lines: string[] = [];
    const server = await startServer(
      testServerConfig(farm.root, { storeDir: farm.daemon.storeDir }),
      {
        store,
        guix: farm.options.guix,
        logger: linesLogger(lines),
        clock: new FakeClock(),
      },
    );
    let stopped = false;
    try {
      // Without channel polling, the specification is evaluated once.
      await server.refreshSpecifications();
      await firstChunk.promise;
      const stopping = server.stop();
      release.resolve();
      await stopping;
      stopped = true;

      assert.equal(registrations, 1);
      const [evaluation] = await farm.store.listEvaluations({
        specification: "s",
        limit: 1,
      });
      assert.equal(evaluation.status, EvaluationStatus.aborted);
      assert.equal(
        (await farm.store.listJobs(evaluation.id)).length,
        REGISTRATION_CHUNK_JOBS,
      );
      const text = lines.join("\n");
      assert.match(
        text,
        new RegExp(
          `^warn evaluation registration stopped .*evaluation=${evaluation.id} ` +
            `.*registered=${REGISTRATION_CHUNK_JOBS} jobs=${count} `,
          "m",
        ),
      );
      assert.ok(lines.at(-1)?.startsWith("info server stopped"), text);
    } finally {
      release.resolve();
      if (!stopped) await server.stop();
      await farm.close();
    }
  },
});
