// Starting and stopping the server's parts: port errors that say which
// port, and cleanups undone in reverse order.

/**
 * Runs `open`, which binds a port; a failure says which port it was, e.g.
 * "Cannot listen on the backend port 127.0.0.1:5555: address in use".
 */
export function listening<T>(
  what: string,
  hostname: string,
  port: number,
  open: () => T,
): T {
  const explain = (error: unknown): never => {
    throw new Error(
      `Cannot listen on the ${what} port ${hostname}:${port}: ${
        (error as Error).message
      }`,
      { cause: error },
    );
  };
  try {
    const result = open();
    return (result instanceof Promise ? result.catch(explain) : result) as T;
  } catch (error) {
    return explain(error);
  }
}

/** Runs cleanups in reverse order of registration, ignoring their errors. */
export async function runCleanups(cleanups: (() => Promise<unknown>)[]) {
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch(() => {});
  }
}
