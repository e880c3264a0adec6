// The worker process: a publish server and N sessions against one server.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix } from "../guix/guix_command.ts";
import { startPublish } from "../guix/publish_server.ts";
import {
  runSession,
  type SessionOptions,
  StoreDirMismatchError,
  type UnderwayBuild,
  urlHost,
} from "./session.ts";
import { ServerAbsence } from "./server_absence.ts";
import { DiskGuard } from "./disk_guard.ts";
import { UndeliveredResults } from "./undelivered_results.ts";
import { HandedBackBuilds } from "./handed_back_builds.ts";
import { OutputsBeingFetched } from "./outputs_being_fetched.ts";
import { UntoldFetches } from "./untold_fetches.ts";
import {
  fixedServer,
  followServer,
  type ServerSource,
} from "../discovery/server_locator.ts";

export interface WorkerConfig {
  /** The server; absent when `deps.servers` finds it (DNS-SD). */
  server?: { hostname: string; port: number };
  /** Concurrent builds (sessions), like `cuirass remote-worker --workers`. */
  workers: number;
  systems: string[];
  machine: string;
  publishPort: number;
  /** Address the publish server binds to; default all IPv4 interfaces. */
  publishListen: string;
  substituteUrls: string[];
  requestPeriodMs: number;
  pingIntervalMs: number;
  /** Extra `guix publish` arguments, e.g. key files. */
  publishArgs: string[];
  // --- Robustness options (issue 7); all optional, defaults in brackets. ---
  /** Longest wait for a server reply before reconnecting [60 s]. */
  replyTimeoutMs?: number;
  /** Offer Lorica extensions; false behaves exactly as Cuirass [true]. */
  extensions?: boolean;
  /**
   * Key for a server that requires worker authentication, and the file it
   * was read from, for the log [none].
   */
  authKey?: { id: string; secret: string; file?: string };
  /** Free bytes needed on the store and TMPDIR file systems [5 GiB]. */
  minimumDiskSpace?: number;
  /** Directories checked for free space [NIX_STORE_DIR or /gnu/store, TMPDIR]. */
  diskPaths?: string[];
  /** The store handed-out derivations must be in [NIX_STORE_DIR or /gnu/store]. */
  storeDir?: string;
}

export interface WorkerDeps {
  guix: Guix;
  logger: Logger;
  clock?: Clock;
  /** Free bytes of a path's file system; default statfs (tests inject). */
  freeBytes?: (path: string) => Promise<number>;
  /** Where the server is, and where it moves; default `config.server`. */
  servers?: ServerSource;
  /** Opens the sessions' DEALER sockets; default `DealerSocket.connect`. */
  connectDealer?: SessionOptions["connectDealer"];
}

export interface RunningWorker {
  /** The session names, one per concurrent build slot. */
  readonly names: string[];
  /** Resolves when every session ended (only after `stop()`, or on error). */
  readonly done: Promise<void>;
  /**
   * Resolves when the worker can no longer serve (its guix publish died,
   * or the server's store directory is not its own): it already asks for
   * no more work; the caller stops it and exits with an error.
   */
  readonly failed: Promise<Error>;
  /**
   * Stops the worker. With `drain`, no more work is requested and builds
   * under way are finished and reported first, their results acknowledged
   * by a server that acknowledges results, and the successes' outputs
   * fetched by a server that says when ("outputs-fetched"; the publish
   * server stays up until then), for at most `drainMs`. Then whatever
   * still builds is given up (handed back: the server requeues it), a
   * build that ended meanwhile (its log still being sent) is reported,
   * and for at most `graceMs` more the sessions stay only to hear the
   * acks of the results sent and the ends of the fetches, the publish
   * server up: a success reported at the timeout is fetched, not built
   * again. The results still unacknowledged or being fetched after that
   * are named in the log. Sessions with nothing under way, unacknowledged
   * or being fetched end at once; the publish server stays up a while
   * longer after a success reported to a server that does not say when it
   * fetched (see UntoldFetches). A later call does not stop twice: it
   * returns the same promise, and without `drain` it cuts the drain (and
   * its grace) short. `signal` names the signal that asked for the stop,
   * for the log.
   */
  stop(
    options?: {
      drain?: boolean;
      drainMs?: number;
      graceMs?: number;
      signal?: string;
    },
  ): Promise<void>;
}

/**
 * The default grace after a drain's timeout [30 s]: what the server needs
 * to take in a result and fetch a success's outputs, which for most
 * builds is seconds; and within the 60 s the worker's systemd unit leaves
 * between the default --drain-timeout (240 s) and its TimeoutStopSec
 * (300 s), past which systemd kills the worker and its guix publish.
 */
export const DEFAULT_DRAIN_GRACE_MS = 30_000;

const NAME_ALPHABET =
  "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** A random 8-character worker name, as Cuirass makes them. */
export function randomWorkerName(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => NAME_ALPHABET[b % NAME_ALPHABET.length])
    .join("");
}

/**
 * Starts the publish server, then the sessions.
 * @throws {PublishStartError} when guix publish cannot start.
 */
export async function startWorker(
  config: WorkerConfig,
  deps: WorkerDeps,
): Promise<RunningWorker> {
  const { guix, logger } = deps;
  const clock = deps.clock ?? systemClock;
  const abort = new AbortController();
  if (deps.servers === undefined && config.server === undefined) {
    throw new TypeError(
      "Cannot start a worker: no server and no way to find one",
    );
  }
  const cores = Math.max(
    1,
    Math.ceil(navigator.hardwareConcurrency / config.workers),
  );
  const names = Array.from({ length: config.workers }, randomWorkerName);
  const disk = new DiskGuard({
    paths: config.diskPaths ?? [
      Deno.env.get("NIX_STORE_DIR") ?? "/gnu/store",
      Deno.env.get("TMPDIR") ?? "/tmp",
    ],
    minimumBytes: config.minimumDiskSpace ?? 5 * 1024 ** 3,
    freeBytes: deps.freeBytes,
    clock,
    logger,
    logPeriodMs: config.requestPeriodMs,
  });
  const source = deps.servers ?? fixedServer(config.server!);
  // No work is asked for before the results can be published.
  const publish = await startPublish(guix, {
    port: config.publishPort,
    listen: config.publishListen,
    extraArgs: config.publishArgs,
    logger,
    clock,
  });
  const draining = new AbortController();
  // Aborted once a drain's timeout is over: builds under way are given up,
  // and the sessions stay only for what they owe the server (see stop()).
  const drainOver = new AbortController();
  // The builds under way in every session, for the log of a stop that
  // abandons them.
  const underway = new Set<UnderwayBuild>();
  // The results each name's sessions could not send, delivered by the
  // name's next session, and those sent that the server has not yet
  // acknowledged, sent again at each registration until it does: the
  // server knows the build as that name's. Kept here, not per run of the
  // sessions: a server that moved (DNS-SD) may be the same one at a new
  // address.
  const results = new Map(
    names.map((name) => [
      name,
      new UndeliveredResults({ logger: logger.with({ worker: name }) }),
    ]),
  );
  // The successes of each name whose outputs the server is fetching from
  // the publish server, which a draining stop keeps up until it is done.
  const fetching = new Map(
    names.map((name) => [name, new OutputsBeingFetched()]),
  );
  // The last success reported to a server that will not say when it
  // fetched its outputs: a draining stop keeps the publish server up for
  // that fetch a while (see stopOnce).
  const untold = new UntoldFetches(clock);
  // The builds any session refused and handed back: refused for good when
  // handed out again, to whichever session, whatever sessions failed or
  // were restarted meanwhile.
  const handedBack = new HandedBackBuilds();
  // A dead publish server makes every build wasted: the server cannot
  // fetch its outputs. The worker then takes no more work and its owner
  // stops it as on SIGTERM, builds under way finishing, and exits with an
  // error, rather than restarting guix publish itself: systemd's
  // Restart=on-failure (or Shepherd's respawn) restarts the whole worker
  // with its own rate limits, in plain sight of the operator, and the new
  // worker checks the port and keys again at startup. The builds reported
  // meanwhile are fetched from the restarted publish server, which the
  // server's fetcher retries for minutes. A server of another store is no
  // better: every build it hands out would be refused.
  const fatal = Promise.withResolvers<Error>();
  let failing = false;
  function fail(reason: string, error: Error) {
    // Every session meets a server of another store: said once.
    if (failing) return;
    failing = true;
    logger.error("worker stopping", { reason, error });
    draining.abort();
    fatal.resolve(error);
  }
  // A dead publish server serves no fetch: a drain's grace is not given,
  // nor are the fetches under way awaited (their ends would hold a drain
  // until its timeout). Nothing is said to the server: its fetch of them
  // fails, and it tries again until its deadline, as when the worker is
  // gone: the worker restarted with a new guix publish serves them.
  let publishDead = false;
  publish.died.then((error) => {
    publishDead = true;
    fail("guix publish exited", error);
    for (const [name, kept] of fetching) {
      for (const drv of kept.abandon()) {
        logger.warn("fetch end no longer awaited", {
          worker: name,
          drv,
          reason: "guix publish exited",
        });
      }
    }
  });
  let sessions: Promise<void> = Promise.resolve();
  // When the server moves (DNS-SD), the sessions are restarted against it.
  const done = followServer(
    source,
    (server, signal) => {
      // The server away is said once for the worker, not once a session.
      const absence = new ServerAbsence({
        server: `${urlHost(server.hostname)}:${server.port}`,
        clock,
        logger,
      });
      return sessions = Promise.all(names.map((name) =>
        runSessionForever(
          {
            server: { hostname: server.hostname, port: server.port },
            name,
            machine: config.machine,
            systems: config.systems,
            publishPort: config.publishPort,
            substituteUrls: config.substituteUrls,
            storeDir: config.storeDir,
            guix: deps.guix,
            clock,
            logger: deps.logger,
            requestPeriodMs: config.requestPeriodMs,
            pingIntervalMs: config.pingIntervalMs,
            cores,
            replyTimeoutMs: config.replyTimeoutMs,
            extensions: config.extensions,
            authKey: config.authKey,
            disk,
            draining: draining.signal,
            drainOver: drainOver.signal,
            underway,
            results: results.get(name)!,
            fetching: fetching.get(name)!,
            untold,
            handedBack,
            connectDealer: deps.connectDealer,
            absence,
          },
          signal,
          fail,
        )
      )).then(() => {}).finally(() => absence.close());
    },
    abort.signal,
    (error) => logger.error("sessions failed", { error }),
  );
  // Aborted by a stop without drain: the drain, if any, ends at once.
  const hurry = new AbortController();
  let stopping: Promise<void> | undefined;
  // True from a draining stop until its builds are done or given up, and
  // the publish server kept up for an untold fetch no longer.
  let drainUnderWay = false;
  /** Whether the sessions all ended within `ms` (false: a hurry came). */
  async function sessionsEndWithin(ms: number): Promise<boolean> {
    const timer = new AbortController();
    const ended = await Promise.race([
      sessions.then(() => true),
      clock.sleep(ms, AbortSignal.any([timer.signal, hurry.signal]))
        .then(() => false, () => false),
    ]);
    timer.abort();
    return ended;
  }
  /**
   * After a drain, keeps the publish server up for the fetch of the last
   * success reported to a server that does not say when it fetched (see
   * UntoldFetches): counted from that report, and ending by `deadline`
   * (monotonic), the drain's timeout and grace, the stop's whole budget.
   * Not for a dead publish server; a stop without drain cuts it short.
   */
  async function awaitUntoldFetch(deadline: number) {
    const owed = untold.owed(deadline);
    if (owed === undefined || publishDead || hurry.signal.aborted) return;
    logger.info("publish kept up", {
      drv: owed.drv,
      wait: Math.ceil(owed.ms / 100) / 10,
      reason: "the server does not say when it fetched the outputs",
    });
    await clock.sleep(owed.ms, hurry.signal).catch(() => {});
  }
  async function stopOnce(drain: boolean, drainMs: number, graceMs: number) {
    const deadline = clock.monotonic() + drainMs + graceMs;
    if (drain) {
      logger.info("worker draining", { timeout: drainMs / 1000 });
      draining.abort();
      drainUnderWay = true;
      // Without this line the abandoned builds' only trace is the kill of
      // their guix build; its grace says why the worker stays up past it.
      if (!await sessionsEndWithin(drainMs) && !hurry.signal.aborted) {
        const grace = publishDead ? 0 : graceMs;
        logger.warn("drain timeout over", {
          builds: underway.size,
          timeout: drainMs / 1000,
          grace: grace / 1000,
        });
        // A success reported now (its guix build ended as the timeout
        // came) or shortly before is fetched from the publish server:
        // stopping it at once would fail that fetch, and the build be done
        // again. Nor is such a success kept back instead (handed back), for
        // its outputs, built, are cheap to fetch and dear to build. The
        // grace, bounded, lets the sessions hear the acks and the fetches'
        // ends; sessions that owe the server nothing end at once.
        if (grace > 0) {
          drainOver.abort();
          if (!await sessionsEndWithin(grace) && !hurry.signal.aborted) {
            logger.warn("drain grace over", { grace: grace / 1000 });
          }
        }
      }
    }
    abort.abort();
    await done;
    if (drain) {
      await awaitUntoldFetch(deadline);
      drainUnderWay = false;
    }
    // Kept in this process only: a result the server has not acknowledged
    // when the worker stops (a drain whose grace ran out waiting for its
    // ack, a stop without drain) is lost, and its build done again.
    const unacknowledged = [...results.values()].flatMap((kept) => kept.drvs());
    if (unacknowledged.length > 0) {
      logger.warn("results unacknowledged", {
        drvs: unacknowledged.join(","),
        reason: "the worker stopped before the server acknowledged them",
      });
    }
    // The server cannot fetch these once the publish server is gone: their
    // builds are built again, or fail past its fetch deadline.
    const unfetched = [...fetching.values()].flatMap((kept) => kept.drvs());
    if (unfetched.length > 0) {
      logger.warn("outputs still being fetched", {
        drvs: unfetched.join(","),
        reason: "the worker stopped before the server fetched them",
      });
    }
    await publish.stop();
    logger.info("worker stopped");
  }
  return {
    names,
    done,
    failed: fatal.promise,
    stop({
      drain = false,
      drainMs = 300_000,
      graceMs = DEFAULT_DRAIN_GRACE_MS,
      signal,
    } = {}) {
      if (!drain) {
        if (drainUnderWay && !hurry.signal.aborted) {
          logger.warn("stop without drain", { signal, builds: underway.size });
        }
        hurry.abort();
      }
      stopping ??= stopOnce(drain, drainMs, graceMs);
      return stopping;
    },
  };
}

/**
 * Restarts a session that failed, after a pause, until aborted; one that
 * found the server's store not its own goes to `fail` instead, for no
 * later session would do better.
 */
async function runSessionForever(
  session: SessionOptions,
  signal: AbortSignal,
  fail: (reason: string, error: Error) => void,
) {
  const { clock, draining, logger, name, requestPeriodMs } = session;
  while (!signal.aborted && !draining?.aborted) {
    try {
      await runSession(session, signal);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof StoreDirMismatchError) {
        fail("the server's store directory is not this worker's", error);
        return;
      }
      logger.error("session failed", { worker: name, error });
      await clock.sleep(
        requestPeriodMs,
        AbortSignal.any(draining ? [signal, draining] : [signal]),
      ).catch(() => {});
    }
  }
}
