// The `git` command line, for following channels: a bare mirror per
// repository URL in a cache directory, fetched on each poll; checkouts of a
// commit on request. Subprocesses are spawned through an injected spawner
// and killed, with their own children, when they exceed their timeout. A
// mirror git finds damaged is rebuilt beside it and swapped in, under a lock
// that the server processes sharing the cache directory all take.

import { type Clock, systemClock } from "../clock.ts";
import { type Logger, silentLogger } from "../log.ts";
import { readTail, type Spawner, spawnProcess } from "../process.ts";
import { sha256 } from "../guix/store_hash.ts";
import {
  directoryIdentity,
  lockRebuilds,
  rebuildDirectory,
  rebuildLeftovers,
} from "./rebuild_lock.ts";

/** A git command that failed, timed out, or was refused before it ran. */
export class GitError extends Error {
  constructor(
    message: string,
    readonly argv: string[],
    readonly stderr: string,
    readonly timedOut = false,
  ) {
    super(message);
    this.name = "GitError";
  }
}

export interface GitOptions {
  /** The git executable; default "git" from PATH. */
  command?: string;
  spawn?: Spawner;
  clock?: Clock;
  /** Per command; default 5 minutes. */
  timeoutMs?: number;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Where mirror repairs are reported; default silent. */
  logger?: Logger;
}

/** The branch names Lorica fetches (no option, no `..`, no odd bytes). */
export const BRANCH_REGEXP = /^(?!-)(?!.*\.\.)[A-Za-z0-9._\/+-]{1,200}$/;
/** A commit id, full or abbreviated: a tag name is not one. */
export const COMMIT_REGEXP = /^[0-9a-f]{7,64}$/;
const decoder = new TextDecoder();
/** How long a mirror found sound by a full check is not checked again. */
const FULL_CHECK_INTERVAL_MS = 60 * 60 * 1000;

/** Runs git for channel polling. */
export class Git {
  readonly #command: string;
  readonly #spawn: Spawner;
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #env: Record<string, string>;
  readonly #logger: Logger;
  readonly #locks = new Map<string, Promise<unknown>>();
  /**
   * When each mirror was last found sound by a full check (monotonic ms):
   * a specification whose branch is gone fails every poll, and a check of
   * Guix's repository reads every commit and tree in it.
   */
  readonly #checkedSound = new Map<string, number>();
  /** Mirrors whose rebuild leftovers this instance has looked for. */
  readonly #tidied = new Set<string>();

  constructor(options: GitOptions = {}) {
    this.#command = options.command ?? "git";
    this.#spawn = options.spawn ?? spawnProcess;
    this.#clock = options.clock ?? systemClock;
    this.#timeoutMs = options.timeoutMs ?? 5 * 60 * 1000;
    this.#logger = options.logger ?? silentLogger;
    this.#env = {
      // Never wait for a password or a host-key answer.
      GIT_TERMINAL_PROMPT: "0",
      GIT_SSH_COMMAND: "ssh -o BatchMode=yes",
      ...options.env,
    };
  }

  /**
   * Runs `git ARGS...`; returns its standard output.
   * @throws {GitError} on a non-zero exit or a timeout.
   */
  async run(args: string[], options: { cwd?: string } = {}): Promise<string> {
    const argv = [
      this.#command,
      "-c",
      "protocol.ext.allow=never",
      ...args,
    ];
    const abort = new AbortController();
    // Git runs in a process group of its own, and the timeout kills the
    // group: its own children (a remote helper stuck on the network, an
    // upload-pack) with it. One that left the group (or all of them, with
    // no setsid(1) on PATH) survives with git's pipes open: once git is
    // dead, stop reading them, or the timeout would bound nothing.
    const abandonPipes = new AbortController();
    let timedOut = false;
    const timer = this.#clock.sleep(this.#timeoutMs, abort.signal).then(
      () => {
        timedOut = true;
        child.kill("SIGKILL");
        void child.status.then(() => abandonPipes.abort());
      },
      () => {},
    );
    const child = this.#spawn(argv, {
      env: this.#env,
      cwd: options.cwd,
      ownGroup: true,
    });
    const [stdout, stderr, status] = await Promise.all([
      readTail(child.stdout, 16 << 20, undefined, abandonPipes.signal),
      readTail(child.stderr, 16 << 10, undefined, abandonPipes.signal),
      child.status,
    ]).finally(() => abort.abort());
    await timer;
    const errorText = decoder.decode(stderr);
    const name = `git ${subcommand(args)}`;
    if (timedOut) {
      throw new GitError(
        `Cannot run ${JSON.stringify(name)}: no answer after ${
          Math.round(this.#timeoutMs / 1000)
        } s`,
        argv,
        errorText,
        true,
      );
    }
    if (status.code !== 0) {
      throw new GitError(
        `Cannot run ${JSON.stringify(name)}: exit code ${
          status.signal ?? status.code
        }: ${mainLine(errorText)}`,
        argv,
        errorText,
      );
    }
    return decoder.decode(stdout);
  }

  /**
   * Fetches `branch` of `url` into the bare mirror `mirror` (created when
   * missing, rebuilt when damaged) and returns the branch's commit.
   * @throws {GitError} for a bad URL or branch, or a failed fetch.
   */
  async fetchBranch(
    url: string,
    branch: string,
    mirror: string,
  ): Promise<string> {
    checkUrl(url);
    if (!BRANCH_REGEXP.test(branch)) {
      throw refused(`branch ${JSON.stringify(branch.slice(0, 60))}`);
    }
    const ref = `refs/heads/${branch}`;
    return await this.#repairing(mirror, async (gitDir) => {
      await this.run([
        "--git-dir",
        gitDir,
        "fetch",
        "--quiet",
        "--no-tags",
        "--force",
        "--",
        url,
        `+${ref}:${ref}`,
      ]);
      return (await this.run([
        "--git-dir",
        gitDir,
        "rev-parse",
        "--verify",
        `${ref}^{commit}`,
      ])).trim();
    });
  }

  /**
   * Makes `commit` of `url` present in the mirror (fetching it when it is
   * not there yet; rebuilding a damaged mirror) and returns its full id.
   * @throws {GitError} when it cannot be had.
   */
  async fetchCommit(
    url: string,
    commit: string,
    mirror: string,
  ): Promise<string> {
    checkUrl(url);
    if (!COMMIT_REGEXP.test(commit)) {
      throw refused(`commit ${JSON.stringify(commit.slice(0, 60))}`);
    }
    return await this.#repairing(mirror, async (gitDir) => {
      const resolve = () =>
        this.run([
          "--git-dir",
          gitDir,
          "rev-parse",
          "--verify",
          `${commit}^{commit}`,
        ]);
      try {
        return (await resolve()).trim();
      } catch {
        await this.run([
          "--git-dir",
          gitDir,
          "fetch",
          "--quiet",
          "--no-tags",
          "--",
          url,
          commit,
        ]);
        return (await resolve()).trim();
      }
    });
  }

  /**
   * Checks `commit` of `mirror` out into `target` (a new directory).
   * @throws {GitError} when the commit is unknown or `target` exists.
   */
  async checkout(
    mirror: string,
    commit: string,
    target: string,
  ): Promise<void> {
    if (!COMMIT_REGEXP.test(commit)) {
      throw refused(`commit ${JSON.stringify(commit.slice(0, 60))}`);
    }
    await this.run([
      "clone",
      "--quiet",
      "--shared",
      "--no-checkout",
      "--",
      mirror,
      target,
    ]);
    await this.run([
      "-c",
      "advice.detachedHead=false",
      "checkout",
      "--quiet",
      "--detach",
      commit,
    ], { cwd: target });
  }

  /**
   * Runs `fetch` on `mirror`, under the mirror's lock. When it fails and git
   * finds the mirror itself damaged, `fetch` runs again on a new mirror
   * beside it, which replaces the damaged one once that fetch succeeded; a
   * failure the mirror is not to blame for (a missing branch, an unreachable
   * repository) is thrown as it is, the mirror kept.
   */
  #repairing(
    mirror: string,
    fetch: (gitDir: string) => Promise<string>,
  ): Promise<string> {
    return this.#locked(mirror, async () => {
      await this.#ensureMirror(mirror);
      const identity = await directoryIdentity(mirror);
      try {
        return await fetch(mirror);
      } catch (error) {
        if (!(error instanceof GitError)) throw error;
        const damage = await this.#damage(mirror);
        if (damage === null) throw error;
        this.#logger.warn("git mirror damaged", {
          mirror,
          damage,
          error: error.message,
        });
        return await this.#rebuild(mirror, identity, fetch);
      }
    });
  }

  /**
   * Creates the mirror when missing; the first time, also removes what
   * rebuilds cut short by a crash left beside it.
   */
  async #ensureMirror(mirror: string): Promise<void> {
    if (this.#tidied.has(mirror) && await exists(`${mirror}/HEAD`)) return;
    // Under the rebuild lock: a mirror absent for the instant of another
    // process's swap must not be created anew in between.
    const lock = await lockRebuilds(mirror);
    try {
      if (!this.#tidied.has(mirror)) {
        await this.#removeLeftovers(mirror);
        this.#tidied.add(mirror);
      }
      if (!await exists(`${mirror}/HEAD`)) {
        await Deno.mkdir(mirror, { recursive: true });
        await this.run(["init", "--quiet", "--bare", mirror]);
      }
    } finally {
      lock.close();
    }
  }

  /**
   * What git finds wrong with the mirror itself, without the network: not
   * a repository at all (HEAD or the object directory gone bad), or objects
   * its refs reach missing or unreadable (a corrupt loose object or pack).
   * Null when it is sound, or when the check itself could not finish.
   */
  async #damage(mirror: string): Promise<string | null> {
    const checkedAt = this.#checkedSound.get(mirror);
    const fresh = checkedAt !== undefined &&
      this.#clock.monotonic() - checkedAt < FULL_CHECK_INTERVAL_MS;
    const checks = [
      ["rev-parse", "--absolute-git-dir"],
      // Reads every commit and tree the refs reach, not the blobs.
      ...(fresh ? [] : [[
        "fsck",
        "--connectivity-only",
        "--no-dangling",
        "--no-progress",
      ]]),
    ];
    for (const check of checks) {
      try {
        await this.run(["--git-dir", mirror, ...check]);
      } catch (error) {
        if (!(error instanceof GitError) || error.timedOut) return null;
        this.#checkedSound.delete(mirror);
        return mainLine(error.stderr) || error.message;
      }
    }
    if (!fresh) this.#checkedSound.set(mirror, this.#clock.monotonic());
    return null;
  }

  /**
   * Fetches into a new mirror beside `mirror` and swaps it in once the
   * fetch succeeded; until then, and if it fails, the old one stays. Other
   * server processes may share the cache: the rebuild holds the mirror's
   * lock, and one that finds, once it has the lock, that the mirror is no
   * longer the one it found damaged (`identity`) fetches into the mirror
   * another process rebuilt.
   */
  async #rebuild(
    mirror: string,
    identity: string | null,
    fetch: (gitDir: string) => Promise<string>,
  ): Promise<string> {
    const lock = await lockRebuilds(mirror);
    try {
      if (await directoryIdentity(mirror) !== identity) {
        const result = await fetch(mirror);
        this.#logger.info("git mirror rebuilt by another process", {
          mirror,
          commit: result,
        });
        return result;
      }
      await this.#removeLeftovers(mirror);
      const fresh = await rebuildDirectory(mirror, "rebuild");
      let result: string;
      try {
        await this.run(["init", "--quiet", "--bare", fresh]);
        result = await fetch(fresh);
      } catch (error) {
        await removeTree(fresh);
        this.#logger.warn("git mirror rebuild failed", {
          mirror,
          error: error instanceof Error ? error.message : String(error),
        });
        throw error;
      }
      // An empty directory of a name of its own, which rename(2) replaces.
      const damaged = await rebuildDirectory(mirror, "damaged");
      try {
        await Deno.rename(mirror, damaged);
      } catch (error) {
        await removeTree(fresh);
        await removeTree(damaged);
        throw error;
      }
      try {
        await Deno.rename(fresh, mirror);
      } catch (error) {
        await Deno.rename(damaged, mirror);
        throw error;
      }
      await removeTree(damaged);
      this.#logger.info("git mirror rebuilt", { mirror, commit: result });
      return result;
    } finally {
      lock.close();
    }
  }

  /**
   * Removes the directories of rebuilds of `mirror` that a crash cut short
   * (new mirrors half fetched, damaged ones not yet removed). Only with the
   * rebuild lock held: then no rebuild is running to own them.
   */
  async #removeLeftovers(mirror: string): Promise<void> {
    for (const path of await rebuildLeftovers(mirror)) {
      await removeTree(path);
      this.#logger.info("git mirror rebuild leftover removed", {
        mirror,
        path,
      });
    }
  }

  /** Runs `work` after every earlier operation on the same mirror. */
  #locked<T>(mirror: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(mirror) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(work);
    this.#locks.set(mirror, next);
    void next.finally(() => {
      if (this.#locks.get(mirror) === next) this.#locks.delete(mirror);
    }).catch(() => {});
    return next;
  }
}

/** The mirror directory of `url` under `cacheDir`. */
export function mirrorDirectory(cacheDir: string, url: string): string {
  const digest = [...sha256(url).subarray(0, 16)]
    .map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${cacheDir.replace(/\/+$/, "")}/${digest}.git`;
}

/** Whether git may be given `url` (not empty, no option, no control byte). */
export function isFetchableUrl(url: string): boolean {
  // deno-lint-ignore no-control-regex
  return url !== "" && !url.startsWith("-") && !/[\x00-\x1f]/.test(url);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Removes a directory tree; nothing there is fine. */
async function removeTree(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

function checkUrl(url: string): void {
  if (!isFetchableUrl(url)) {
    throw refused(`URL ${JSON.stringify(url.slice(0, 80))}`);
  }
}

function refused(what: string): GitError {
  return new GitError(`Cannot fetch ${what}: not acceptable`, [], "");
}

/** The line that says what went wrong: git's first `fatal:`, else the last. */
function mainLine(text: string): string {
  const lines = text.trimEnd().split("\n");
  const fatal = lines.find((line) => /^(fatal|error): /.test(line));
  return (fatal ?? lines[lines.length - 1] ?? "").slice(0, 300);
}

/** The subcommand of `args`, past `-c X` and `--git-dir X` options. */
function subcommand(args: string[]): string {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "-c" || args[i] === "--git-dir") i++;
    else return args[i];
  }
  return "";
}
