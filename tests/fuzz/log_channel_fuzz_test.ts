// Fuzzing the log receiver's header handling, through a real receiver on 127.0.0.1 (lib/protocol/log_channel.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("the log receiver only hangs up on random and mutated headers, then still serves a valid upload", async () => {
  await fuzz("log-channel", { iterations: 300 });
});
