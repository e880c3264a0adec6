// What the tests of a guix publish started by Lorica share, whether the
// server or a worker starts it: a fake daemon that can sign, a port some
// other process holds, the pid of the publish as the process log tells it,
// and what a start that may fail ended with.

import {
  type DaemonEnv,
  makeRoot,
  makeSigningDaemon,
} from "../../fake-guix/test_env.ts";

/**
 * A fake daemon called `name` that has a signing key (guix publish needs
 * one), under a temporary root removed when the `await using` scope that
 * holds it ends.
 */
export async function signingDaemon(
  name: string,
): Promise<{ root: string; daemon: DaemonEnv } & AsyncDisposable> {
  const root = await makeRoot();
  const remove = () => Deno.remove(root, { recursive: true });
  try {
    const daemon = await makeSigningDaemon(root, name);
    return { root, daemon, [Symbol.asyncDispose]: remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/**
 * A loopback port held by a listener of the test's, so that a publish
 * asked to listen there finds it in use; released when the `using` scope
 * that holds it ends.
 */
export function heldPort(): { port: number } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return {
    port: listener.addr.port,
    [Symbol.dispose]: () => listener.close(),
  };
}

/**
 * The pid of the guix publish whose start is logged in `lines` (the
 * `info process started ... process=publish` line), NaN if none is.
 */
export function publishPid(lines: string[]): number {
  const started = lines.find((line) =>
    line.startsWith("info process started ") &&
    line.includes(" process=publish ")
  );
  return Number(started?.match(/ pid=(\d+)/)?.[1]);
}

/**
 * The error `starting` (a server or worker start) failed with, or null if
 * it started: then it is stopped at once, so that none outlives the test.
 */
export function startError(
  starting: Promise<{ stop(): Promise<void> }>,
): Promise<unknown> {
  return starting.then(
    async (started) => {
      await started.stop();
      return null;
    },
    (error) => error,
  );
}
