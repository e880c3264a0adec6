// A bare ROUTER for lab tests of connection handling.
// Usage: router_peers.ts '{"port":0,"maxConnectionsPerAddress":1}'
// Prints {"port":N} once listening, then {"connected":ADDRESS} and
// {"disconnected":ADDRESS} as peers come and go, {"message":ADDRESS} for
// each message; its log lines on stderr.

import { RouterSocket } from "../../../lib/zmtp/router.ts";
import { createLogger } from "../../../lib/log.ts";

const options = JSON.parse(Deno.args[0] ?? "{}");
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
const router = await RouterSocket.bind({
  hostname: "0.0.0.0",
  port: options.port ?? 0,
  maxConnectionsPerAddress: options.maxConnectionsPerAddress,
  logger: createLogger({
    timestamps: false,
    sink: (line) =>
      Deno.stderr.writeSync(new TextEncoder().encode(line + "\n")),
  }),
  onConnect: (peer) => print({ connected: peer.peerAddress }),
  onDisconnect: (peer) => print({ disconnected: peer.peerAddress }),
});
print({ port: router.port });
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await router.close();
    Deno.exit(0);
  });
}
for await (const message of router) print({ message: message.peerAddress });
