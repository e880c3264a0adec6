// Two registrations of one new derivation at once on PostgreSQL (two
// evaluations sharing a package, on two servers or two evaluations of
// one), when LORICA_TEST_POSTGRES names a server. Each found no build of
// the derivation and inserts one: the second waits for the first on the
// unique index of derivations, then fails with a unique violation once
// the first commits. Run again, it finds the build and registers its job
// on it.

import assert from "node:assert/strict";
import { drv, job, specification } from "./store_contract.ts";
import { withSharedSchema } from "./_shared_schema.ts";
import { NEEDS_POSTGRES, WITHOUT_POSTGRES } from "../../_test_postgres.ts";

Deno.test({
  name:
    `PostgreSQL: a registration that meets another one of the same new derivation (a unique violation once it commits) is run again and registers its job on that build${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  fn: () =>
    withSharedSchema("lorica_twice_test", async ({ stores, sql }) => {
      const [first, second] = stores;
      await first.upsertSpecification(specification("other"));
      const one = await first.addEvaluation("guix", [], 1);
      const two = await second.addEvaluation("other", [], 2);

      // The first registration holds its new build uncommitted...
      const release = Promise.withResolvers<void>();
      const registered = Promise.withResolvers<void>();
      const holding = first.batch(async (tx) => {
        await tx.registerBuilds(one, [job("shared")], { priority: 9, now: 1 });
        registered.resolve();
        await release.promise;
      });
      await registered.promise;
      // ...while the second, which found no build of it, inserts one too
      // and waits on the unique index.
      const racing = second.registerBuilds(two, [job("shared")], {
        priority: 9,
        now: 2,
      }).then(() => null, (error: unknown) => error);
      for (let i = 0;; i++) {
        const [{ waiting }] = await sql.unsafe(
          `SELECT count(*) AS waiting FROM pg_stat_activity
           WHERE wait_event_type = 'Lock' AND datname = current_database()`,
        );
        if (Number(waiting) > 0) break;
        assert.ok(i < 250, "the second registration never waited");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      release.resolve();
      await holding;
      assert.equal(await racing, null, "the second registration went through");

      const shared = await first.getBuildByDerivation(drv("shared"));
      assert.ok(shared !== null);
      for (const evaluation of [one, two]) {
        const jobs = await first.listJobs(evaluation);
        assert.deepEqual(
          jobs.map((j) => j.build),
          [shared.id],
          `${evaluation}`,
        );
      }
    }),
});
