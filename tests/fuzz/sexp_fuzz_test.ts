// Fuzzing readSexp() and readAllSexps() (lib/sexp/read.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("readSexp() throws only SexpSyntaxError on random and mutated input, and what it reads writes back", async () => {
  await fuzz("sexp", { iterations: 3000 });
});
