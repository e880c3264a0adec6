// A keyed worker session whose build ends while the server restarts: its
// result must reach the restarted server on a connection that registered,
// for a server that requires worker keys ignores a result from any other,
// and the build would then be requeued and built again.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { type DealerOptions, DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { decodeMessage } from "../../../lib/protocol/messages.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { sessionOptions } from "./_session_helpers.ts";
import { bindAgain, quietPort } from "../../_ports.ts";

const SECRET = "shared-secret-of-the-farm";

/**
 * guix builds that succeed: the first once `finish()` is called, any
 * later one at once. `started` counts them.
 */
function buildsEndingOnCue() {
  const state = { started: 0 };
  const first = Promise.withResolvers<void>();
  const spawn: Spawner = () => {
    state.started++;
    const ended = state.started === 1 ? first.promise : Promise.resolve();
    const child: Child = {
      pid: 4343,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr: ReadableStream.from([new Uint8Array()]),
      stdin: null,
      status: ended.then(() => ({ code: 0, signal: null })),
      kill() {},
    };
    return child;
  };
  return {
    state,
    finish: () => first.resolve(),
    guix: new Guix({ logger: createLogger({ sink: () => {} }), spawn }),
  };
}

/**
 * Real DEALER sockets that report the requests and results the session
 * sends, and the first thing it sends after `watch()` is called.
 */
function watchedDealers() {
  const dealers: DealerSocket[] = [];
  let watching = false;
  const sentAfterWatch = Promise.withResolvers<string[]>();
  const connect = (options: DealerOptions): DealerSocket => {
    const dealer = DealerSocket.connect(options);
    dealers.push(dealer);
    const sendAll = dealer.sendAll.bind(dealer);
    dealer.sendAll = (messages, signal) => {
      const types = messages.map((frames) =>
        decodeMessage(frames[frames.length - 1]).type
      );
      if (watching && !types.includes("worker-ping")) {
        sentAfterWatch.resolve(types);
      }
      return sendAll(messages, signal);
    };
    return dealer;
  };
  return {
    connect,
    /** The session's first dealer: that of its requests (then pings). */
    requests: () => dealers[0],
    watch: () => (watching = true),
    sentAfterWatch: sentAfterWatch.promise,
  };
}

Deno.test({
  name:
    "a keyed session whose build ends while the server is away registers on the restarted server before it reports: the result counts, and the build is not built again",
  async fn() {
    const name = "RESULT01";
    const keys = new Map([["farm", SECRET]]);
    let first: Fixture | undefined = await startFixture({
      workerKeys: keys,
      logPort: quietPort(),
    });
    const port = first.port;
    const database = first.database;
    const firstRoot = first.root;
    const [drv] = await first.addJobs([job("restart-straddler", 1)]);
    const builds = buildsEndingOnCue();
    const dealers = watchedDealers();
    const lines: string[] = [];
    const abort = new AbortController();
    const running = runSession(
      sessionOptions(port, name, lines, {
        authKey: { id: "farm", secret: SECRET },
        guix: builds.guix,
        connectDealer: dealers.connect,
      }),
      abort.signal,
    );
    let restarted: Fixture | undefined;
    try {
      const server = first;
      await eventually(
        async () => (await server.status(drv)) === BuildStatus.started,
        "build started",
      );
      await first.close(true);
      first = undefined;
      await eventually(
        () => !dealers.requests().connected,
        "connection lost",
      );
      // The build ends while the server is away: what the session sends
      // then waits for the restarted server's connection.
      dealers.watch();
      builds.finish();
      await dealers.sentAfterWatch;
      const f = restarted = await bindAgain(() =>
        startFixture({
          port,
          database,
          workerKeys: keys,
          logPort: quietPort(),
        })
      );
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.succeeded,
        "build recorded as succeeded",
      ).catch((error) => {
        throw new Error(
          `${error.message}\nserver:\n${f.lines.join("\n")}\n` +
            `worker:\n${lines.join("\n")}`,
          { cause: error },
        );
      });
      assert.deepEqual(
        f.lines.filter((l) =>
          l.startsWith("warn result ignored") ||
          l.startsWith("warn build requeued")
        ),
        [],
      );
      assert.equal(builds.state.started, 1, "built once");
    } finally {
      builds.finish();
      abort.abort();
      await running;
      await first?.close();
      await restarted?.close();
      await Deno.remove(firstRoot, { recursive: true }).catch(() => {});
    }
  },
});
