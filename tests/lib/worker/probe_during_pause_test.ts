// A session pausing between two work requests (after a no-build) when the
// server restarts: the new server's probe ends the pause, so the session
// registers again and takes the builds waiting, rather than a request
// period (15 to 44 s by default) on.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { sessionOptions } from "./_session_helpers.ts";
import { bindAgain, quietPort } from "../../_ports.ts";

Deno.test({
  name:
    "a session told no-build registers again as soon as the restarted server's probe comes, not a request period later, and takes the build waiting",
  async fn() {
    let first: Fixture | undefined = await startFixture({
      logPort: quietPort(),
    });
    const { port, database, root } = first;
    const lines: string[] = [];
    const abort = new AbortController();
    const running = runSession(
      sessionOptions(port, "PAUSED01", lines, {
        // A pause of a whole minute after a no-build.
        requestPeriodMs: 60_000,
        random: (n) => Math.floor(n / 2),
      }),
      abort.signal,
    );
    let restarted: Fixture | undefined;
    try {
      const server = first;
      await eventually(
        () =>
          server.lines.some((l) => l.includes("work request")) ||
          lines.some((l) => l.includes("no-build")) ||
          server.lines.some((l) => l.startsWith("info worker ready ")),
        "registration",
      );
      // Its first request answered no-build: the session pauses.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await first.close(true);
      first = undefined;
      const f = restarted = await bindAgain(() =>
        startFixture({ port, database, logPort: quietPort() })
      );
      const [drv] = await f.addJobs([job("waiting", 1)]);
      await eventually(
        async () => (await f.status(drv)) !== BuildStatus.scheduled,
        "the waiting build handed to the session",
      ).catch((error) => {
        throw new Error(
          `${error.message}\nserver:\n${f.lines.join("\n")}\n` +
            `worker:\n${lines.join("\n")}`,
          { cause: error },
        );
      });
      // Registered before it asked: nothing handed to a stranger and
      // taken back.
      const ready = f.lines.findIndex((l) =>
        l.startsWith("info worker ready ") && l.includes("PAUSED01")
      );
      const submitted = f.lines.findIndex((l) =>
        l.startsWith("info build submitted ")
      );
      assert.ok(ready >= 0 && ready < submitted, f.lines.join("\n"));
      assert.ok(
        !f.lines.some((l) => l.startsWith("warn build requeued")),
        f.lines.join("\n"),
      );
    } finally {
      abort.abort();
      await running;
      await first?.close();
      await restarted?.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
  },
});
