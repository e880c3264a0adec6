// GC roots for what the farm still needs: evaluated derivations and built
// outputs (cuirass.md 5.10). A root is a symlink named by the item's
// basename in a directory the daemon walks; its age is the link's mtime.

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import { parseStorePath } from "./store_path.ts";

type Env = { get(key: string): string | undefined };

/** The Guix state directory assumed for the daemon, and why. */
export interface GuixStateDirectory {
  path: string;
  /** This process's GUIX_STATE_DIRECTORY, or the usual /var/guix. */
  source: "GUIX_STATE_DIRECTORY" | "default";
}

/**
 * The daemon's state directory, as this process can best tell: its own
 * GUIX_STATE_DIRECTORY, which the guix commands it runs also read (to
 * find the daemon's socket, unless GUIX_DAEMON_SOCKET names one), else
 * /var/guix. Only an assumption: nothing the daemon answers names its
 * state directory, which its own environment or the build of Guix sets.
 */
export function guixStateDirectory(env: Env = Deno.env): GuixStateDirectory {
  const path = env.get("GUIX_STATE_DIRECTORY");
  return path === undefined
    ? { path: "/var/guix", source: "default" }
    : { path, source: "GUIX_STATE_DIRECTORY" };
}

/**
 * The daemon that GUIX_DAEMON_SOCKET reaches over the network (a
 * `guix://` or `ssh://` URI, not a socket file), any user name or password
 * left out; undefined for the local daemon. Such a daemon may run on
 * another machine, whose file system it walks for roots: links made on
 * this one would protect nothing there.
 */
export function networkDaemon(env: Env = Deno.env): string | undefined {
  const socket = env.get("GUIX_DAEMON_SOCKET")?.trim() ?? "";
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(socket)?.[1].toLowerCase();
  if (scheme === undefined || scheme === "file") return undefined;
  try {
    const url = new URL(socket);
    return `${scheme}://${url.host}${url.pathname}`;
  } catch {
    return `${scheme}://`;
  }
}

/** The default root directory: the per-user profile roots of Guix. */
export function defaultGcRootDirectory(env: Env = Deno.env): string {
  const state = guixStateDirectory(env).path;
  const user = env.get("USER") ?? env.get("LOGNAME") ?? "lorica";
  return `${state}/gcroots/profiles/per-user/${user}/lorica`;
}

/**
 * The directories whose trees the daemon walks for roots: `gcroots` and
 * `profiles` in its state directory (see guixStateDirectory; guix.md 7.3).
 */
export function daemonRootDirectories(env: Env = Deno.env): string[] {
  const state = guixStateDirectory(env).path;
  return [`${state}/gcroots`, `${state}/profiles`];
}

/**
 * Whether the daemon finds roots made in `directory` (absolute): it must
 * lie within one of `daemonRoots`, compared as written, since the daemon's
 * own tree holds symlinks (gcroots/profiles to ../profiles) that it
 * follows. A directory elsewhere is seen only through a link the operator
 * made.
 */
export function underDaemonRoots(
  directory: string,
  daemonRoots: readonly string[],
): boolean {
  const normal = (path: string) =>
    path.split("/").filter((part) => part !== "" && part !== ".")
      .reduce<string[]>(
        (parts, part) => part === ".." ? parts.slice(0, -1) : [...parts, part],
        [],
      ).join("/");
  const inner = normal(directory);
  return daemonRoots.map(normal).some((outer) =>
    inner === outer || inner.startsWith(`${outer}/`)
  );
}

/**
 * Parses a duration as Guix writes them (`30d`, `12h`, `2w`, `90s`, and
 * `6m` for six months of 30 days). A bare number is refused, as Guix and
 * Cuirass refuse it: `--ttl=30` or `--log-expiry=180` meant as days would
 * otherwise expire GC roots or delete build logs within minutes.
 * @throws {RangeError} for anything else.
 */
export function parseDuration(text: string): number {
  const match = /^([0-9]{1,9})([smhdw])$/.exec(text.trim());
  if (!match) {
    throw new RangeError(
      `Cannot read duration ${
        JSON.stringify(text.slice(0, 40))
      }: expected a number with s, h, d, w or m (30 days)`,
    );
  }
  // As in Guix's string->duration, "m" is a month of 30 days, not minutes.
  const unit = { s: 1, m: 30 * 86400, h: 3600, d: 86400, w: 604800 }[
    match[2] as "s" | "m" | "h" | "d" | "w"
  ];
  return Number(match[1]) * unit;
}

export interface GcRootsOptions {
  /** Where the links live; must be under the daemon's gcroots. */
  directory: string;
  storeDir: string;
  clock: Clock;
  logger: Logger;
}

export interface ExpireOptions {
  /** Links older than this many seconds go. */
  ttlSeconds: number;
  /**
   * True when a `.drv` root must stay whatever its age: its build is still
   * pending (case C14). Only asked about old `.drv` links.
   */
  keepDerivation: (drv: string) => Promise<boolean>;
}

/** The GC roots Lorica owns. */
export class GcRoots {
  readonly #options: GcRootsOptions;

  constructor(options: GcRootsOptions) {
    this.#options = options;
  }

  get directory(): string {
    return this.#options.directory;
  }

  /**
   * Roots each store item (creating or refreshing its link). Items that
   * are not store paths, and links that cannot be made, are skipped with a
   * warning; with `strict`, a link that cannot be made (a full disk) stops
   * the registration instead, for callers that must not go on unrooted.
   * @throws {Error} when the directory itself cannot be created, or with
   * `strict` when a link cannot be, naming it.
   */
  async register(
    items: Iterable<string>,
    { strict = false }: { strict?: boolean } = {},
  ): Promise<number> {
    const { directory, storeDir, logger } = this.#options;
    try {
      await Deno.mkdir(directory, { recursive: true });
    } catch (error) {
      throw new Error(
        `Cannot create GC roots directory ${JSON.stringify(directory)}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
    let count = 0;
    for (const item of items) {
      let basename: string;
      try {
        basename = parseStorePath(item, storeDir).basename;
      } catch {
        logger.warn("root skipped", { item, reason: "not a store item" });
        continue;
      }
      // A fresh link, renamed over the old one: its mtime is now.
      const link = `${directory}/${basename}`;
      const temp = `${directory}/.${basename}.${
        crypto.randomUUID().slice(0, 8)
      }`;
      try {
        await Deno.symlink(item, temp);
        await Deno.rename(temp, link);
        count++;
      } catch (error) {
        await Deno.remove(temp).catch(() => {});
        if (strict) {
          throw new Error(
            `Cannot create GC root ${JSON.stringify(link)}: ${
              (error as Error).message
            }`,
            { cause: error },
          );
        }
        logger.warn("root not registered", { item, link, error });
      }
    }
    return count;
  }

  /** The store items currently rooted here. */
  async list(): Promise<string[]> {
    const items: string[] = [];
    for await (const entry of readDirOrEmpty(this.#options.directory)) {
      if (entry.isSymlink && !entry.name.startsWith(".")) {
        items.push(`${this.#options.storeDir}/${entry.name}`);
      }
    }
    return items.sort();
  }

  /** Removes the root of each item, if any. */
  async unregister(items: Iterable<string>): Promise<void> {
    for (const item of items) {
      const basename = item.slice(item.lastIndexOf("/") + 1);
      if (basename === "" || basename.startsWith(".")) continue;
      await Deno.remove(`${this.#options.directory}/${basename}`).catch(
        () => {},
      );
    }
  }

  /** Deletes links older than the TTL, except pending derivations'. */
  async expire(
    options: ExpireOptions,
  ): Promise<{ removed: number; kept: number }> {
    const { directory, storeDir, clock, logger } = this.#options;
    const cutoff = clock.now() - options.ttlSeconds * 1000;
    let removed = 0;
    let kept = 0;
    for await (const entry of readDirOrEmpty(directory)) {
      if (!entry.isSymlink || entry.name.startsWith(".")) continue;
      const link = `${directory}/${entry.name}`;
      let mtime: number;
      try {
        mtime = (await Deno.lstat(link)).mtime?.getTime() ?? 0;
      } catch {
        continue;
      }
      if (mtime > cutoff) continue;
      if (
        entry.name.endsWith(".drv") &&
        await options.keepDerivation(`${storeDir}/${entry.name}`)
      ) {
        kept++;
        continue;
      }
      await Deno.remove(link).then(() => removed++, () => {});
    }
    logger.info("roots expired", { removed, kept });
    return { removed, kept };
  }
}

/**
 * Expires roots every `periodSeconds` (default daily) until aborted; never
 * throws.
 */
export async function runGcRootCleaner(
  roots: GcRoots,
  options: ExpireOptions & {
    clock: Clock;
    logger: Logger;
    periodSeconds?: number;
  },
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      await roots.expire(options);
    } catch (error) {
      options.logger.error("root cleaning failed", { error });
    }
    try {
      await options.clock.sleep(
        (options.periodSeconds ?? 86400) * 1000,
        signal,
      );
    } catch {
      return;
    }
  }
}

async function* readDirOrEmpty(dir: string): AsyncIterable<Deno.DirEntry> {
  try {
    yield* Deno.readDir(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
