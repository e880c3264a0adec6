// Run by evaluation_disk_test.ts inside a mount namespace, with a small
// tmpfs at Deno.args[0]: the database and evaluation logs live there, the
// fake guix evaluates. Prints what happened as JSON.

import { createLogger } from "../../../lib/log.ts";
import { runEvaluation } from "../../../lib/server/evaluation_runner.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { fillDisk, freeDisk } from "../../_small_disk.ts";
import { fakeGuixFarm, testSpecification } from "./_guix_fixture.ts";

const disk = Deno.args[0];
const spec = testSpecification("s");
const jobs = 1500;
const packages = Array.from(
  { length: jobs },
  (_, i) => ({ name: `package-number-${i}`, version: "1" }),
);
const farm = await fakeGuixFarm(spec, { packages });
const store = openSqliteStore(`${disk}/lorica.db`);
try {
  await store.upsertSpecification(spec);
  const lines: string[] = [];
  const options = {
    ...farm.options,
    store,
    stateDir: `${disk}/state`,
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
  };
  // Room for the evaluation's row and log, not for its builds.
  await fillDisk(disk);
  await freeDisk(disk, 64 * 1024);
  const cut = await runEvaluation(spec, options);
  const recorded = await store.getEvaluation(cut.id);
  const builds = Object.fromEntries(await store.countBuildsByStatus());
  await freeDisk(disk);
  const again = await runEvaluation(spec, options);
  // deno-lint-ignore no-console
  console.log(JSON.stringify({
    jobs,
    cut: { status: cut.status, recorded: recorded?.status, builds },
    again: { status: again.status, created: again.created },
    lines,
  }));
} finally {
  await store.close();
  await farm.close();
}
