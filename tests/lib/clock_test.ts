import assert from "node:assert/strict";
import {
  everyInterval,
  MAX_TIMER_MS,
  Nudge,
  systemClock,
} from "../../lib/clock.ts";
import { FakeClock } from "./server/_dispatch_fixture.ts";

Deno.test("systemClock.sleep() past one timer's limit neither ends at once nor ignores its abort", async () => {
  const abort = new AbortController();
  let ended = "";
  const sleeping = systemClock.sleep(MAX_TIMER_MS + 1000, abort.signal).then(
    () => ended = "resolved",
    (reason) => ended = `rejected: ${reason}`,
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(ended, "", "the sleep ended within 100 ms");
  abort.abort("stop");
  await sleeping;
  assert.equal(ended, "rejected: stop");
});

Deno.test("everyInterval() calls at each interval from the previous call's start: one answered late is followed at once; false or the signal ends it", async () => {
  const clock = new FakeClock();
  const abort = new AbortController();
  const origin = clock.monotonic();
  const calls: number[] = [];
  const expectCalls = (expected: number[], message?: string) =>
    assert.deepEqual([...calls], expected, message);
  let answer = Promise.withResolvers<boolean>();
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  const running = everyInterval(clock, 1000, abort.signal, () => {
    calls.push(clock.monotonic() - origin);
    return answer.promise;
  });
  await clock.advance(999);
  expectCalls([], "nothing before the first interval");
  await clock.advance(1);
  expectCalls([1000]);
  // Answered 2.5 intervals late: the next call is due already.
  await clock.advance(2500);
  answer.resolve(true);
  answer = Promise.withResolvers<boolean>();
  await settle();
  expectCalls([1000, 3500]);
  // Answered at once: the next is an interval after this one began.
  answer.resolve(true);
  answer = Promise.withResolvers<boolean>();
  await settle();
  await clock.advance(999);
  expectCalls([1000, 3500]);
  await clock.advance(1);
  expectCalls([1000, 3500, 4500]);
  // False ends it.
  answer.resolve(false);
  await running;
  await clock.advance(5000);
  expectCalls([1000, 3500, 4500]);

  // The signal ends it while it waits.
  let called = false;
  const waiting = everyInterval(clock, 1000, abort.signal, () => {
    called = true;
    return Promise.resolve(true);
  });
  abort.abort();
  await waiting;
  await clock.advance(5000);
  assert.equal(called, false);
});

Deno.test("Nudge.sleep() ends at a wake() with its clock's sleep withdrawn, at once after a wake() that came between two sleeps, else after its time; the signal rejects it", async () => {
  const clock = new FakeClock();
  const abort = new AbortController();
  const nudge = new Nudge();
  const settle = () => new Promise((resolve) => setTimeout(resolve, 0));
  let ended = false;
  const endedWhen = (sleep: Promise<void>) => {
    ended = false;
    return sleep.then(() => ended = true);
  };

  // Woken while it sleeps: ended, nothing left waiting on the clock.
  let sleeping = endedWhen(nudge.sleep(clock, 5000, abort.signal));
  await settle();
  assert.equal(clock.sleepersDueWithin(5000), 1);
  nudge.wake();
  await sleeping;
  assert.equal(clock.sleepersDueWithin(5000), 0);

  // Woken between two sleeps: the next one ends at once, once only.
  nudge.wake();
  await nudge.sleep(clock, 5000, abort.signal);
  sleeping = endedWhen(nudge.sleep(clock, 5000, abort.signal));
  await settle();
  assert.equal(ended, false, "a wake-up counted twice");
  await clock.advance(4999);
  await settle();
  assert.equal(ended, false, "ended before its time");
  await clock.advance(1);
  await sleeping;

  const last = nudge.sleep(clock, 5000, abort.signal);
  abort.abort(new Error("stop"));
  await assert.rejects(last, /stop/);
  await assert.rejects(nudge.sleep(clock, 5000, abort.signal), /stop/);
});
