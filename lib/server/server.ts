// The server: evaluations and channel polling, one build mode (local daemon
// or remote workers), publish, and the web interface.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix } from "../guix/guix_command.ts";
import { startPublish } from "../guix/publish_server.ts";
import { GcRoots, runGcRootCleaner } from "../guix/gc_roots.ts";
import { Git } from "../git/git.ts";
import type { Specification, Store } from "../store/types.ts";
import { createWebApp } from "../web/app.ts";
import type { EvaluationTrigger } from "../web/admin.ts";
import { createLiveLogHub } from "../web/live_logs.ts";
import { createFarmMetrics } from "../web/metrics.ts";
import { listenOrigin } from "../web/listen_origin.ts";
import { removeLeftWorkDirs } from "./evaluation_work.ts";
import { HEARTBEAT_INTERVAL_MS } from "./evaluation_owner.ts";
import {
  abortStaleEvaluations,
  evaluationLogPath,
  type EvaluationOutcome,
  type EvaluationRequest,
  keepPendingDerivations,
  recordFailedEvaluation,
  runEvaluation,
  sweepStaleEvaluations,
} from "./evaluation_runner.ts";
import { JobsetMonitor, type TriggerResult } from "./jobset_monitor.ts";
import { runLogExpiry } from "./log_expiry.ts";
import { LocalBuilder } from "./local_builder.ts";
import { newestInterrupted } from "./interrupted_evaluation.ts";
import {
  type RemoteBuilder,
  type RemoteBuilderConfig,
  startRemoteBuilder,
} from "./remote_builder.ts";
import { listening, runCleanups } from "./lifecycle.ts";

export interface ServerConfig extends RemoteBuilderConfig {
  /** "local": the local daemon builds (Cuirass's default); "remote": workers. */
  mode: "local" | "remote";
  /** Extra `guix publish` arguments, e.g. key files. */
  publishArgs: string[];
  /** Address and port of the web interface. */
  webListen: string;
  webPort: number;
  /** Evaluation logs and other state. */
  stateDir: string;
  // --- Optional, defaults in brackets. ---
  /**
   * Poll the specifications' channels and evaluate on new commits [true].
   * When false, each active specification is evaluated once with its
   * channels as given, and no channel is ever fetched.
   */
  pollChannels?: boolean;
  /** Seconds between channel polls of a specification with no period [600]. */
  pollIntervalSeconds?: number;
  /** Git mirrors of the channels [<cacheDir>/git]. */
  gitCacheDir?: string;
  /** GC roots of derivations and outputs [<stateDir>/gcroots]. */
  gcRootDir?: string;
  /** How long GC roots of finished builds live [30 days]. */
  gcRootTtlSeconds?: number;
  /** Systems evaluated at once [2]. */
  evaluationParallelism?: number;
  /**
   * Seconds one system's evaluator may run before it is killed, the
   * evaluation failed and its commits evaluated again at the next poll
   * [10800: 3 hours; 0: no limit].
   */
  evaluationTimeoutSeconds?: number;
  /** Local mode: builds the daemon runs at once [1], and per batch [200]. */
  localMaxJobs?: number;
  localBatchSize?: number;
  /** Secret of the admin routes [null: admin routes disabled]. */
  adminToken?: string | null;
  /**
   * Public URL of the web interface, for links in feeds [the origin of
   * `webListen` and the web port, `hostname` for a wildcard address].
   */
  publicUrl?: string | null;
  /** This machine's host name [Deno.hostname()]. */
  hostname?: string;
  /** Build logs older than this are removed, daily [180 days, as Cuirass]. */
  logExpirySeconds?: number;
  /**
   * Time between two looks for evaluations that a dead server sharing the
   * database left started [HEARTBEAT_INTERVAL_MS, 30 s]; also done at start.
   */
  staleEvaluationSweepMs?: number;
}

/**
 * Default of `evaluationTimeoutSeconds`: 3 hours. On ci.guix.gnu.org an
 * evaluation of all of Guix takes tens of minutes, and time-machine may
 * first build the Guix of a new commit, as long again on a busy machine:
 * a few times the longest such run, still ending a hung evaluator the
 * same day rather than at the next restart.
 */
export const DEFAULT_EVALUATION_TIMEOUT_SECONDS = 3 * 3600;

export interface ServerDeps {
  store: Store;
  guix: Guix;
  logger: Logger;
  clock?: Clock;
  git?: Git;
  /**
   * Remote mode: whether a derivation is in the store; default a look at
   * its file (see remote_builder.ts).
   */
  inStore?: (path: string) => Promise<boolean>;
}

export interface RunningServer {
  readonly mode: "local" | "remote";
  /** Remote mode only (0 in local mode). */
  readonly backendPort: number;
  readonly logPort: number;
  readonly webPort: number;
  /**
   * The base of absolute links to the web interface (notifications, the
   * feed): `publicUrl` if set, else the address the web server listens on.
   */
  readonly webUrl: string;
  readonly publishPort: number | null;
  readonly store: Store;
  /** Evaluates a specification now and registers its builds. */
  evaluate(
    spec: Specification,
    request?: EvaluationRequest,
  ): Promise<EvaluationOutcome>;
  /** Polls a specification's channels now (evaluating on news). */
  trigger(name: string): void;
  /** Re-reads the specification list (after adding or removing one). */
  refreshSpecifications(): Promise<void>;
  /** Resolves when every fetch of finished builds' outputs is done. */
  fetchesIdle(): Promise<void>;
  /** Cancels a build, stopping it on a Lorica worker; false if not pending. */
  cancelBuild(id: number): Promise<boolean>;
  /** Schedules a build again, stopping a running copy on a Lorica worker. */
  restartBuild(id: number): Promise<boolean>;
  /**
   * Resolves when the server can no longer serve (its guix publish died);
   * the caller stops it and exits with an error.
   */
  readonly failed: Promise<Error>;
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
  await abortStaleEvaluations(store, clock, logger, config.stateDir);
  // What is still started now runs elsewhere: a state directory shared
  // over NFS holds its work directory.
  const running = new Set(
    (await store.listRunningEvaluations()).map((evaluation) => evaluation.id),
  );
  await removeLeftWorkDirs(config.stateDir, logger, { running });

  try {
    // Without its publish server, workers cannot substitute derivations
    // and inputs from the server, nor clients its outputs: one that cannot
    // start is a startup error, one that dies stops the server with an
    // error so that systemd restarts it, as for the worker.
    let failed = new Promise<Error>(() => {});
    if (config.publishPort !== null) {
      const publish = await startPublish(guix, {
        port: config.publishPort,
        listen: config.listen,
        extraArgs: config.publishArgs,
        logger,
        clock,
      });
      cleanups.push(() => publish.stop());
      failed = publish.died.then((error) => {
        logger.error("server stopping", {
          reason: "guix publish exited",
          error,
        });
        return error;
      });
    }

    const gcRoots = new GcRoots({
      directory: config.gcRootDir ?? `${config.stateDir}/gcroots`,
      storeDir: config.storeDir,
      clock,
      logger: logger.with({ part: "gc" }),
    });
    const cleaning = runGcRootCleaner(gcRoots, {
      ttlSeconds: config.gcRootTtlSeconds ?? 30 * 86400,
      keepDerivation: keepPendingDerivations(store),
      clock,
      logger: logger.with({ part: "gc" }),
    }, abort.signal);
    cleanups.push(() => cleaning);

    const expiring = runLogExpiry({
      cacheDir: config.cacheDir,
      maxAgeSeconds: config.logExpirySeconds ?? 180 * 86400,
      clock,
      logger: logger.with({ part: "logs" }),
    }, abort.signal);
    cleanups.push(() => expiring);

    const sweeping = sweepStaleEvaluations({
      store,
      clock,
      logger: logger.with({ part: "evaluation" }),
      stateDir: config.stateDir,
      periodMs: config.staleEvaluationSweepMs ?? HEARTBEAT_INTERVAL_MS,
      signal: abort.signal,
    });
    cleanups.push(() => sweeping);

    const liveLogs = createLiveLogHub();
    const metrics = createFarmMetrics();
    const builder = await startBuilder(config, {
      store,
      guix,
      clock,
      logger,
      gcRoots,
      inStore: deps.inStore,
      signal: abort.signal,
      onLogChunk(drv, chunk) {
        liveLogs.chunk(drv, chunk);
        metrics.logBytesReceived.inc(chunk.length);
      },
      onLogComplete: (drv, bytes) => liveLogs.complete(drv, bytes),
      onSubmitted(build, _worker, now) {
        metrics.dispatchLatency.observe(now - build.timestamp, {
          system: build.system,
        });
        metrics.buildsDispatched.inc(1, { system: build.system });
      },
    });
    cleanups.push(() => builder.stop());

    const runnerOptions = {
      store,
      guix,
      clock,
      logger: logger.with({ part: "evaluation" }),
      stateDir: config.stateDir,
      parallelism: config.evaluationParallelism ?? 2,
      timeoutSeconds: config.evaluationTimeoutSeconds ??
        DEFAULT_EVALUATION_TIMEOUT_SECONDS,
      gcRoots,
      signal: abort.signal,
    };
    const evaluate = async (
      spec: Specification,
      request?: EvaluationRequest,
    ) => {
      const outcome = await runEvaluation(spec, runnerOptions, request);
      builder.wake();
      return outcome;
    };
    const monitor = config.pollChannels === false
      ? evaluateOnce(store, evaluate, logger)
      : new JobsetMonitor({
        store,
        git: deps.git ??
          new Git({ clock, logger: logger.with({ part: "git" }) }),
        clock,
        logger: logger.with({ part: "poll" }),
        cacheDir: config.gitCacheDir ?? `${config.cacheDir}/git`,
        defaultInterval: config.pollIntervalSeconds ?? 600,
        evaluate,
        recordFailure: (spec, failure) =>
          recordFailedEvaluation(spec, runnerOptions, failure),
      });
    monitor.start();
    cleanups.push(() => monitor.stop());

    /** The web server's own origin, known once it listens. */
    let webOrigin = "http://localhost";
    const app = createWebApp({
      store,
      logCacheDir: config.cacheDir,
      storeDir: config.storeDir,
      clock,
      logger: logger.with({ part: "web" }),
      workerTimeoutSeconds: config.workerTimeoutSeconds,
      adminToken: config.adminToken ?? null,
      liveLogs,
      metrics,
      publicUrl: config.publicUrl ?? null,
      // Read per request, once `web` below listens and has its port.
      ownOrigin: () => webOrigin,
      evaluationLog: (id) => evaluationLogPath(config.stateDir, id),
      workerDiskLow: (name) => builder.workerDiskLow(name),
      actions: {
        cancelBuild: (id) => builder.cancelBuild(id),
        restartBuild: (id) => builder.restartBuild(id),
        cancelEvaluation: (id) => builder.cancelEvaluation(id),
        restartEvaluation: (id) => builder.restartEvaluation(id),
        async saveSpecification(spec) {
          await store.upsertSpecification(spec);
          await monitor.refresh();
        },
        async deleteSpecification(name) {
          const deleted = await store.deleteSpecification(name);
          await monitor.refresh();
          return deleted;
        },
        async triggerEvaluation(name) {
          let result = monitor.trigger(name);
          if (result === "unknown") {
            // Added by another process since the last refresh.
            await monitor.refresh();
            result = monitor.trigger(name);
          }
          return TRIGGER_NOTES[result];
        },
      },
    });
    const web = listening(
      "web",
      config.webListen,
      config.webPort,
      () =>
        Deno.serve({
          hostname: config.webListen,
          port: config.webPort,
          onListen: () => {},
        }, app),
    );
    cleanups.push(() => web.shutdown());

    webOrigin = listenOrigin(
      config.webListen,
      web.addr.port,
      config.hostname ?? Deno.hostname(),
    );
    logger.info("server started", {
      mode: config.mode,
      backend: builder.backendPort || undefined,
      logs: builder.logPort || undefined,
      publish: config.publishPort ?? "off",
      web: webOrigin,
    });

    return {
      mode: config.mode,
      backendPort: builder.backendPort,
      logPort: builder.logPort,
      webPort: web.addr.port,
      webUrl: (config.publicUrl ?? webOrigin).replace(/\/+$/, ""),
      publishPort: config.publishPort,
      store,
      evaluate,
      trigger: (name) => monitor.trigger(name),
      refreshSpecifications: () => monitor.refresh(),
      fetchesIdle: () => builder.fetchesIdle(),
      cancelBuild: (id) => builder.cancelBuild(id),
      restartBuild: (id) => builder.restartBuild(id),
      failed,
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

/** The part of JobsetMonitor the server uses. */
export interface SpecificationWatcher {
  start(): void;
  refresh(): Promise<void>;
  trigger(name: string): TriggerResult | "evaluating";
  stop(): Promise<void>;
}

/** What the admin is told of each trigger result. */
const TRIGGER_NOTES: Record<
  TriggerResult | "evaluating",
  EvaluationTrigger
> = {
  polling: {
    triggered: true,
    note:
      "the channels are being fetched; an evaluation starts if one of them has a new commit, else the server logs that it was skipped",
  },
  evaluating: {
    triggered: true,
    note: "evaluating the specification's channels as given (--no-poll)",
  },
  inactive: { triggered: false, note: "the specification is inactive" },
  unknown: {
    triggered: false,
    note: "the specification is not monitored by this server",
  },
};

/**
 * Without channel polling: every active specification is evaluated once,
 * with its channels as given (again at the next start when that
 * evaluation was interrupted, as the jobset monitor does for its commits);
 * a trigger evaluates it again. Triggers that
 * come while the specification is being evaluated make one more
 * evaluation after it, not one each: an admin clicking or a hook retrying
 * must not start evaluators by the dozen.
 */
export function evaluateOnce(
  store: Pick<
    Store,
    | "listSpecifications"
    | "listEvaluations"
    | "getSpecification"
    | "evaluationCanceled"
  >,
  evaluate: (spec: Specification) => Promise<EvaluationOutcome>,
  logger: Logger,
): SpecificationWatcher {
  const running = new Map<string, Promise<unknown>>();
  const again = new Set<string>();
  let stopped = false;
  function launch(spec: Specification) {
    if (stopped) return;
    if (running.has(spec.name)) {
      again.add(spec.name);
      return;
    }
    const evaluation = evaluate(spec).catch((error) =>
      logger.error("evaluation failed", { spec: spec.name, error })
    ).finally(() => {
      running.delete(spec.name);
      if (again.delete(spec.name)) relaunch(spec.name);
    });
    running.set(spec.name, evaluation);
  }
  function relaunch(name: string) {
    // Read again: the specification may have changed or gone meanwhile.
    store.getSpecification(name).then((spec) => spec && launch(spec)).catch(
      (error) => logger.error("evaluation failed", { spec: name, error }),
    );
  }
  return {
    start() {},
    async refresh() {
      for (const spec of await store.listSpecifications()) {
        if (!spec.isActive) continue;
        const done = await store.listEvaluations({
          specification: spec.name,
          limit: 1,
        });
        if (
          done.length === 0 || await newestInterrupted(store, spec.name)
        ) {
          launch(spec);
        }
      }
    },
    trigger(name) {
      relaunch(name);
      return "evaluating";
    },
    async stop() {
      stopped = true;
      again.clear();
      await Promise.allSettled([...running.values()]);
    },
  };
}

/** What the rest of the server needs from either build mode. */
interface Builder extends RemoteBuilder {
  /** New builds were registered: look at the queue now. */
  wake(): void;
}

interface BuilderDeps {
  store: Store;
  guix: Guix;
  clock: Clock;
  logger: Logger;
  gcRoots: GcRoots;
  signal: AbortSignal;
  onLogChunk: (drv: string, chunk: Uint8Array) => void;
  onLogComplete: (drv: string, bytes: number) => void;
  onSubmitted: Parameters<typeof startRemoteBuilder>[1]["onSubmitted"];
  inStore?: (path: string) => Promise<boolean>;
}

async function startBuilder(
  config: ServerConfig,
  deps: BuilderDeps,
): Promise<Builder> {
  const { store, guix, clock, logger } = deps;
  if (config.mode === "remote") {
    const remote = await startRemoteBuilder(config, deps);
    // Workers ask for work themselves; nothing to wake.
    return { ...remote, wake: () => {} };
  }
  const local = new LocalBuilder({
    store,
    spawnGuix: (args, options) => guix.spawn(args, options),
    clock,
    logger: logger.with({ part: "local" }),
    logCacheDir: config.cacheDir,
    storeDir: config.storeDir,
    systems: "all",
    maxJobs: config.localMaxJobs ?? 1,
    batchSize: config.localBatchSize ?? 200,
    gcRoots: deps.gcRoots,
    workerTimeoutSeconds: config.workerTimeoutSeconds,
    sweepIntervalMs: config.sweepIntervalMs,
  });
  await local.recover();
  const running = local.run(deps.signal);
  return {
    backendPort: 0,
    logPort: 0,
    cancelBuild: (id) => local.cancelBuild(id),
    restartBuild: (id) => local.restartBuild(id),
    cancelEvaluation: (id) => local.cancelEvaluation(id),
    restartEvaluation: (id) => local.restartEvaluation(id),
    fetchesIdle: () => Promise.resolve(),
    workerDiskLow: () => false,
    wake: () => local.wake(),
    stop: () => running,
  };
}
