// The reply withheld from a worker that may read its replies one request
// late (WorkerHoldings.withholdReply), on its own: the dispatcher tests
// show it over ZMTP; these, the cases a turn's rollback and a connection
// change bring.

import assert from "node:assert/strict";
import { WorkerHoldings } from "../../../lib/server/worker_holdings.ts";
import { silentLogger } from "../../../lib/log.ts";

const DRV = "/gnu/store/0000000000000000000000000000000a-a.drv";

function holdings(): WorkerHoldings {
  return new WorkerHoldings({
    logger: silentLogger,
    fetching: () => false,
    workerTimeoutSeconds: 120,
  });
}

Deno.test("a reply is withheld once per build, and only on the connection the build went out on", () => {
  const h = holdings();
  h.handedOut("w", DRV, "conn-1");
  h.committed();
  assert.equal(h.withholdReply("w", "conn-2"), null, "another connection");
  assert.equal(h.withholdReply("w", "conn-1"), DRV);
  assert.ok(h.stillWithheld("w", DRV));
  h.committed();
  assert.equal(h.withholdReply("w", "conn-1"), null, "once per build");
});

Deno.test("a reply withheld by a turn that rolls back may be withheld again when the turn is served again", () => {
  const h = holdings();
  h.handedOut("w", DRV, "conn-1");
  h.committed();
  assert.equal(h.withholdReply("w", "conn-1"), DRV);
  h.rolledBack();
  assert.ok(!h.stillWithheld("w", DRV), "its reply never went out");
  assert.equal(h.withholdReply("w", "conn-1"), DRV, "the turn replayed");
});

Deno.test("a withheld reply is no longer owed once the build starts, or once it was sent", () => {
  const started = holdings();
  started.handedOut("w", DRV, "conn-1");
  started.withholdReply("w", "conn-1");
  started.startReported("w", DRV);
  assert.ok(!started.stillWithheld("w", DRV), "the worker caught up");

  const sent = holdings();
  sent.handedOut("w", DRV, "conn-1");
  sent.withholdReply("w", "conn-1");
  sent.answeredWithheld("w");
  assert.ok(!sent.stillWithheld("w", DRV));
  assert.equal(sent.withholdReply("w", "conn-1"), null, "not a second time");
});
