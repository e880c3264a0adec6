// Run by evaluation_disk_test.ts inside a mount namespace, with a tmpfs of
// few inodes at Deno.args[0] holding the GC roots: the fake guix evaluates,
// the database is elsewhere. Prints what happened as JSON.

import { systemClock } from "../../../lib/clock.ts";
import { createLogger } from "../../../lib/log.ts";
import { GcRoots } from "../../../lib/guix/gc_roots.ts";
import { runEvaluation } from "../../../lib/server/evaluation_runner.ts";
import { fillInodes } from "../../_small_disk.ts";
import { fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";

const disk = Deno.args[0];
const spec = testSpecification("s");
const jobs = 20;
const packages = Array.from(
  { length: jobs },
  (_, i) => ({ name: `p${i}`, version: "1" }),
);
const farm = await fakeGuixFarm(spec, { packages });
try {
  const lines: string[] = [];
  const logger = createLogger({
    timestamps: false,
    sink: (l) => lines.push(l),
  });
  const gcRoots = new GcRoots({
    directory: `${disk}/roots`,
    storeDir: farm.daemon.storeDir,
    clock: systemClock,
    logger,
  });
  const options = { ...farm.options, gcRoots, logger };
  await Deno.mkdir(`${disk}/roots`);
  await fillInodes(disk);
  const cut = await runEvaluation(spec, options);
  const recorded = await farm.store.getEvaluation(cut.id);
  const builds = Object.fromEntries(await farm.store.countBuildsByStatus());
  await Deno.remove(`${disk}/fillers`, { recursive: true });
  const again = await runEvaluation(spec, options);
  // deno-lint-ignore no-console
  console.log(JSON.stringify({
    jobs,
    cut: { status: cut.status, recorded: recorded?.status, builds },
    again: {
      status: again.status,
      created: again.created,
      roots: (await gcRoots.list()).length,
    },
    lines,
  }));
} finally {
  await farm.close();
}
