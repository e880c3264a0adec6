// A store whose calls fail on demand, as they do while the database is
// down, restarting or read-only.

/**
 * What npm:postgres rejects a query with while PostgreSQL is down: the
 * socket's error, its code with it.
 */
export function connectionRefused(): Error {
  return Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:54471"), {
    code: "ECONNREFUSED",
  });
}

/** What PostgreSQL answers a write with on a read-only server (a standby). */
export function readOnly(): Error {
  return Object.assign(
    new Error("cannot execute UPDATE in a read-only transaction"),
    { code: "25006", severity: "ERROR" },
  );
}

/**
 * `store` with each call first offered to `failure(method)`: an error it
 * returns rejects that call, null lets it through to the real store.
 */
export function failingStore<S extends object>(
  store: S,
  failure: (method: string) => Error | null,
): S {
  return new Proxy(store, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const error = failure(String(key));
        return error === null
          ? value.apply(target, args)
          : Promise.reject(error);
      };
    },
  });
}
