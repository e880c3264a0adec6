// A bound on a wait in a test: a setup that never comes up (a peer process
// that says nothing, a fixture stuck) fails its test, saying what it
// waited for, instead of hanging the run. A generous bound, not a timing
// assertion.

/** Waits (at most `ms`) for `promise`; rejects naming `what` past it. */
export async function within<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} in ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
