// A scripted Cuirass server for worker tests: it answers the handshake,
// then hands out the build requests it was given, in order (a string is
// sent as the payload itself, for replies no encoder would write).

import { RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
} from "../../../lib/protocol/messages.ts";
import { hashOf } from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";

/**
 * A server that answers the handshake, then each work request with the next
 * of `builds` (and no-build once they are used up); records what it hears.
 */
export async function handingOutServer(builds: (Message | string)[]) {
  const router = await RouterSocket.bind({ hostname: "127.0.0.1", port: 0 });
  const heard: Message[] = [];
  const logPort = quietPort();
  const abort = new AbortController();
  const serving = (async () => {
    while (!abort.signal.aborted) {
      const { routingId, frames } = await router.receive(abort.signal);
      const message = decodeMessage(frames[frames.length - 1]);
      heard.push(message);
      const reply = (m: Message | string) =>
        router.send(routingId, [
          new Uint8Array(),
          typeof m === "string"
            ? new TextEncoder().encode(m)
            : encodeMessage(m),
        ]).catch(() => {});
      if (message.type === "worker-request-info") {
        await reply({
          type: "server-info",
          workerAddress: "127.0.0.1",
          logPort,
          publishPort: null,
        });
      } else if (message.type === "worker-request-work") {
        await reply(builds.shift() ?? { type: "no-build" });
      }
    }
  })().catch(() => {});
  return {
    port: router.port,
    heard,
    async close() {
      abort.abort();
      await router.close();
      await serving;
    },
  };
}

/** A derivation of the default store, for build requests. */
export const GOOD_DRV = `/gnu/store/${hashOf("drv", 1)}-hello-2.12.drv`;

/** A `build` request as a server sends it, with some fields replaced. */
export function buildRequest(
  fields: { drv?: string; timeout?: number; maxSilent?: number },
): Message {
  return {
    type: "build",
    drv: GOOD_DRV,
    priority: 9,
    timeout: 3600,
    maxSilent: 600,
    timestamp: null,
    system: "x86_64-linux",
    ...fields,
  };
}
