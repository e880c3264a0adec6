// A keyed worker session against the real dispatcher (worker keys
// required) whose welcome carries a store-dir it cannot read: the rest of
// the welcome stands, so the session proves its key, registers as a
// Lorica worker and builds, and says what was wrong with the value.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { type DealerOptions, DealerSocket } from "../../../lib/zmtp/dealer.ts";
import {
  eventually,
  job,
  startFixture,
  STORE_DIR,
} from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import { sessionOptions } from "./_session_helpers.ts";

const SECRET = "shared-secret-of-the-farm";

/**
 * Opens real DEALER sockets that replace the store-dir of each welcome
 * received with `storeDir`, written as it is (an s-expression).
 */
function dealersSpoilingStoreDir(storeDir: string) {
  const state = { spoiled: 0 };
  const connect = (options: DealerOptions): DealerSocket => {
    const dealer = DealerSocket.connect(options);
    const receive = dealer.receive.bind(dealer);
    dealer.receive = async (signal) => {
      const frames = await receive(signal);
      const text = new TextDecoder().decode(frames[frames.length - 1]);
      if (!text.startsWith("(lorica-welcome ")) return frames;
      state.spoiled++;
      const spoiled = text.replace(
        /\(store-dir "[^"]*"\)/,
        `(store-dir ${storeDir})`,
      );
      return [...frames.slice(0, -1), new TextEncoder().encode(spoiled)];
    };
    return dealer;
  };
  return { connect, state };
}

Deno.test({
  name:
    "a keyed session whose welcome has a store-dir it cannot read keeps the rest of it: it proves its key, builds, and logs an error quoting the value",
  async fn() {
    const f = await startFixture({
      logPort: quietPort(),
      workerKeys: new Map([["farm", SECRET]]),
    });
    const abort = new AbortController();
    const lines: string[] = [];
    const name = "UNREAD01";
    const dealers = dealersSpoilingStoreDir('"gnu/store"');
    try {
      const [drv] = await f.addJobs([job("hello", 1)]);
      const running = runSession(
        sessionOptions(f.port, name, lines, {
          authKey: { id: "farm", secret: SECRET },
          storeDir: STORE_DIR,
          connectDealer: dealers.connect,
        }),
        abort.signal,
      );
      await eventually(
        async () => (await f.store.getBuildByDerivation(drv))?.worker === name,
        `build handed out\n${lines.join("\n")}\n${f.lines.join("\n")}`,
      );
      assert.ok(dealers.state.spoiled >= 1, "a welcome was spoiled");
      assert.ok(
        f.lines.some((l) =>
          l.startsWith(`info worker ready worker=${name} `) &&
          l.includes(" lorica=true ")
        ),
        f.lines.join("\n"),
      );
      assert.ok(
        !f.lines.some((l) => l.startsWith("warn worker refused ")),
        f.lines.join("\n"),
      );
      const errors = lines.filter((l) => l.startsWith("error "));
      assert.ok(errors.length >= 1, lines.join("\n"));
      assert.ok(
        errors.every((l) =>
          l.startsWith(
            `error store directory unreadable worker=${name} server=127.0.0.1:${f.port} error=`,
          ) &&
          l.includes("is not an absolute directory") &&
          l.includes("gnu/store") &&
          l.endsWith(` action="checking each derivation's store instead"`)
        ),
        errors.join("\n"),
      );
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});
