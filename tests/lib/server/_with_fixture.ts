// The dispatch fixture of one test, closed whatever the test does: the
// wrapper that the dispatcher, output fetcher and worker sweeper tests
// share, so that none of them leaves a dispatcher or its store running.

import { type Fixture, startFixture } from "./_dispatch_fixture.ts";

/**
 * Runs `body` on a fresh fixture started with `options`, closed afterwards
 * whatever happens.
 */
export async function withFixture(
  body: (f: Fixture) => Promise<void>,
  options?: Parameters<typeof startFixture>[0],
): Promise<void> {
  const f = await startFixture(options);
  try {
    await body(f);
  } finally {
    await f.close();
  }
}
