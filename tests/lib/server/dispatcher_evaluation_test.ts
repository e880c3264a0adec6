// Canceling or restarting a whole evaluation in remote mode: the workers
// building its builds are told (build-cancel), and the dispatcher stops
// counting the builds as theirs.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import {
  FakeWorker,
  job,
  loricaWorker,
  startWork,
} from "./_dispatch_fixture.ts";
import { assertReleased } from "./_lorica_workers.ts";
import { withFixture } from "./_with_fixture.ts";

for (const action of ["cancel", "restart"] as const) {
  Deno.test({
    name:
      `${action}Evaluation() sends build-cancel to the Lorica worker building one of the evaluation's builds, and lets go of it`,
    fn: () =>
      withFixture(async (f) => {
        await f.addJobs([job("a", 1), job("b", 2), job("c", 3)]);
        const lorica = await loricaWorker(f.port, "LORICA");
        const building = await startWork(lorica, f);
        const cuirass = await FakeWorker.connect(f.port, { name: "CUIRASS" });
        await cuirass.ready();
        const cuirassDrv = await startWork(cuirass, f);

        const changed = action === "cancel"
          ? await f.dispatcher.cancelEvaluation(f.evaluation)
          : await f.dispatcher.restartEvaluation(f.evaluation);
        // Cancel: the three pending builds; restart: the two running.
        assert.equal(changed, action === "cancel" ? 3 : 2);
        assert.deepEqual(await lorica.next(), {
          type: "build-cancel",
          drv: building,
        });
        assert.equal(
          await f.status(building),
          action === "cancel" ? BuildStatus.canceled : BuildStatus.scheduled,
        );
        assert.ok(
          f.lines.some((l) =>
            l.startsWith("info cancel not sent ") &&
            l.includes("worker=CUIRASS") && l.includes(cuirassDrv)
          ),
          f.lines.join("\n"),
        );
        assert.ok(
          f.lines.some((l) =>
            l.startsWith(`info evaluation ${action}ed `) &&
            l.includes(`evaluation=${f.evaluation}`) && l.includes("held=2")
          ),
          f.lines.join("\n"),
        );
        await assertReleased(f, lorica, building);
        await Promise.all([lorica.close(), cuirass.close()]);
      }),
  });
}

Deno.test({
  name:
    "cancelEvaluation() of an evaluation none of whose builds is held sends nothing",
  fn: () =>
    withFixture(async (f) => {
      await f.addJobs([job("a", 1), job("b", 2)]);
      const lorica = await loricaWorker(f.port, "LORICA");
      assert.equal(await f.dispatcher.cancelEvaluation(f.evaluation), 2);
      assert.equal(
        f.lines.filter((l) => l.includes(" cancel sent ")).length,
        0,
      );
      // The next message the worker gets is the answer to its request.
      assert.equal((await lorica.requestWork(2)).type, "no-build");
      await lorica.close();
    }),
});
