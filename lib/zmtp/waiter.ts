// Pending receivers of a value, each cancellable through an AbortSignal.

/** One parked caller, resumed by whoever produces the value. */
export interface Waiter<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

/** Parks a caller in `waiters` until resolved, rejected or `signal` aborts. */
export function waitInLine<T>(
  waiters: Waiter<T>[],
  signal?: AbortSignal,
): Promise<T> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const waiter: Waiter<T> = {
      resolve(value) {
        signal?.removeEventListener("abort", onAbort);
        resolve(value);
      },
      reject(error) {
        signal?.removeEventListener("abort", onAbort);
        reject(error);
      },
    };
    function onAbort() {
      const index = waiters.indexOf(waiter);
      if (index >= 0) waiters.splice(index, 1);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    waiters.push(waiter);
  });
}
