// Fuzzing decodeMessage() (lib/protocol/messages.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("decodeMessage() throws only ProtocolError on random and mutated messages, and round-trips what it accepts", async () => {
  await fuzz("messages", { iterations: 3000 });
});
