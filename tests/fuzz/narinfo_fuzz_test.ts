// Fuzzing parseNarinfo() and verifyNarinfoText() (lib/guix/narinfo.ts, narinfo_signature.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("parseNarinfo() throws only NarinfoSyntaxError and verifyNarinfoText() never throws on random and mutated narinfos", async () => {
  await fuzz("narinfo", { iterations: 2000 });
});
