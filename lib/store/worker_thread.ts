// Ending a store's worker thread (checkpoints, scans): asked first, so that
// it closes its connection (SQLite removes the log only once the last
// connection closes), then terminated whether or not it answered in time.

/** How long a thread may take to answer: a checkpoint or scan running. */
const STOP_TIMEOUT_MS = 5000;

/**
 * Posts `stop` to `worker`, waits for `stopped` (the thread's answer) at
 * most {@link STOP_TIMEOUT_MS}, then terminates it.
 */
export async function endThread(
  worker: Worker,
  stop: unknown,
  stopped: Promise<void>,
): Promise<void> {
  worker.postMessage(stop);
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    stopped,
    new Promise<void>((resolve) =>
      timer = setTimeout(resolve, STOP_TIMEOUT_MS)
    ),
  ]);
  clearTimeout(timer);
  worker.terminate();
}
