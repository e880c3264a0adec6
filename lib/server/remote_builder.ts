// Remote mode: workers connect over ZeroMQ, stream logs, publish results.

import { registerBuildProducts } from "./build_products.ts";
import type { GcRoots } from "../guix/gc_roots.ts";
import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix } from "../guix/guix_command.ts";
import { type Build, BuildStatus, type Store } from "../store/types.ts";
import { RouterSocket } from "../zmtp/router.ts";
import { startLogReceiver } from "../protocol/log_receiver.ts";
import { Dispatcher, routerMessageLimit } from "./dispatcher.ts";
import { OutputFetcher } from "./output_fetcher.ts";
import { sweepWorkers } from "./worker_sweeper.ts";
import { sameAddress } from "./worker_links.ts";
import { listening, runCleanups } from "./lifecycle.ts";
import { inStore } from "./missing_derivation.ts";

export interface RemoteBuilderConfig {
  /** Address the worker-facing ports bind to. */
  listen: string;
  backendPort: number;
  logPort: number;
  /** The server's publish port as told to workers; null when not publishing. */
  publishPort: number | null;
  cacheDir: string;
  storeDir: string;
  workerTimeoutSeconds: number;
  workerKeys?: Map<string, string> | null;
  maxBuildWaitSeconds?: number | null;
  sweepIntervalMs?: number;
  maxLogBytes?: number;
  /**
   * ZeroMQ connections held at once (each worker session uses two);
   * default the ROUTER's, 1024.
   */
  maxWorkerConnections?: number;
  /**
   * ZeroMQ connections one address may hold at once, so that one host
   * cannot take every place; default the ROUTER's, 256 (or
   * maxWorkerConnections when smaller). A farm whose workers reach the
   * server through one NAT address needs more.
   */
  maxWorkerConnectionsPerAddress?: number;
  fetchDeadlineMs?: number;
  fetchRetryDelayMs?: number;
  /** Asked for new outputs' narinfos, so that a caching publish bakes them. */
  triggerSubstituteUrl?: string | null;
}

export interface RemoteBuilderDeps {
  store: Store;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Each chunk of a build log as it arrives (live log views, metrics). */
  onLogChunk?: (drv: string, chunk: Uint8Array) => void;
  onLogComplete?: (drv: string, bytes: number) => void;
  onSubmitted?: (build: Build, worker: string, now: number) => void;
  /** Roots for build products; none without. */
  gcRoots?: GcRoots;
  /**
   * Whether a derivation is in the server's store, so that a build whose
   * derivation vanished fails alone (case C14); default a look at its
   * file.
   */
  inStore?: (path: string) => Promise<boolean>;
}

export interface RemoteBuilder {
  readonly backendPort: number;
  readonly logPort: number;
  cancelBuild(id: number): Promise<boolean>;
  restartBuild(id: number): Promise<boolean>;
  /** Cancels the pending builds of an evaluation; returns how many. */
  cancelEvaluation(id: number): Promise<number>;
  /** Schedules every build of an evaluation again; returns how many. */
  restartEvaluation(id: number): Promise<number>;
  /** True while worker `name` is too short of disk space to take work. */
  workerDiskLow(name: string): boolean;
  /** Resolves when every fetch of finished builds' outputs is done. */
  fetchesIdle(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the log receiver, the ZeroMQ dispatcher and the worker sweeper. */
export async function startRemoteBuilder(
  config: RemoteBuilderConfig,
  deps: RemoteBuilderDeps,
): Promise<RemoteBuilder> {
  const { store, guix, clock, logger } = deps;
  const abort = new AbortController();
  const cleanups: (() => Promise<unknown>)[] = [];
  try {
    const logReceiver = await listening(
      "log",
      config.listen,
      config.logPort,
      () =>
        startLogReceiver({
          hostname: config.listen,
          port: config.logPort,
          cacheDir: config.cacheDir,
          storeDir: config.storeDir,
          logger: logger.with({ part: "logs" }),
          maxLogBytes: config.maxLogBytes,
          // A session uploads one log at a time, on a connection of its
          // own: as many uploads as sessions, at least the default.
          maxConnections: Math.max(
            256,
            Math.ceil((config.maxWorkerConnections ?? 0) / 2),
          ),
          onChunk: deps.onLogChunk,
          onComplete: deps.onLogComplete,
          accept: (drv, peerAddress) => runsAt(store, drv, peerAddress),
        }),
    );
    cleanups.push(() => logReceiver.close());

    const late: { dispatcher?: Dispatcher } = {};
    const router = await listening(
      "backend",
      config.listen,
      config.backendPort,
      () =>
        RouterSocket.bind({
          hostname: config.listen,
          port: config.backendPort,
          maxMessageBytes: routerMessageLimit(),
          maxConnections: config.maxWorkerConnections,
          maxConnectionsPerAddress: config.maxWorkerConnectionsPerAddress,
          logger: logger.with({ part: "zmtp" }),
          onDisconnect: (peer) =>
            late.dispatcher?.peerDisconnected(peer.routingId),
        }),
    );
    cleanups.push(() => router.close());

    const present = deps.inStore ?? inStore;
    const fetcher = new OutputFetcher({
      store,
      guix,
      clock,
      logger: logger.with({ part: "fetch" }),
      inStore: present,
      storeDir: config.storeDir,
      deadlineMs: config.fetchDeadlineMs,
      retryDelayMs: config.fetchRetryDelayMs,
      triggerUrl: config.triggerSubstituteUrl,
      onSucceeded: (build) =>
        registerBuildProducts(build, {
          store,
          logger,
          gcRoots: deps.gcRoots,
        }),
    });
    cleanups.push(async () => {
      const interrupted = await fetcher.close();
      if (interrupted.length === 0) return;
      await store.saveOwedFetches(interrupted);
      logger.info("output fetches saved", { count: interrupted.length });
    });

    const dispatcher = new Dispatcher({
      store,
      router,
      fetcher,
      clock,
      logger: logger.with({ part: "dispatch" }),
      logPort: logReceiver.port,
      publishPort: config.publishPort,
      logCacheDir: config.cacheDir,
      storeDir: config.storeDir,
      workerTimeoutSeconds: config.workerTimeoutSeconds,
      workerKeys: config.workerKeys,
      onSubmitted: deps.onSubmitted,
      inStore: present,
    });
    late.dispatcher = dispatcher;
    if (dispatcher.authRequired) {
      logger.info("worker authentication on", {
        keys: config.workerKeys!.size,
      });
    }
    const credited = await store.resumeWorkerClock(epochSeconds(clock));
    if (credited > 0) {
      logger.info("worker clocks resumed", { downtime: credited });
    }
    // Runs after the dispatcher has stopped (cleanups run in reverse).
    cleanups.push(() => store.stopWorkerClock(epochSeconds(clock)));
    // Before the first turn, so that no worker's reconnection takes back a
    // build whose outputs are still to be fetched: those of a clean stop,
    // and those of a crash (each report's turn saved its fetch).
    const resumed = await fetcher.resumeOwed();
    if (resumed > 0) logger.info("output fetches resumed", { count: resumed });
    const dispatching = dispatcher.run(abort.signal);
    const sweeping = sweepWorkers({
      store,
      clock,
      logger,
      timeoutSeconds: config.workerTimeoutSeconds,
      intervalMs: config.sweepIntervalMs,
      maxWaitSeconds: config.maxBuildWaitSeconds,
    }, abort.signal);
    cleanups.push(() => Promise.allSettled([dispatching, sweeping]));

    return {
      backendPort: router.port,
      logPort: logReceiver.port,
      cancelBuild: (id) => dispatcher.cancelBuild(id),
      restartBuild: (id) => dispatcher.restartBuild(id),
      cancelEvaluation: (id) => dispatcher.cancelEvaluation(id),
      restartEvaluation: (id) => dispatcher.restartEvaluation(id),
      workerDiskLow: (name) => dispatcher.diskLow(name),
      fetchesIdle: () => fetcher.idle(),
      async stop() {
        abort.abort();
        await runCleanups(cleanups);
      },
    };
  } catch (error) {
    abort.abort();
    await runCleanups(cleanups);
    throw error;
  }
}

/**
 * True when `drv` is being built (submitted or started) by a worker whose
 * address is `peerAddress`: only that worker may send its log.
 */
async function runsAt(
  store: Store,
  drv: string,
  peerAddress: string,
): Promise<boolean> {
  const build = await store.getBuildByDerivation(drv);
  if (
    build?.worker == null ||
    (build.status !== BuildStatus.submitted &&
      build.status !== BuildStatus.started)
  ) return false;
  const worker = await store.getWorker(build.worker);
  return worker !== null && sameAddress(worker.address, peerAddress);
}
