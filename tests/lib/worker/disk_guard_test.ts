import assert from "node:assert/strict";
import { DiskGuard } from "../../../lib/worker/disk_guard.ts";
import { createLogger } from "../../../lib/log.ts";
import { FakeClock } from "../server/_dispatch_fixture.ts";

Deno.test("DiskGuard checks again after a second that passed, whatever a step of the wall clock back an hour says", async () => {
  const clock = new FakeClock();
  const lines: string[] = [];
  let free = 1024;
  const disk = new DiskGuard({
    paths: ["/store"],
    minimumBytes: 5 * 1024 ** 3,
    freeBytes: () => Promise.resolve(free),
    clock,
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    logPeriodMs: 60_000,
  });
  assert.equal(await disk.low(), true);
  free = 10 * 1024 ** 3;
  await clock.step(-3_600_000);
  await clock.advance(1000);
  assert.equal(await disk.low(), false, "space freed, seen a second later");
  assert.ok(lines.includes("info disk space ok minimum=5368709120"), lines[1]);
});
