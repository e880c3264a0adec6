// Tests for the libzmq peer helper itself: a peer process that never comes
// up or stops answering fails the test that uses it, saying which peer and
// what was awaited, instead of hanging the run. Stand-in programs play the
// broken peer, so these run without python3-zmq.

import assert from "node:assert/strict";
import { LibzmqPeer } from "./libzmq_peer.ts";
import { within } from "../../_within.ts";

/** Ample for a bound of 200 ms: reached only if the helper waits unbounded. */
const GIVE_UP_MS = 20_000;

Deno.test("LibzmqPeer.start() fails, naming the peer, when it never says hello, and kills it", async () => {
  await assert.rejects(
    within(
      LibzmqPeer.start({ argv: ["sleep", "30"], timeoutMs: 200 }),
      GIVE_UP_MS,
      "end of start()",
    ),
    /^Error: no hello line from the libzmq peer "sleep 30" in 200 ms$/,
  );
});

Deno.test("LibzmqPeer.request() and stop() fail, naming the command, when the peer stops answering", async () => {
  const peer = await LibzmqPeer.start({
    argv: ["sh", "-c", `echo '{"ok":true}'; exec sleep 30`],
    timeoutMs: 200,
  });
  try {
    await assert.rejects(
      within(
        peer.request({ op: "recv", name: "w" }),
        GIVE_UP_MS,
        "end of request()",
      ),
      /^Error: no reply from the libzmq peer to \{"op":"recv","name":"w"\} in 200 ms$/,
    );
  } finally {
    await assert.rejects(
      within(peer.stop(), GIVE_UP_MS, "end of stop()"),
      /^Error: no exit of the libzmq peer "sh -c .*" after quit in 200 ms$/,
    );
  }
});
