import assert from "node:assert/strict";
import { SilenceWatchdog } from "../../../lib/guix/silence_watchdog.ts";
import { FakeClock } from "../server/_dispatch_fixture.ts";

Deno.test("SilenceWatchdog fires once the limit passes with no sign of life, each sign starting it again", async () => {
  const clock = new FakeClock();
  const fired: number[] = [];
  const watchdog = new SilenceWatchdog(clock, 10_000, (ms) => fired.push(ms));
  await clock.advance(9_000);
  watchdog.alive();
  await clock.advance(9_000);
  assert.deepEqual(fired, [], "a sign of life 9 s in moves the deadline");
  await clock.advance(1_000);
  assert.deepEqual(fired, [10_000]);
  await clock.advance(60_000);
  assert.deepEqual(fired, [10_000], "it fires once");
});

Deno.test("SilenceWatchdog: a wall-clock step is no silence, and a stopped watchdog never fires", async () => {
  const clock = new FakeClock();
  const fired: number[] = [];
  const watchdog = new SilenceWatchdog(clock, 10_000, (ms) => fired.push(ms));
  await clock.step(3_600_000);
  await clock.advance(5_000);
  assert.deepEqual(fired, []);
  watchdog.stop();
  await clock.advance(60_000);
  assert.deepEqual(fired, []);
});
