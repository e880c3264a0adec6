// The remote-mode server: dispatcher, log receiver, publish, web, evaluations.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix, RunningGuix } from "../guix/guix_command.ts";
import type { Specification, Store } from "../store/types.ts";
import { RouterSocket } from "../zmtp/router.ts";
import {
  type LogReceiver,
  startLogReceiver,
} from "../protocol/log_receiver.ts";
import { createWebApp } from "../web/app.ts";
import { Dispatcher } from "./dispatcher.ts";
import { OutputFetcher } from "./output_fetcher.ts";
import { type EvaluationOutcome, runEvaluation } from "./evaluation_runner.ts";
import { sweepWorkers } from "./worker_sweeper.ts";

export interface ServerConfig {
  /** Address the worker-facing ports bind to; default all IPv4 interfaces. */
  listen: string;
  backendPort: number;
  logPort: number;
  /** Null: run no publish server (workers then get `#f`). */
  publishPort: number | null;
  /** Address of the web interface; default 127.0.0.1. */
  webListen: string;
  webPort: number;
  /** Where build logs are kept as `<hash>.log.gz`. */
  cacheDir: string;
  /** Evaluation logs and other state. */
  stateDir: string;
  storeDir: string;
  workerTimeoutSeconds: number;
  /** Extra `guix publish` arguments, e.g. key files. */
  publishArgs: string[];
  // --- Robustness options (issue 7); all optional, defaults in brackets. ---
  /**
   * Worker keys (key id -> secret, see parseWorkerKeys): when set, only
   * workers proving one get builds [null: any worker, as Cuirass].
   */
  workerKeys?: Map<string, string> | null;
  /** Builds waiting this long with no worker for their system fail [never]. */
  maxBuildWaitSeconds?: number | null;
  /** Time between worker sweeps [a quarter of the worker timeout]. */
  sweepIntervalMs?: number;
  /** Log bytes kept per build before the truncation marker [256 MiB]. */
  maxLogBytes?: number;
  /** Time to get a finished build's outputs before failed-other [10 min]. */
  fetchDeadlineMs?: number;
  /** First retry delay of an output fetch, doubling [1000 ms]. */
  fetchRetryDelayMs?: number;
}

export interface ServerDeps {
  store: Store;
  guix: Guix;
  logger: Logger;
  clock?: Clock;
}

export interface RunningServer {
  readonly backendPort: number;
  readonly logPort: number;
  readonly webPort: number;
  readonly publishPort: number | null;
  readonly store: Store;
  /** Evaluates a specification now and registers its builds. */
  evaluate(spec: Specification): Promise<EvaluationOutcome>;
  /** Resolves when every fetch of finished builds' outputs is done. */
  fetchesIdle(): Promise<void>;
  /**
   * Cancels a build (status canceled even if its worker is unreachable) and
   * stops it on a Lorica worker; false when it was not pending.
   */
  cancelBuild(id: number): Promise<boolean>;
  /** Schedules a build again, stopping a running copy on a Lorica worker. */
  restartBuild(id: number): Promise<boolean>;
  stop(): Promise<void>;
}

/** Starts every part of the server; `stop()` undoes it in reverse. */
export async function startServer(
  config: ServerConfig,
  deps: ServerDeps,
): Promise<RunningServer> {
  const { store, guix, logger } = deps;
  const clock = deps.clock ?? systemClock;
  const abort = new AbortController();
  const cleanups: (() => Promise<unknown>)[] = [];
  await Deno.mkdir(config.cacheDir, { recursive: true });
  await Deno.mkdir(config.stateDir, { recursive: true });

  try {
    let publish: RunningGuix | null = null;
    if (config.publishPort !== null) {
      publish = guix.start([
        "publish",
        `--port=${config.publishPort}`,
        `--listen=${config.listen}`,
        "--compression=0",
        ...config.publishArgs,
      ], "publish");
      cleanups.push(() => publish!.stop());
    }

    const logReceiver: LogReceiver = await startLogReceiver({
      hostname: config.listen,
      port: config.logPort,
      cacheDir: config.cacheDir,
      storeDir: config.storeDir,
      logger: logger.with({ part: "logs" }),
      maxLogBytes: config.maxLogBytes,
    });
    cleanups.push(() => logReceiver.close());

    const late: { dispatcher?: Dispatcher } = {};
    const router = await RouterSocket.bind({
      hostname: config.listen,
      port: config.backendPort,
      // Protocol messages are small; a larger one only costs memory.
      maxMessageBytes: 16 * 1024 * 1024,
      logger: logger.with({ part: "zmtp" }),
      onDisconnect: (peer) => late.dispatcher?.peerDisconnected(peer.routingId),
    });
    cleanups.push(() => router.close());

    const fetcher = new OutputFetcher({
      store,
      guix,
      clock,
      logger: logger.with({ part: "fetch" }),
      deadlineMs: config.fetchDeadlineMs,
      retryDelayMs: config.fetchRetryDelayMs,
    });
    cleanups.push(() => fetcher.close());

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
      workerKeys: config.workerKeys,
    });
    late.dispatcher = dispatcher;
    if (dispatcher.authRequired) {
      logger.info("worker authentication on", {
        keys: config.workerKeys!.size,
      });
    }
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

    const app = createWebApp({
      store,
      logCacheDir: config.cacheDir,
      storeDir: config.storeDir,
      clock,
      logger: logger.with({ part: "web" }),
      workerTimeoutSeconds: config.workerTimeoutSeconds,
      // Cancel and restart also reach the worker running the build.
      actions: {
        cancelBuild: (id) => dispatcher.cancelBuild(id),
        restartBuild: (id) => dispatcher.restartBuild(id),
      },
    });
    const web = Deno.serve({
      hostname: config.webListen,
      port: config.webPort,
      onListen: () => {},
    }, app);
    cleanups.push(() => web.shutdown());

    logger.info("server started", {
      backend: router.port,
      logs: logReceiver.port,
      publish: config.publishPort ?? "off",
      web: `http://${config.webListen}:${web.addr.port}`,
    });

    return {
      backendPort: router.port,
      logPort: logReceiver.port,
      webPort: web.addr.port,
      publishPort: config.publishPort,
      store,
      evaluate: (spec) =>
        runEvaluation(spec, {
          store,
          guix,
          clock,
          logger: logger.with({ part: "evaluation" }),
          stateDir: config.stateDir,
        }),
      fetchesIdle: () => fetcher.idle(),
      cancelBuild: (id) => dispatcher.cancelBuild(id),
      restartBuild: (id) => dispatcher.restartBuild(id),
      async stop() {
        abort.abort();
        await runCleanups(cleanups);
        logger.info("server stopped");
      },
    };
  } catch (error) {
    abort.abort();
    await runCleanups(cleanups);
    throw error;
  }
}

async function runCleanups(cleanups: (() => Promise<unknown>)[]) {
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch(() => {});
  }
}
