import assert from "node:assert/strict";
import {
  LogTimeoutError,
  withTimeout,
} from "../../../lib/protocol/log_header.ts";
import { systemClock } from "../../../lib/clock.ts";

Deno.test("withTimeout() names its wait in whole milliseconds, however the remaining time was computed", async () => {
  // A deadline's remainder, as the upload computes it from the monotonic
  // clock: rarely a whole number.
  const remaining = 12.98688099999;
  const never = new Promise<never>(() => {});
  const error = await withTimeout(
    never,
    remaining,
    systemClock,
    "Cannot send log",
  )
    .then(() => null, (e) => e);
  assert.ok(error instanceof LogTimeoutError, String(error));
  assert.equal(error.message, "Cannot send log: no answer in 13 ms");
});
