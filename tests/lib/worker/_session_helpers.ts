// What the worker tests share: a session's options and kept results, a
// whole worker's configuration, what a scripted server heard, in short,
// dispatchers that restart or whose result turns are watched, and ways to
// stop their sessions and close their servers and fixtures when a test ends.

import {
  runSession,
  type SessionOptions,
} from "../../../lib/worker/session.ts";
import type { WorkerConfig } from "../../../lib/worker/worker.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger } from "../../../lib/log.ts";
import { systemClock } from "../../../lib/clock.ts";
import type { Message } from "../../../lib/protocol/messages.ts";
import {
  eventually,
  fakeSpawner,
  type Fixture,
  routerWatched,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import type { RouterMessage } from "../../../lib/zmtp/router.ts";
import { bindAgain, quietPort } from "../../_ports.ts";
import type { BuildStatus, Store } from "../../../lib/store/types.ts";
import { UndeliveredResults } from "../../../lib/worker/undelivered_results.ts";

/** A worker's kept results, logging to `lines`, debug lines included. */
export function loggedResults(lines: string[]): UndeliveredResults {
  return new UndeliveredResults({
    logger: createLogger({
      level: "debug",
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
  });
}

/** Options of a session named `name` against `port`, logging to `lines`. */
export function sessionOptions(
  port: number,
  name: string,
  lines: string[],
  extra: Partial<SessionOptions> = {},
): SessionOptions {
  return {
    server: { hostname: "127.0.0.1", port },
    name,
    machine: "test",
    systems: ["x86_64-linux"],
    publishPort: 5558,
    substituteUrls: [],
    storeDir: "/gnu/store",
    guix: new Guix({
      logger: createLogger({ sink: () => {} }),
      spawn: fakeSpawner(),
    }),
    clock: systemClock,
    logger: createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    requestPeriodMs: 100,
    pingIntervalMs: 60_000,
    replyTimeoutMs: 60_000,
    ...extra,
  };
}

/**
 * The configuration of a worker of one session against `port` on loopback,
 * publishing on a free port of loopback, with no disk space to keep free.
 */
export function workerConfig(
  port: number,
  extra: Partial<WorkerConfig> = {},
): WorkerConfig {
  return {
    server: { hostname: "127.0.0.1", port },
    workers: 1,
    systems: ["x86_64-linux"],
    machine: "test",
    publishPort: 0,
    publishListen: "127.0.0.1",
    substituteUrls: [],
    requestPeriodMs: 100,
    pingIntervalMs: 60_000,
    publishArgs: [],
    minimumDiskSpace: 0,
    ...extra,
  };
}

/**
 * The types of the `heard` messages but pings (on a connection of their
 * own), with the drv of those that carry one.
 */
export function said(heard: Message[]): string[] {
  return heard.filter((m) => m.type !== "worker-ping").map((m) =>
    "drv" in m ? `${m.type} ${m.drv}` : m.type
  );
}

/**
 * `closable`, closed (with no arguments) when the `await using` binding that
 * holds it goes out of scope: a scenario's servers and dispatcher fixtures
 * are released however the test ends, without a try/finally around it.
 */
export function closing<T extends { close(): Promise<void> }>(
  closable: T,
): T & AsyncDisposable {
  return Object.assign(closable, {
    [Symbol.asyncDispose]: () => closable.close(),
  });
}

/**
 * `stoppable` (a running worker), stopped (with no arguments) when the
 * `await using` binding that holds it goes out of scope.
 */
export function stopping<T extends { stop(): Promise<void> }>(
  stoppable: T,
): T & AsyncDisposable {
  return Object.assign(stoppable, {
    [Symbol.asyncDispose]: () => stoppable.stop(),
  });
}

/**
 * runSession() on `options`, under an abort signal of its own. `stop()`
 * aborts the session and returns its end, and leaving the `await using`
 * scope that holds it does the same and awaits it: a session that ends in
 * error fails the test, and none outlives it.
 */
export function runningSession(options: SessionOptions) {
  const abort = new AbortController();
  const running = runSession(options, abort.signal);
  const stop = () => {
    abort.abort();
    return running;
  };
  return { running, stop, [Symbol.asyncDispose]: stop };
}

/** Waits until the build of `drv` in `f` has `status`; `what` names the wait. */
export async function untilStatus(
  f: Pick<Fixture, "status">,
  drv: string,
  status: BuildStatus,
  what?: string,
): Promise<void> {
  await eventually(async () => (await f.status(drv)) === status, what);
}

/**
 * A dispatcher fixture that the test kills and starts again on the same
 * port and database, as a server process that dies and comes back. Leaving
 * the `await using` scope that holds it closes whichever server is up and
 * removes the files the first one kept for the restart.
 */
export async function restartableFixture(
  options: Parameters<typeof startFixture>[0] = {},
) {
  let first: Fixture | undefined = await startFixture(options);
  let second: Fixture | undefined;
  const { port, database, root } = first;
  return {
    /** The server before its restart. */
    first,
    port,
    /** Kills the first server, keeping its database; resolves once down. */
    kill(): Promise<void> {
      const closing = first!.close(true);
      first = undefined;
      return closing;
    },
    /** Starts the second server, on the first one's port and database. */
    async restart(
      extra: Parameters<typeof startFixture>[0] = {},
    ): Promise<Fixture> {
      second = await bindAgain(() =>
        startFixture({ ...extra, port, database })
      );
      return second;
    },
    async [Symbol.asyncDispose]() {
      await first?.close();
      await second?.close();
      await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The options of a dispatcher fixture, its log port quiet, that shows each
 * message it receives to `watch` and runs its turns on `store(real)`: how a
 * test makes the turns carrying a build result fail or wait (see
 * ResultTurnFailure).
 */
export function watchedResultTurns(
  watch: (message: RouterMessage) => void,
  store: (real: Store) => Store,
): Parameters<typeof startFixture>[0] {
  return {
    logPort: quietPort(),
    routerSeenByDispatcher: (router) => routerWatched(router, watch),
    storeSeenByDispatcher: store,
  };
}
