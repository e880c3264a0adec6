// Which store errors mean "the database cannot be used right now" rather
// than "this request is wrong": the database is down, restarting, full,
// read-only, or refused the connection. Work that failed for these reasons
// is worth doing again once the database is back; work that failed for
// any other reason is not.

/** Codes of npm:postgres and of the socket under it for a lost database. */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  // A canceled query's connection closed as the cancel got no answer.
  "CANCEL_UNANSWERED",
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOENT", // the Unix socket of a stopped server
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/**
 * SQLSTATEs (or their classes) of a database that cannot serve now:
 * connection exceptions (08), insufficient resources (53: disk full, too
 * many connections), operator intervention (57: shutdown, cannot connect
 * now), a read-only transaction (25006), an idle
 * transaction ended by its timeout (25P03), system errors (58).
 */
const UNAVAILABLE_CLASSES = ["08", "53", "57", "58"];
const UNAVAILABLE_STATES = new Set(["25006", "25P03"]);
/**
 * A statement canceled (its timeout, or an operator): the database is up,
 * and the same work may well be canceled again, so it is no reason to
 * hold the work for later.
 */
const CANCELED = "57014";
/**
 * npm:postgres's client-side deadline (its `query_timeout`) ran out: the
 * database did not answer in time, unless its cause is the server's own
 * answer to the cancel (see {@link answeredByServer}).
 */
const QUERY_TIMEOUT = "QUERY_TIMEOUT";

/** SQLite result codes (low byte): busy, locked, I/O error, read-only, full. */
const SQLITE_UNAVAILABLE = new Set([5, 6, 8, 10, 13, 14]);

/**
 * Whether `error` (or one of its causes) says the database could not be
 * used at the moment, on either backend.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  for (let at = error, depth = 0; at && depth < 8; depth++) {
    if (typeof at !== "object") return false;
    const { code, errcode } = at as { code?: unknown; errcode?: unknown };
    if (code === CANCELED) return false;
    if (code === QUERY_TIMEOUT) {
      return !answeredByServer((at as { cause?: unknown }).cause);
    }
    if (typeof code === "string") {
      if (CONNECTION_CODES.has(code) || UNAVAILABLE_STATES.has(code)) {
        return true;
      }
      if (
        /^[0-9A-Z]{5}$/.test(code) &&
        UNAVAILABLE_CLASSES.includes(code.slice(0, 2))
      ) {
        return true;
      }
    }
    if (typeof errcode === "number" && SQLITE_UNAVAILABLE.has(errcode & 0xff)) {
      return true;
    }
    at = (at as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Whether `cause` is the server's cancel of a query: the server was there
 * to answer (its errors carry a severity), the query was merely slow. A
 * 57014 of the client's own is a query given up before it was even sent,
 * for want of a connection.
 */
function answeredByServer(cause: unknown): boolean {
  if (!cause || typeof cause !== "object") return false;
  const { code, severity } = cause as { code?: unknown; severity?: unknown };
  return code === CANCELED && typeof severity === "string";
}

/**
 * Whether `error` (or one of its causes) is a PostgreSQL statement
 * canceled: its deadline ran out (npm:postgres's `query_timeout`, which
 * `--database-timeout` sets, or the server's `statement_timeout`), or an
 * operator canceled it. The database is up but slow, a lock held long by
 * another transaction, say: not a reason to hold a turn for later (see
 * {@link isDatabaseUnavailable}), but work that must not be lost may try
 * the same statement again.
 */
export function isQueryCanceled(error: unknown): boolean {
  for (let at = error, depth = 0; at && depth < 8; depth++) {
    if (typeof at !== "object") return false;
    const code = (at as { code?: unknown }).code;
    if (code === CANCELED || code === QUERY_TIMEOUT) return true;
    at = (at as { cause?: unknown }).cause;
  }
  return false;
}
