// Fuzzing parseGcryptSexp() and the key readers (lib/guix/gcrypt_sexp.ts, signing_key.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("parseGcryptSexp() throws only GcryptSexpError on random and mutated S-expressions, and round-trips what it accepts", async () => {
  await fuzz("gcrypt-sexp", { iterations: 2000 });
});
