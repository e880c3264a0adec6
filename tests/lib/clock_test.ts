import assert from "node:assert/strict";
import { MAX_TIMER_MS, systemClock } from "../../lib/clock.ts";

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
