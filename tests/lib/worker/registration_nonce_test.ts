// A keyed worker session whose registration straddles a server restart (its
// messages waited for the server's next connection, or the connection went
// as the answer came): against a server that requires worker keys, the
// session says hello once on the connection its registration goes on,
// signs the nonce that connection gave it, sends its proof on no other, and
// is never refused.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { type DealerOptions, DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { decodeMessage, type Message } from "../../../lib/protocol/messages.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { sessionOptions } from "./_session_helpers.ts";
import { bindAgain } from "../../_ports.ts";

const SECRET = "shared-secret-of-the-farm";

/** A message of the registration, sent or received, held up. */
type Hold = { sent: Message["type"] } | { received: Message["type"] };

/**
 * Opens real DEALER sockets that hold up the first message `hold` names
 * until `release()`: a send let go once the connection is lost waits for
 * the next connection as any send does; a message received is handed to
 * the session only then. `sent` lists the types of the messages the
 * session sent on them, pings left out.
 */
function dealersHolding(hold: Hold) {
  const sent: string[] = [];
  const reached = Promise.withResolvers<DealerSocket>();
  const released = Promise.withResolvers<void>();
  let held = false;
  const typeOf = (frames: Uint8Array[]) =>
    decodeMessage(frames[frames.length - 1]).type;
  const connect = (options: DealerOptions): DealerSocket => {
    const dealer = DealerSocket.connect(options);
    const holdUp = async (types: string[], type: string) => {
      if (held || !types.includes(type)) return;
      held = true;
      reached.resolve(dealer);
      await released.promise;
    };
    // Every send goes through sendAll (send is one message of it).
    const sendAll = dealer.sendAll.bind(dealer);
    dealer.sendAll = async (messages, signal) => {
      const types = messages.map(typeOf);
      if ("sent" in hold) await holdUp(types, hold.sent);
      sent.push(...types.filter((t) => t !== "worker-ping"));
      return sendAll(messages, signal);
    };
    const receive = dealer.receive.bind(dealer);
    dealer.receive = async (signal) => {
      const frames = await receive(signal);
      const probe = frames.length === 1 && frames[0].length === 0;
      if ("received" in hold && !probe) {
        await holdUp([typeOf(frames)], hold.received);
      }
      return frames;
    };
    return dealer;
  };
  return {
    connect,
    /** The dealer whose message is held, once it is. */
    reached: reached.promise,
    release: () => released.resolve(),
    sent,
  };
}

/** What is held up, and how the test names it. */
const CASES: [Hold, string][] = [
  [{ sent: "lorica-hello" }, "whose hello waited for a new connection"],
  // The hello went on the lost connection: the server-info that answers
  // the request then comes with no welcome before it.
  [
    { sent: "worker-request-info" },
    "whose request for server info waited for a new connection",
  ],
  // Its proof signs the lost connection's nonce: sent on the next one,
  // the ready would be refused there.
  [
    { received: "server-info" },
    "whose connection was lost as it read the server info",
  ],
];

for (const [hold, what] of CASES) {
  Deno.test({
    name:
      `a keyed session ${what} registers once on the restarted server's connection and is not refused`,
    async fn() {
      const name = "NONCE001";
      const keys = new Map([["farm", SECRET]]);
      let first: Fixture | undefined = await startFixture({ workerKeys: keys });
      const port = first.port;
      const dealers = dealersHolding(hold);
      const lines: string[] = [];
      const abort = new AbortController();
      const running = runSession(
        sessionOptions(port, name, lines, {
          authKey: { id: "farm", secret: SECRET },
          connectDealer: dealers.connect,
        }),
        abort.signal,
      );
      let restarted: Fixture | undefined;
      try {
        // The server goes while the message is held.
        const dealer = await dealers.reached;
        await first.close();
        first = undefined;
        await eventually(() => !dealer.connected, "connection lost");
        const before = dealers.sent.length;
        dealers.release();
        const f = restarted = await bindAgain(() =>
          startFixture({ port, workerKeys: keys })
        );
        const [drv] = await f.addJobs([job("guarded", 1)]);
        await eventually(
          async () =>
            (await f.store.getBuildByDerivation(drv))?.worker === name,
          `build handed to ${name}`,
        ).catch((error) => {
          // What each side logged says which step went wrong.
          throw new Error(
            `${error.message}\nserver:\n${f.lines.join("\n")}\n` +
              `worker:\n${lines.join("\n")}`,
            { cause: error },
          );
        });
        const refused = f.lines.filter((l) =>
          l.startsWith("warn worker refused") ||
          l.startsWith("warn work refused")
        );
        assert.deepEqual(refused, []);
        // One hello on the new connection: its probe did not make the
        // registration that waited for it start over.
        const since = dealers.sent.slice(before);
        assert.equal(
          since.filter((t) => t === "lorica-hello").length,
          1,
          since.join(" "),
        );
      } finally {
        dealers.release();
        abort.abort();
        await running;
        await first?.close();
        await restarted?.close();
      }
    },
  });
}
