// A worker of one session whose DEALERs lose chosen sends, as when the
// connection is lost mid-message, for the tests of what a worker does with
// what it could not send (a result, a refusal, a work request).

import { startWorker, type WorkerDeps } from "../../../lib/worker/worker.ts";
import { type DealerOptions, DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { ZmtpClosedError } from "../../../lib/zmtp/connection.ts";
import { decodeMessage } from "../../../lib/protocol/messages.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import { fakeSpawner } from "../server/_dispatch_fixture.ts";
import { workerConfig } from "./_session_helpers.ts";
import { lingeringChild, PUBLISH_SAYS } from "./_lingering_child.ts";

/**
 * Opens real DEALER sockets whose sends of a build result (or of the
 * messages of `types`) fail while `failing()` says so, as when the
 * connection is lost mid-message; `failed` counts the sends that failed.
 */
export function dealersLosingResults(
  failing: (failed: number) => boolean,
  types = ["build-succeeded", "build-failed"],
) {
  const state = { failed: 0 };
  const connect = (options: DealerOptions): DealerSocket => {
    const dealer = DealerSocket.connect(options);
    // Every send goes through sendAll (send is one message of it).
    const sendAll = dealer.sendAll.bind(dealer);
    dealer.sendAll = (messages, signal) => {
      const type = messages
        .filter((frames) => frames.length === 2)
        .map((frames) => decodeMessage(frames[1]).type)
        .find((type) => types.includes(type));
      if (type !== undefined && failing(state.failed)) {
        state.failed++;
        return Promise.reject(
          new ZmtpClosedError(
            `Cannot send ${type} to ZMTP peer "127.0.0.1:${options.port}": connection lost mid-message (injected)`,
          ),
        );
      }
      return sendAll(messages, signal);
    };
    return dealer;
  };
  return { connect, state };
}

/**
 * guix publish runs until stopped; each guix build succeeds, at once or
 * once `release` resolves.
 */
export function succeedingGuix(
  builds: string[][],
  release: Promise<void> = Promise.resolve(),
): Guix {
  const building = fakeSpawner();
  const spawn: Spawner = (argv, options) => {
    if (argv.includes("publish")) return lingeringChild(options, PUBLISH_SAYS);
    builds.push(argv);
    const child = building(argv, options);
    return { ...child, status: release.then(() => child.status) };
  };
  return new Guix({ logger: createLogger({ sink: () => {} }), spawn });
}

/**
 * A worker of one session against the server at `port` on loopback,
 * logging to `lines`; a failed session's successor starts 100 ms later.
 */
export function oneSessionWorker(
  port: number,
  lines: string[],
  options: {
    guix: Guix;
    connectDealer: WorkerDeps["connectDealer"];
  },
) {
  return startWorker(
    workerConfig(port, { replyTimeoutMs: 60_000, storeDir: "/gnu/store" }),
    {
      guix: options.guix,
      logger: createLogger({
        timestamps: false,
        sink: (line) => lines.push(line),
      }),
      freeBytes: () => Promise.resolve(1024 ** 4),
      connectDealer: options.connectDealer,
    },
  );
}
