// Fuzzing FrameDecoder and the ZMTP command parsers (lib/zmtp/frame.ts, greeting.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("FrameDecoder and parseCommand() throw only ZMTP errors on random and mutated frames", async () => {
  await fuzz("zmtp-frame", { iterations: 3000 });
});
