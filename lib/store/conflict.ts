// Which store errors mean "the database undid this transaction to settle
// a conflict with another one": a deadlock it broke, a serialization
// failure, or a key another transaction inserted first. Nothing of the
// transaction was kept, and the same work, run again at once, will most
// likely go through.

/** SQLSTATEs of a transaction rolled back for a conflict. */
const CONFLICT_STATES = new Set([
  "40P01", // deadlock_detected
  "40001", // serialization_failure
  // unique_violation: two registrations of one new derivation at once
  // (two evaluations sharing a package) each found no build of it; the
  // second waits for the first on the unique index, and fails once that
  // one commits. Run again, it finds the build. Inserts whose duplicates
  // are expected say ON CONFLICT; any other would fail again, and the
  // retries are few.
  "23505",
]);

/**
 * Whether `error` (or one of its causes, such as the failing write of an
 * optimistic batch) is a transaction rolled back for a conflict.
 */
export function isTransactionConflict(error: unknown): boolean {
  for (let at = error, depth = 0; at && depth < 8; depth++) {
    if (typeof at !== "object") return false;
    const code = (at as { code?: unknown }).code;
    if (typeof code === "string" && CONFLICT_STATES.has(code)) return true;
    at = (at as { cause?: unknown }).cause;
  }
  return false;
}
