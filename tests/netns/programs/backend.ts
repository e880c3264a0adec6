// A stand-in remote server backend for lab tests: answers the server probe
// and `worker-request-info` like Lorica's dispatcher, nothing else.
// Usage: backend.ts '{"listen":"0.0.0.0","port":0,"logPort":5556}'
// Prints {"port":N} once listening, then {"info":ADDRESS} per request.

import { RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  decodeMessage,
  encodeMessage,
} from "../../../lib/protocol/messages.ts";

const options = JSON.parse(Deno.args[0] ?? "{}");
const router = await RouterSocket.bind({
  hostname: options.listen ?? "0.0.0.0",
  port: options.port ?? 0,
});
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
print({ port: router.port });
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await router.close();
    Deno.exit(0);
  });
}
for await (const message of router) {
  try {
    const decoded = decodeMessage(message.frames[message.frames.length - 1]);
    if (decoded.type !== "worker-request-info") continue;
    print({ info: message.peerAddress });
    await router.send(message.routingId, [
      new Uint8Array(0),
      encodeMessage({
        type: "server-info",
        workerAddress: message.peerAddress,
        logPort: options.logPort ?? 5556,
        publishPort: options.publishPort ?? null,
      }),
    ]);
  } catch {
    // Probes and junk: ignored.
  }
}
