// Test module run by socket_leaks_test.ts in a child `deno test` under the
// project's deno.json: three tests leave a ZMTP socket or a libzmq peer
// open on purpose, and must fail; one closes what it opens, and must pass.
// The child's exit takes the leaked sockets with it. Not named *_test.ts:
// the suite must not run it.

import { DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { RouterSocket } from "../../../lib/zmtp/router.ts";
import { quietPort } from "../../_ports.ts";
import { libzmqMissing, LibzmqPeer } from "./libzmq_peer.ts";

Deno.test("leaks a RouterSocket", async () => {
  await RouterSocket.bind({ hostname: "127.0.0.1", port: 0 });
});

Deno.test("leaks a DealerSocket", () => {
  DealerSocket.connect({ hostname: "127.0.0.1", port: quietPort() });
});

Deno.test({
  name: "leaks a libzmq peer",
  ignore: libzmqMissing !== undefined,
  async fn() {
    await LibzmqPeer.start();
  },
});

Deno.test("closes its RouterSocket and DealerSocket", async () => {
  const router = await RouterSocket.bind({ hostname: "127.0.0.1", port: 0 });
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port: router.port,
  });
  await dealer.receive(); // the probe: the two are connected
  await dealer.close();
  await router.close();
});
