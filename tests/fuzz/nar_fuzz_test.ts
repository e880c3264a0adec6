// Fuzzing restoreNar() (lib/guix/nar_restore.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("restoreNar() throws only NarFormatError on random and mutated NARs, cleans up, and accepts only canonical NARs", async () => {
  await fuzz("nar", { iterations: 400 });
});
