// Channel polling (cuirass.md 5.4): each active specification's channels
// are fetched every period; a commit that changed starts one evaluation,
// pinned at the fetched commits; no change starts none.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import { type Git, mirrorDirectory } from "../git/git.ts";
import type { Checkout, Specification, Store } from "../store/types.ts";
import type { EvaluationOutcome } from "./evaluation_runner.ts";
import { newestInterrupted } from "./interrupted_evaluation.ts";

export interface JobsetMonitorOptions {
  store: Store;
  git: Git;
  clock: Clock;
  logger: Logger;
  /** Git mirrors of the channels live here. */
  cacheDir: string;
  /** Seconds between polls of a specification whose period is 0. */
  defaultInterval: number;
  /** Runs an evaluation of `spec` (channels pinned) with these checkouts. */
  evaluate: (
    spec: Specification,
    request: { checkouts: Checkout[]; prelude: string },
  ) => Promise<EvaluationOutcome>;
  /** Records a failed evaluation whose channels could not be fetched. */
  recordFailure: (
    spec: Specification,
    failure: { checkouts: Checkout[]; log: string },
  ) => Promise<EvaluationOutcome>;
  /** At most this many updates per `rateWindow` seconds; default 8 per 300. */
  rateLimit?: number;
  rateWindow?: number;
  /** Seconds between re-reads of the specification list; default 30. */
  refreshInterval?: number;
}

/** What one poll did. */
export type PollResult =
  | { kind: "unchanged" }
  | { kind: "rate-limited" }
  | { kind: "fetch-failed"; error: string; evaluation: number | null }
  | { kind: "evaluated"; evaluation: EvaluationOutcome };

/**
 * What {@link JobsetMonitor.trigger} did: a poll starts now (or right after
 * the one under way), or nothing, the specification being inactive or not
 * monitored.
 */
export type TriggerResult = "polling" | "inactive" | "unknown";

interface Monitor {
  spec: Specification;
  /** The recent updates: when (epoch seconds), and on the monotonic clock. */
  updates: { at: number; monotonic: number }[];
  /** The last fetch error reported with an evaluation, to report once. */
  lastError: string | null;
  /** Ends the pause between two polls; null while a poll runs. */
  trigger: (() => void) | null;
  /** A trigger came while a poll ran: poll again at once. */
  triggeredDuringPoll: boolean;
  /**
   * The last evaluation was killed at the evaluation timeout: the next
   * poll evaluates its commits again, as for an interrupted one.
   */
  timedOut: boolean;
  running: Promise<void>;
  stop: AbortController;
}

/** Polls the channels of every active specification. */
export class JobsetMonitor {
  readonly #options: JobsetMonitorOptions;
  readonly #monitors = new Map<string, Monitor>();
  #abort = new AbortController();
  #refreshing: Promise<void> | null = null;

  constructor(options: JobsetMonitorOptions) {
    this.#options = options;
  }

  /** Starts a monitor per specification and keeps the set up to date. */
  start(): void {
    this.#refreshing = (async () => {
      const signal = this.#abort.signal;
      while (!signal.aborted) {
        await this.refresh().catch((error) =>
          this.#options.logger.error("specifications not read", { error })
        );
        await this.#options.clock.sleep(
          (this.#options.refreshInterval ?? 30) * 1000,
          signal,
        ).catch(() => {});
      }
    })();
  }

  /** Re-reads the specifications: new ones start, removed ones stop. */
  async refresh(): Promise<void> {
    const specs = await this.#options.store.listSpecifications();
    const names = new Set(specs.map((spec) => spec.name));
    for (const [name, monitor] of this.#monitors) {
      if (!names.has(name)) {
        monitor.stop.abort();
        this.#monitors.delete(name);
      }
    }
    for (const spec of specs) {
      const monitor = this.#monitors.get(spec.name);
      if (monitor) monitor.spec = spec;
      else if (!this.#abort.signal.aborted) this.#spawn(spec);
    }
  }

  /**
   * Polls `name` now, or right after the poll under way. The poll says in
   * the log when it evaluates nothing (no channel has a new commit), as
   * this does for an inactive specification.
   */
  trigger(name: string): TriggerResult {
    const monitor = this.#monitors.get(name);
    if (!monitor) return "unknown";
    if (!monitor.spec.isActive) {
      this.#options.logger.info("evaluation skipped", {
        spec: name,
        reason: "specification inactive",
      });
      return "inactive";
    }
    if (monitor.trigger) monitor.trigger();
    else monitor.triggeredDuringPoll = true;
    return "polling";
  }

  /** Epoch seconds of the recent updates of `name`, newest first. */
  lastUpdateTimes(name: string): number[] | null {
    const monitor = this.#monitors.get(name);
    return monitor ? monitor.updates.map((u) => u.at).reverse() : null;
  }

  /** Stops every monitor and waits for running polls to end. */
  async stop(): Promise<void> {
    this.#abort.abort();
    for (const monitor of this.#monitors.values()) monitor.stop.abort();
    await this.#refreshing;
    await Promise.allSettled(
      [...this.#monitors.values()].map((monitor) => monitor.running),
    );
  }

  #spawn(spec: Specification): void {
    const stop = new AbortController();
    const monitor: Monitor = {
      spec,
      updates: [],
      lastError: null,
      trigger: null,
      triggeredDuringPoll: false,
      timedOut: false,
      running: Promise.resolve(),
      stop,
    };
    this.#monitors.set(spec.name, monitor);
    monitor.running = this.#loop(monitor, stop.signal);
  }

  async #loop(monitor: Monitor, signal: AbortSignal): Promise<void> {
    const { clock, logger } = this.#options;
    let triggered = false;
    while (!signal.aborted) {
      if (monitor.spec.isActive) {
        try {
          await this.#poll(monitor, triggered);
        } catch (error) {
          logger.error("poll failed", { spec: monitor.spec.name, error });
        }
      }
      if (monitor.triggeredDuringPoll) {
        monitor.triggeredDuringPoll = false;
        triggered = true;
        continue;
      }
      const period = monitor.spec.period > 0
        ? monitor.spec.period
        : this.#options.defaultInterval;
      const trigger = new Promise<boolean>((resolve) =>
        monitor.trigger = () => resolve(true)
      );
      triggered = await Promise.race([
        clock.sleep(period * 1000, signal).then(() => false, () => false),
        trigger,
      ]);
      monitor.trigger = null;
    }
  }

  /**
   * Polls `spec` once: fetches its channels and evaluates when a commit
   * changed since the newest recorded checkouts.
   */
  pollOnce(spec: Specification): Promise<PollResult> {
    let monitor = this.#monitors.get(spec.name);
    if (!monitor) {
      monitor = {
        spec,
        updates: [],
        lastError: null,
        trigger: null,
        triggeredDuringPoll: false,
        timedOut: false,
        running: Promise.resolve(),
        stop: new AbortController(),
      };
      this.#monitors.set(spec.name, monitor);
    }
    monitor.spec = spec;
    return this.#poll(monitor);
  }

  /** Polls `monitor`'s specification; `triggered` by an admin or a hook. */
  async #poll(monitor: Monitor, triggered = false): Promise<PollResult> {
    const { store, git, clock, logger, cacheDir } = this.#options;
    const spec = monitor.spec;
    // Monotonic: a step of the wall clock back must not stop the polls.
    const now = clock.monotonic();
    const window = (this.#options.rateWindow ?? 300) * 1000;
    monitor.updates = monitor.updates.filter((u) => u.monotonic > now - window);
    if (monitor.updates.length >= (this.#options.rateLimit ?? 8)) {
      logger.warn("update skipped", { spec: spec.name, reason: "rate limit" });
      return { kind: "rate-limited" };
    }
    monitor.updates.push({ at: epochSeconds(clock), monotonic: now });

    const previous = new Map(
      (await store.latestCheckouts(spec.name)).map((c) => [c.channel, c]),
    );
    const checkouts: Checkout[] = [];
    const errors: string[] = [];
    for (const channel of spec.channels) {
      const mirror = mirrorDirectory(cacheDir, channel.url);
      const known = previous.get(channel.name);
      try {
        // A pinned commit already recorded cannot change: no fetch.
        const revision = channel.commit !== null &&
            known?.revision === channel.commit
          ? channel.commit
          : channel.commit !== null
          ? await git.fetchCommit(channel.url, channel.commit, mirror)
          : await git.fetchBranch(channel.url, channel.branch, mirror);
        checkouts.push({ channel: channel.name, revision, directory: mirror });
      } catch (error) {
        const message = (error as Error).message;
        const stderr = (error as { stderr?: string }).stderr ?? "";
        errors.push(
          `lorica: cannot fetch channel ${JSON.stringify(channel.name)} from ${
            JSON.stringify(channel.url)
          }: ${message}\n${stderr}`,
        );
        logger.warn("channel fetch failed", {
          spec: spec.name,
          channel: channel.name,
          error: message,
        });
      }
    }

    if (errors.length > 0) {
      const text = errors.join("\n");
      // Report a failure once with an evaluation, then only warn.
      if (monitor.lastError === text) {
        return { kind: "fetch-failed", error: text, evaluation: null };
      }
      monitor.lastError = text;
      const outcome = await this.#options.recordFailure(spec, {
        checkouts,
        log: text,
      });
      return { kind: "fetch-failed", error: text, evaluation: outcome.id };
    }
    monitor.lastError = null;

    const changed =
      checkouts.some((checkout) =>
        previous.get(checkout.channel)?.revision !== checkout.revision
      ) || monitor.timedOut ||
      await newestInterrupted(this.#options.store, spec.name);
    if (!changed) {
      if (triggered) {
        // Asked for an evaluation, the admin learns why none came.
        logger.info("evaluation skipped", {
          spec: spec.name,
          reason: "no channel has a new commit",
          commits: checkouts.map((c) =>
            `${c.channel}=${c.revision.slice(0, 12)}`
          ).join(","),
        });
      } else {
        logger.debug("channels unchanged", { spec: spec.name });
      }
      return { kind: "unchanged" };
    }
    const pinned: Specification = {
      ...spec,
      channels: spec.channels.map((channel) => ({
        ...channel,
        commit: checkouts.find((c) => c.channel === channel.name)!.revision,
      })),
    };
    const prelude = checkouts.map((c) =>
      `;; channel ${c.channel}: ${c.revision}\n`
    ).join("");
    logger.info("channels changed", {
      spec: spec.name,
      commits: checkouts.map((c) => `${c.channel}=${c.revision.slice(0, 12)}`)
        .join(","),
    });
    const evaluation = await this.#options.evaluate(pinned, {
      checkouts,
      prelude,
    });
    monitor.timedOut = evaluation.timedOut === true;
    return { kind: "evaluated", evaluation };
  }
}
