// What the dispatcher logs outside its turns is written whatever becomes of
// the turn under way: a turn's own lines wait for its commit and are
// dropped if it rolls back, and a cancel from the web that happened to run
// meanwhile lost its line with them. (A cancel now waits for the turn under
// way before it changes the store, and logs after.)

import assert from "node:assert/strict";
import type { Store } from "../../../lib/store/types.ts";
import {
  eventually,
  FakeWorker,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";

Deno.test({
  name:
    "a build canceled while a turn is under way is logged, though that turn then rolls back",
  async fn() {
    const entered = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    let failTurns = false;
    const f = await startFixture({
      // The turn's batch waits for the test, then fails as a whole.
      storeSeenByDispatcher: (store: Store): Store => ({
        ...store,
        batch: async (work, options) => {
          if (!failTurns) return store.batch(work, options);
          entered.resolve();
          await release.promise;
          throw new Error("the batch failed");
        },
      }),
    });
    try {
      const [drv] = await f.addJobs([job("a", 1)]);
      const worker = await FakeWorker.connect(f.port, { name: "W" });
      failTurns = true;
      await worker.send({ type: "worker-request-info" });
      await entered.promise;
      const build = await f.store.getBuildByDerivation(drv);
      const canceling = f.dispatcher.cancelBuild(build!.id);
      release.resolve();
      assert.equal(await canceling, true);
      await eventually(() =>
        Promise.resolve(f.lines.some((l) => /turn not committed/.test(l)))
      );
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("info build canceled ") &&
          l.includes(`build=${build!.id}`)
        ),
        f.lines.join("\n"),
      );
      await worker.close();
    } finally {
      await f.close();
    }
  },
});
