// Fuzzing parseDerivation() (lib/guix/drv.ts) with random and mutated inputs;
// seed printed, replay with LORICA_FUZZ_SEED=<n>, scale with
// LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("parseDerivation() throws only DrvSyntaxError on random and mutated derivations", async () => {
  await fuzz("drv", { iterations: 2000 });
});

Deno.test("parseDerivation() round-trips through printDerivation() whatever it accepts", async () => {
  // Canonical order is enforced on parse (a repeated or unsorted entry is
  // a DrvSyntaxError), so whatever parses prints back byte for byte.
  await fuzz("drv-roundtrip", { iterations: 2000 });
});
