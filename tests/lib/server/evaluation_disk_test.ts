// An evaluation on a server whose disk fills up: the database and the
// evaluation logs on a real tmpfs, the fake guix evaluating (the work is in
// _evaluation_disk_child.ts, run inside a mount namespace of its own).

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { EvaluationStatus } from "../../../lib/store/types.ts";
import { runOnSmallDisk, smallDiskAvailability } from "../../_small_disk.ts";

const availability = smallDiskAvailability();
const CHILD = fileURLToPath(
  new URL("./_evaluation_disk_child.ts", import.meta.url),
);

Deno.test({
  name: availability.ok
    ? "runEvaluation() cut short by a full disk ends aborted, so that its commits are evaluated again"
    : `runEvaluation() cut short by a full disk ends aborted (skipped: ${availability.reason})`,
  ignore: !availability.ok,
  async fn() {
    const result = JSON.parse(await runOnSmallDisk(CHILD, 4 * 1024 * 1024));
    const log = result.lines.join("\n");
    assert.equal(result.cut.status, EvaluationStatus.aborted, log);
    assert.equal(result.cut.recorded, EvaluationStatus.aborted);
    assert.deepEqual(result.cut.builds, {});
    // Which disk is full: the database's, named.
    assert.match(
      log,
      /evaluation failed .*status=2 .*Cannot use database \\".*\/lorica\.db\\": database or disk is full/,
    );
    // Once space is back, the same commits evaluate whole.
    assert.equal(result.again.status, EvaluationStatus.succeeded);
    assert.equal(result.again.created, result.jobs);
  },
});

const ROOTS_CHILD = fileURLToPath(
  new URL("./_roots_disk_child.ts", import.meta.url),
);

Deno.test({
  name: availability.ok
    ? "C14: runEvaluation() whose GC roots the full disk cannot take registers no build, and ends aborted"
    : `C14: runEvaluation() whose GC roots the full disk cannot take (skipped: ${availability.reason})`,
  ignore: !availability.ok,
  async fn() {
    const result = JSON.parse(
      await runOnSmallDisk(ROOTS_CHILD, 1024 * 1024, { inodes: 64 }),
    );
    const log = result.lines.join("\n");
    // No pending build whose derivation the garbage collector may take.
    assert.deepEqual(result.cut.builds, {}, log);
    assert.equal(result.cut.status, EvaluationStatus.aborted, log);
    assert.equal(result.cut.recorded, EvaluationStatus.aborted);
    assert.match(log, /Cannot create GC root \\".*\/roots\/[^ ]*\.drv\\"/);
    assert.equal(result.again.status, EvaluationStatus.succeeded);
    assert.equal(result.again.created, result.jobs);
    assert.equal(result.again.roots, result.jobs);
  },
});
