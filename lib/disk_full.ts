// Whether an error says that a disk (or a quota) is full: such a failure
// is the machine's, not the work's, and goes away once space is freed.

/** SQLite's primary result code for a full disk (SQLITE_FULL). */
const SQLITE_FULL = 13;

/**
 * True when `error`, or an error it was caused by, is ENOSPC or EDQUOT
 * from the file system, or SQLITE_FULL from SQLite.
 */
export function isDiskFull(error: unknown): boolean {
  for (let at = error, depth = 0; at && depth < 8; depth++) {
    if (typeof at !== "object") return false;
    const { code, errcode, message } = at as {
      code?: unknown;
      errcode?: unknown;
      message?: unknown;
    };
    if (code === "ENOSPC" || code === "EDQUOT") return true;
    if (typeof errcode === "number" && (errcode & 0xff) === SQLITE_FULL) {
      return true;
    }
    // Deno's file writes carry no code, only the OS error number.
    if (typeof message === "string" && /\(os error (28|122)\)/.test(message)) {
      return true;
    }
    at = (at as { cause?: unknown }).cause;
  }
  return false;
}
