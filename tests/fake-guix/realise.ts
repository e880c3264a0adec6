// What the daemon does for `build-things`: substitute or build each
// derivation after its inputs, with Guix's messages and failure rules.

import { type Derivation, parseDerivation } from "../../lib/guix/drv.ts";
import { type BuildLimits, runBuilder } from "./builder.ts";
import type { DaemonStore } from "./daemon_store.ts";
import { daemonText, LeaveError } from "./messages.ts";
import type { Substituter } from "./substituter.ts";

/** Options of `Realiser` (the daemon's build settings). */
export interface RealiseOptions {
  maxJobs: number;
  keepGoing: boolean;
  fallback: boolean;
  limits: BuildLimits;
  /** Systems this daemon can build; the first is its own. */
  systems: string[];
}

/**
 * What the daemon tells its client: plain messages, and the events behind
 * the `@ build-*` traces (guix.md 1.2). `guix build` renders them as text;
 * a Guile-level client (the build driver) sees them raw.
 */
export interface RealiseUi {
  /** A plain daemon message line. */
  message: (text: string) => void;
  started: (drv: string, system: string, logFile: string, pid: number) => void;
  /** A chunk of builder output. */
  output: (pid: number, bytes: Uint8Array) => void;
  succeeded: (drv: string) => void;
  /** `code` is "1" for an ordinary failure, "timeout" for a limit. */
  failed: (drv: string, code: string, message: string) => void;
}

// Builder "pids": unique within this daemon process.
let nextPid = 1000 + Math.floor(Math.random() * 30000);

/** The derivations a request would build and the items it would download. */
export interface Plan {
  build: string[];
  download: string[];
}

/** Realises derivations once each, remembering failures per process. */
export class Realiser {
  /** Set after the first failure unless `keepGoing`. */
  stopped = false;
  #results = new Map<string, Promise<boolean>>();

  constructor(
    readonly store: DaemonStore,
    readonly substituter: Substituter | null,
    readonly options: RealiseOptions,
    readonly ui: RealiseUi,
  ) {}

  /**
   * Makes every output of `drvPath` valid; false when it failed.
   * @throws {LeaveError} when something must be built and max-jobs is 0.
   */
  realise(drvPath: string): Promise<boolean> {
    let pending = this.#results.get(drvPath);
    if (!pending) {
      pending = this.#realise(drvPath).then((ok) => {
        if (!ok && !this.options.keepGoing) this.stopped = true;
        return ok;
      });
      this.#results.set(drvPath, pending);
    }
    return pending;
  }

  /** Reads `drvPath` when it is valid (substituting it first if offered). */
  async derivation(drvPath: string): Promise<Derivation | null> {
    if (!(await this.store.isValid(drvPath)) && this.substituter) {
      await this.substituter.ensure(drvPath);
    }
    if (!(await this.store.isValid(drvPath))) return null;
    return parseDerivation(await Deno.readTextFile(drvPath));
  }

  /** Best-effort preview of what realising `drvPaths` involves. */
  async plan(drvPaths: string[]): Promise<Plan> {
    const plan: Plan = { build: [], download: [] };
    const seen = new Set<string>();
    const visit = async (drvPath: string) => {
      if (seen.has(drvPath)) return;
      seen.add(drvPath);
      if (!(await this.store.isValid(drvPath))) {
        if (await this.substituter?.offer(drvPath)) {
          plan.download.push(drvPath);
        }
        return;
      }
      const drv = parseDerivation(await Deno.readTextFile(drvPath));
      const missing = [];
      for (const output of drv.outputs) {
        if (!(await this.store.isValid(output.path))) missing.push(output.path);
      }
      if (missing.length === 0) return;
      const offers = await Promise.all(
        missing.map((path) => this.substituter?.offer(path) ?? null),
      );
      if (offers.every((offer) => offer !== null)) {
        plan.download.push(...missing);
        return;
      }
      plan.build.push(drvPath);
      for (const input of drv.inputDrvs) await visit(input.path);
    };
    for (const drvPath of drvPaths) await visit(drvPath);
    plan.build.sort();
    plan.download.sort();
    return plan;
  }

  async #realise(drvPath: string): Promise<boolean> {
    if (this.stopped) return false;
    const drv = await this.derivation(drvPath);
    if (!drv) {
      this.ui.message(daemonText.missingDerivation(drvPath));
      return false;
    }
    if (await this.#allValid(drv)) return true;

    const substituted = await this.#trySubstitutes(drvPath, drv);
    if (substituted !== null) return substituted;

    let failedInputs = 0;
    for (const input of drv.inputDrvs) {
      if (!(await this.realise(input.path))) {
        failedInputs++;
        if (!this.options.keepGoing) break;
      }
    }
    for (const source of drv.inputSrcs) {
      if (await this.store.isValid(source)) continue;
      if (!(await this.substituter?.ensure(source))) failedInputs++;
    }
    if (failedInputs > 0) {
      this.ui.message(daemonText.dependenciesFailed(drvPath, failedInputs));
      return false;
    }
    if (this.stopped) return false;
    return await this.#build(drvPath, drv);
  }

  /** True/false when substitutes decided the matter, null to build. */
  async #trySubstitutes(
    drvPath: string,
    drv: Derivation,
  ): Promise<boolean | null> {
    if (!this.substituter) return null;
    const missing = [];
    for (const output of drv.outputs) {
      if (!(await this.store.isValid(output.path))) missing.push(output.path);
    }
    const offers = await Promise.all(
      missing.map((path) => this.substituter!.offer(path)),
    );
    if (offers.some((offer) => offer === null)) return null;
    let ok = true;
    for (const path of missing) {
      ok = (await this.substituter.ensure(path)) && ok;
    }
    if (ok) return true;
    if (this.options.fallback) return null;
    this.ui.message(daemonText.substitutesFailed(drvPath));
    return false;
  }

  async #build(drvPath: string, drv: Derivation): Promise<boolean> {
    if (this.options.maxJobs === 0) {
      throw new LeaveError(daemonText.maxJobsZero());
    }
    const { systems } = this.options;
    if (!systems.includes(drv.system)) {
      this.ui.message(
        daemonText.wrongSystem(drv.system, drvPath, systems[0] ?? "unknown"),
      );
      return false;
    }
    // One builder per derivation store-wide: other daemons sharing the
    // store wait here, then build again into a scratch directory.
    return await this.store.withLock(drvPath, async () => {
      if (await this.#allValid(drv)) return true;
      const pid = nextPid++;
      this.ui.started(
        drvPath,
        drv.system,
        this.store.daemonLogField(drvPath),
        pid,
      );
      const result = await runBuilder(
        this.store,
        drvPath,
        drv,
        this.options.limits,
        (bytes) => this.ui.output(pid, bytes),
      );
      if (result.ok) {
        this.ui.succeeded(drvPath);
        return true;
      }
      this.ui.message(result.message);
      this.ui.failed(
        drvPath,
        result.timedOut ? "timeout" : "1",
        result.message,
      );
      return false;
    });
  }

  async #allValid(drv: Derivation): Promise<boolean> {
    for (const output of drv.outputs) {
      if (!(await this.store.isValid(output.path))) return false;
    }
    return true;
  }
}
