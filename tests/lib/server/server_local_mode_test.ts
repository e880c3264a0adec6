// The server in local mode, driven through its web interface: the admin
// actions reach the batches its daemon is building.

import assert from "node:assert/strict";
import { spawnProcess } from "../../../lib/process.ts";
import { runEvaluation } from "../../../lib/server/evaluation_runner.ts";
import { startServer } from "../../../lib/server/server.ts";
import { buildStatusName } from "../../../lib/store/types.ts";
import { processExists as alive } from "../../_processes.ts";
import { FakeClock } from "./_dispatch_fixture.ts";
import { fakeGuix, fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";
import { linesLogger, testServerConfig } from "./_test_server.ts";

const SPEC = testSpecification("local");
const TOKEN = "s3cret-token";

/** Waits (up to 20 s) until `check` holds. */
async function until(check: () => Promise<boolean> | boolean, what: string) {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `${what} never happened`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test({
  name:
    "POST /admin/evaluation/ID/cancel in local mode stops the build driver building the evaluation's builds",
  async fn() {
    const farm = await fakeGuixFarm(SPEC, {
      packages: [{
        name: "long",
        version: "1",
        behaviour: { seconds: 3600, logLines: 1 },
      }],
    });
    const drivers: number[] = [];
    const guix = fakeGuix(farm.daemon, (argv, options) => {
      const child = spawnProcess(argv, options);
      if (argv[1] === "repl" && !argv.includes("--query")) {
        drivers.push(child.pid);
      }
      return child;
    });
    const lines: string[] = [];
    let server: Awaited<ReturnType<typeof startServer>> | null = null;
    try {
      const evaluation = await runEvaluation(SPEC, farm.options);
      // The clock never moves: no periodic look at the database stops the
      // driver in its place.
      server = await startServer(
        testServerConfig(farm.root, {
          mode: "local",
          storeDir: farm.daemon.storeDir,
          adminToken: TOKEN,
        }),
        {
          store: farm.store,
          guix,
          logger: linesLogger(lines),
          clock: new FakeClock(),
        },
      );
      await until(async () => {
        const [build] = await farm.store.queue({}, 1);
        return build !== undefined &&
          buildStatusName(build.status) === "started";
      }, "the build's start");

      const response = await fetch(
        `http://127.0.0.1:${server.webPort}/admin/evaluation/${evaluation.id}/cancel`,
        { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } },
      );
      assert.equal(response.status, 200);
      assert.equal((await response.json()).builds, 1);
      await until(() => !alive(drivers[0]), "the driver's end");
      assert.ok(
        lines.some((l) => l.startsWith("info build taken back ")),
        lines.join("\n"),
      );
    } finally {
      await server?.stop();
      for (const pid of drivers) if (alive(pid)) Deno.kill(pid, "SIGKILL");
      await farm.close();
    }
  },
});
