// The PostgreSQL server the tests may use: LORICA_TEST_POSTGRES, a URL
// (.ci/run sets it). Without it, the tests that need one are skipped, and
// say why in their names.

/** The URL of the server, if any. */
export const TEST_POSTGRES_URL: string | undefined = Deno.env.get(
  "LORICA_TEST_POSTGRES",
);

/** Whether the tests needing PostgreSQL are to be skipped. */
export const WITHOUT_POSTGRES = TEST_POSTGRES_URL === undefined;

/** The end of the name of a test needing PostgreSQL: why it is skipped. */
export const NEEDS_POSTGRES = WITHOUT_POSTGRES
  ? " (skipped: LORICA_TEST_POSTGRES names no PostgreSQL server)"
  : "";
