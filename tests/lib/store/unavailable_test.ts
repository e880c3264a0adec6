import assert from "node:assert/strict";
import {
  isDatabaseUnavailable,
  isQueryCanceled,
} from "../../../lib/store/unavailable.ts";
import { StoreError } from "../../../lib/store/types.ts";

/** An error as npm:postgres or the socket under it rejects with. */
function coded(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

Deno.test("isDatabaseUnavailable() tells a database that cannot serve now from a request that is wrong", () => {
  const unavailable = [
    coded("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:5432"),
    coded("CONNECTION_CLOSED"),
    coded("CONNECT_TIMEOUT"),
    coded("57P01", "terminating connection due to administrator command"),
    coded("57P03", "the database system is starting up"),
    coded("53300", "sorry, too many clients already"),
    coded("53100", "could not extend file: No space left on device"),
    coded("25006", "cannot execute UPDATE in a read-only transaction"),
    coded("25P03", "terminating connection due to idle-in-transaction timeout"),
    coded("08006"),
    Object.assign(new Error("database is locked"), { errcode: 5 }),
    Object.assign(new Error("disk I/O error"), { errcode: 10 | (3 << 8) }),
    // Wrapped by the store: the cause tells.
    new StoreError("Optimistic batch aborted", "batch-aborted", "write", {
      cause: coded("57P01"),
    }),
  ];
  for (const error of unavailable) {
    assert.ok(isDatabaseUnavailable(error), error.message);
  }
  const wrong = [
    new Error("disk on fire"),
    coded("23505", "duplicate key value violates unique constraint"),
    coded("42P01", 'relation "builds" does not exist'),
    coded("57014", "canceling statement due to statement timeout"),
    Object.assign(new Error("constraint failed"), { errcode: 19 }),
    "connect ECONNREFUSED",
    null,
  ];
  for (const error of wrong) {
    assert.ok(!isDatabaseUnavailable(error), String(error));
  }
});

Deno.test("isDatabaseUnavailable() takes a query past npm:postgres's deadline for a database down, unless the server itself canceled it", () => {
  const timedOut = (cause: unknown) =>
    Object.assign(coded("QUERY_TIMEOUT"), { cause });
  // The cancel got no answer either: the connection was closed.
  assert.ok(isDatabaseUnavailable(timedOut(coded("CANCEL_UNANSWERED"))));
  // Given up before it was sent, waiting for a connection.
  assert.ok(isDatabaseUnavailable(timedOut(coded("57014"))));
  // The other queries of the closed connection.
  assert.ok(
    isDatabaseUnavailable(
      Object.assign(coded("CONNECTION_DESTROYED"), {
        cause: coded("CANCEL_UNANSWERED"),
      }),
    ),
  );
  // The server answered the cancel: it is up, the query was slow.
  const fromServer = Object.assign(
    coded("57014", "canceling statement due to user request"),
    { severity: "ERROR" },
  );
  assert.ok(!isDatabaseUnavailable(timedOut(fromServer)));
});

Deno.test("isQueryCanceled() tells a statement canceled, for its deadline or by an operator, however wrapped", () => {
  const fromServer = Object.assign(
    coded("57014", "canceling statement due to user request"),
    { severity: "ERROR" },
  );
  const canceled = [
    coded("57014", "canceling statement due to statement timeout"),
    Object.assign(coded("QUERY_TIMEOUT"), { cause: fromServer }),
    // As the PostgreSQL store words it (postgres.ts explainTimeout).
    new Error("A PostgreSQL query ran past its deadline", {
      cause: Object.assign(coded("QUERY_TIMEOUT"), { cause: fromServer }),
    }),
  ];
  for (const error of canceled) {
    assert.ok(isQueryCanceled(error), error.message);
  }
  const other = [
    new Error("disk on fire"),
    coded("ECONNREFUSED"),
    coded("40P01", "deadlock detected"),
    "57014",
    null,
  ];
  for (const error of other) {
    assert.ok(!isQueryCanceled(error), String(error));
  }
});
