// Probes that reach a worker session as it registers: the probe of a server
// restarted meanwhile starts the registration over; a flood of them from a
// server (or whoever pretends to be one) does not make one registration a
// probe, and the registration still ends.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
} from "../../../lib/protocol/messages.ts";
import { eventually } from "../server/_dispatch_fixture.ts";
import { said, sessionOptions } from "./_session_helpers.ts";
import { bindAgain, quietPort } from "../../_ports.ts";

const FLOOD = 200;

/** The request before whose first answer the flood comes. */
type FloodTrigger =
  | "lorica-hello"
  | "worker-request-info"
  | "worker-request-work";

/**
 * A Lorica-speaking server on `port` (default any) that answers the
 * handshake as a real one does, and every work request with `no-build`;
 * with `flood`, it sends `FLOOD` probes at once before its first answer to
 * that request; with `answersInfo` false, it leaves `worker-request-info`
 * unanswered. Records what it hears.
 */
async function scriptedServer(
  { port = 0, flood, answersInfo = true }: {
    port?: number;
    flood?: FloodTrigger;
    answersInfo?: boolean;
  } = {},
) {
  const router = await bindAgain(() =>
    RouterSocket.bind({ hostname: "127.0.0.1", port })
  );
  const heard: Message[] = [];
  const logPort = quietPort();
  const abort = new AbortController();
  let flooded = false;
  let nonces = 0;
  const serving = (async () => {
    while (!abort.signal.aborted) {
      const { routingId, frames } = await router.receive(abort.signal);
      const message = decodeMessage(frames[frames.length - 1]);
      heard.push(message);
      const send = (frames: Uint8Array[]) =>
        router.send(routingId, frames).catch(() => {});
      const reply = (m: Message) => send([new Uint8Array(), encodeMessage(m)]);
      if (message.type === flood && !flooded) {
        flooded = true;
        // All queued at once, as one burst.
        await Promise.all(
          Array.from({ length: FLOOD }, () => send([new Uint8Array()])),
        );
      }
      if (message.type === "lorica-hello") {
        await reply({
          type: "lorica-welcome",
          version: 1,
          features: ["request-id", "holding"],
          nonce: `${++nonces}`,
        });
      } else if (message.type === "worker-request-info" && answersInfo) {
        await reply({
          type: "server-info",
          workerAddress: "127.0.0.1",
          logPort,
          publishPort: null,
        });
      } else if (message.type === "worker-request-work") {
        await reply({ type: "no-build", requestId: message.requestId });
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

/**
 * Runs a session against `port`, logging to `lines`: it waits a minute for
 * a reply, far longer than any test here runs.
 */
function startSession(port: number, lines: string[], signal: AbortSignal) {
  return runSession(sessionOptions(port, "PROBED01", lines), signal);
}

Deno.test({
  name:
    "runSession() whose server restarts while it registers starts over at the new server's probe, and registers with it",
  async fn() {
    const first = await scriptedServer({ answersInfo: false });
    let second: Awaited<ReturnType<typeof scriptedServer>> | undefined;
    const abort = new AbortController();
    const lines: string[] = [];
    const running = startSession(first.port, lines, abort.signal);
    try {
      await eventually(
        () => said(first.heard).includes("worker-request-info"),
        "registration under way",
      );
      await first.close();
      second = await scriptedServer({ port: first.port });
      const restarted = second;
      await eventually(
        () => said(restarted.heard).includes("worker-request-work"),
        `work asked for\n${lines.join("\n")}`,
      );
      assert.deepEqual(said(restarted.heard).slice(0, 4), [
        "lorica-hello",
        "worker-request-info",
        "worker-ready",
        "worker-request-work",
      ]);
      // Started over at once: the lost request-info was not waited for.
      assert.ok(
        !lines.some((l) => l.startsWith("warn server silent")),
        lines.join("\n"),
      );
    } finally {
      abort.abort();
      await running;
      await first.close(); // Closing again is harmless.
      await second?.close();
    }
  },
});

/**
 * Where a flood comes, and the registrations it leaves in all: no more
 * during a registration, which the connection it went on answers; one more
 * for a burst that comes after (its first probe may be a restart), not one
 * a probe.
 */
const CASES: [FloodTrigger, string, number][] = [
  ["lorica-hello", "in answer to its hello", 1],
  ["worker-request-info", "during its registration", 1],
  ["worker-request-work", "in answer to a work request", 2],
];

for (const [trigger, when, registrations] of CASES) {
  Deno.test({
    name: `runSession() flooded with ${FLOOD} probes ${when} registers ${
      registrations === 1 ? "once" : "twice"
    } in all, not once a probe, and asks for work`,
    async fn() {
      const server = await scriptedServer({ flood: trigger });
      const abort = new AbortController();
      const lines: string[] = [];
      const running = startSession(server.port, lines, abort.signal);
      try {
        const heard = (type: string) =>
          server.heard.filter((m) => m.type === type);
        // Work asked for after the flood, and once more a period later:
        // the session is past it.
        const before = trigger === "worker-request-work" ? 1 : 0;
        await eventually(
          () => heard("worker-request-work").length >= before + 2,
          `work asked for\n${lines.join("\n")}`,
        );
        // Each registration: a hello, a request for server-info, a ready.
        for (
          const type of ["lorica-hello", "worker-request-info", "worker-ready"]
        ) {
          assert.equal(
            heard(type).length,
            registrations,
            `${heard(type).length} ${type} for ${FLOOD} probes\n${
              lines.join("\n")
            }`,
          );
        }
        // Registered as the Lorica server it is: work requests carry ids.
        assert.ok(
          heard("worker-request-work").every((m) =>
            m.type === "worker-request-work" && m.requestId !== undefined
          ),
          JSON.stringify(heard("worker-request-work")),
        );
        assert.ok(
          lines.every((l) =>
            !l.startsWith("info worker registered") ||
            l.includes(" lorica=true ")
          ),
          lines.join("\n"),
        );
      } finally {
        abort.abort();
        await running;
        await server.close();
      }
    },
  });
}
