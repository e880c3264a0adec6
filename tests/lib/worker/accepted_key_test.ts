// A keyed worker session that the server (the real dispatcher, worker keys
// required) accepts: the server says so ("worker-accepted"), and the worker
// logs its registration then, before any other message of the server. A
// registration made again mid-build, after a server restart, is said at
// once, not at the build's result-ack, the next thing that server sends;
// and an acceptance is taken for nothing else.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import { eventually, job } from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import {
  restartableFixture,
  runningSession,
  sessionOptions,
  untilStatus,
} from "./_session_helpers.ts";
import { controlledGuix } from "./_controlled_guix.ts";

const SECRET = "shared-secret-of-the-farm";

Deno.test({
  name:
    "a keyed session registered again mid-build says so as soon as the restarted server accepts it, while the build still runs",
  async fn() {
    const keyed = { workerKeys: new Map([["farm", SECRET]]) };
    await using server = await restartableFixture({
      ...keyed,
      logPort: quietPort(),
    });
    const [drv] = await server.first.addJobs([job("long", 1)]);
    const { builds, guix } = controlledGuix();
    const lines: string[] = [];
    const name = "ACCEPT01";
    await using _session = runningSession(
      sessionOptions(server.port, name, lines, {
        guix,
        authKey: { id: "farm", secret: SECRET },
      }),
    );
    await eventually(() => builds.length === 1, "build started");
    assert.ok(
      lines.some((l) => l.startsWith(`info worker registered worker=${name} `)),
      lines.join("\n"),
    );
    await server.kill();
    const f = await server.restart({ ...keyed, logPort: quietPort() });
    await eventually(
      () =>
        lines.some((l) =>
          l.startsWith(`info worker registered again worker=${name} `) &&
          l.includes(" holding=1")
        ),
      `registration again logged mid-build\nworker:\n${
        lines.join("\n")
      }\nserver:\n${f.lines.join("\n")}`,
    );
    // Said with the build still running: no result sent, none acknowledged.
    assert.equal(builds[0].finished, false);
    assert.equal(
      (await f.store.getBuildByDerivation(drv))?.status,
      BuildStatus.started,
    );
    builds[0].finish(0);
    await untilStatus(f, drv, BuildStatus.succeeded);
    // The acceptances were taken as such: read as the answer to anything
    // else, they would be replies ignored, warned of by the time the next
    // build is handed out.
    await f.addJobs([job("next", 2)]);
    await eventually(() => builds.length === 2, "next build taken");
    builds[1].finish(0);
    assert.deepEqual(lines.filter((l) => l.includes("reply ignored")), []);
  },
});
