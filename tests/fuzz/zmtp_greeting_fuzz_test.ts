// Fuzzing GreetingReader and parseGreeting() (lib/zmtp/greeting.ts) with random and mutated inputs; seed printed, replay with
// LORICA_FUZZ_SEED=<n>, scale with LORICA_FUZZ_ITERATIONS=<n>.

import { fuzz } from "./_fuzz.ts";

Deno.test("GreetingReader and parseGreeting() throw only ZmtpSyntaxError on random and mutated greetings", async () => {
  await fuzz("zmtp-greeting", { iterations: 2000 });
});
