// A DEALER that connects and stays, for lab tests of connection handling.
// Usage: dealer_peer.ts HOST PORT
// Prints {"connected":true} each time its connection is up; answers the
// first message (the ROUTER's probe) with one of its own, so that nothing
// either side sent is left unacknowledged once the ROUTER has it.

import { DealerSocket } from "../../../lib/zmtp/dealer.ts";

const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
const dealer = DealerSocket.connect({
  hostname: Deno.args[0],
  port: Number(Deno.args[1]),
  onConnect: () => print({ connected: true }),
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await dealer.close();
    Deno.exit(0);
  });
}
await dealer.receive();
await dealer.send([new TextEncoder().encode("hello")]);
await new Promise(() => {});
