// The fake daemon's state: which store items are valid for it, locks, roots.

import { parseStorePath, storeDirFromEnv } from "../../lib/guix/store_path.ts";
import { encodeNixBase32 } from "../../lib/guix/base32.ts";
import { sha256 } from "../../lib/guix/store_hash.ts";
import { narHashOfPath } from "../../lib/guix/nar_dump.ts";

/** What the daemon records about a valid store item. */
export interface PathInfo {
  path: string;
  /** `sha256:<nix-base32>` of the item's NAR. */
  narHash: string;
  narSize: number;
  /** Full store paths, sorted. */
  references: string[];
  /** Full .drv path, or null when unknown. */
  deriver: string | null;
  registrationTime: number;
}

/**
 * One daemon: a physical store directory, possibly shared with other
 * daemons, and a private state directory holding its own idea of validity.
 */
export class DaemonStore {
  constructor(readonly storeDir: string, readonly stateDir: string) {}

  /** The store of `NIX_STORE_DIR` and the state of `FAKE_GUIX_STATE`. */
  static fromEnv(): DaemonStore {
    const storeDir = storeDirFromEnv();
    const stateDir = Deno.env.get("FAKE_GUIX_STATE") ??
      `${storeDir.replace(/\/[^/]*$/, "")}/var/guix`;
    return new DaemonStore(storeDir, stateDir.replace(/\/+$/, ""));
  }

  /** The registry record of `path`, or null when it is not valid here. */
  async queryPathInfo(path: string): Promise<PathInfo | null> {
    let hash: string;
    try {
      hash = parseStorePath(path, this.storeDir).hash;
    } catch {
      return null;
    }
    const info = await this.queryByHashPart(hash);
    return info && info.path === path ? info : null;
  }

  /** The valid item whose hash part is `hash`, or null. */
  async queryByHashPart(hash: string): Promise<PathInfo | null> {
    if (!/^[0-9a-z]{32}$/.test(hash)) return null;
    let info: PathInfo;
    try {
      info = JSON.parse(
        await Deno.readTextFile(`${this.stateDir}/db/${hash}.json`),
      );
    } catch {
      return null;
    }
    // An item deleted behind the daemon's back is no longer valid.
    return (await exists(info.path)) ? info : null;
  }

  /** True when `path` is valid for this daemon. */
  async isValid(path: string): Promise<boolean> {
    return (await this.queryPathInfo(path)) !== null;
  }

  /** Records `path` (already in place) as valid, hashing its NAR. */
  async register(
    path: string,
    references: string[],
    deriver: string | null,
  ): Promise<PathInfo> {
    const { narHash, narSize } = await narHashOfPath(path);
    const info: PathInfo = {
      path,
      narHash,
      narSize,
      references: [...new Set(references)].sort(),
      deriver,
      registrationTime: Math.floor(Date.now() / 1000),
    };
    const { hash } = parseStorePath(path, this.storeDir);
    await writeAtomic(
      `${this.stateDir}/db/${hash}.json`,
      JSON.stringify(info, null, 1),
    );
    return info;
  }

  /**
   * Runs `action` holding the store-wide lock of `path`; the lock lives in
   * the store so that daemons sharing the store never write an item at once.
   */
  async withLock<T>(path: string, action: () => Promise<T>): Promise<T> {
    const dir = `${this.storeDir}/.locks`;
    await Deno.mkdir(dir, { recursive: true });
    const basename = path.slice(this.storeDir.length + 1);
    const file = await Deno.open(`${dir}/${basename}.lock`, {
      write: true,
      create: true,
    });
    try {
      await file.lock(true);
      return await action();
    } finally {
      file.close();
    }
  }

  /** A fresh scratch path inside the store (same file system as items). */
  tempPath(label: string): string {
    const random = crypto.randomUUID().slice(0, 8);
    return `${this.storeDir}/.tmp-${random}-${label.slice(0, 40)}`;
  }

  /**
   * Moves the finished `temp` tree to `path`. When another daemon sharing
   * the store already put identical content there, `temp` is dropped.
   */
  async install(temp: string, path: string): Promise<void> {
    if (await exists(path)) {
      const [mine, theirs] = await Promise.all([
        narHashOfPath(temp),
        narHashOfPath(path),
      ]);
      if (mine.narHash === theirs.narHash) {
        await Deno.remove(temp, { recursive: true });
        return;
      }
      const trash = this.tempPath("trash");
      await Deno.rename(path, trash);
      await Deno.rename(temp, path);
      await Deno.remove(trash, { recursive: true });
      return;
    }
    await Deno.rename(temp, path);
  }

  /** Where the gzipped build log of `drvPath` lives (`guix/store.scm`). */
  logFile(drvPath: string): string {
    const basename = drvPath.slice(drvPath.lastIndexOf("/") + 1);
    return `${this.stateDir}/log/guix/drvs/${basename.slice(0, 2)}/${
      basename.slice(2)
    }.gz`;
  }

  /**
   * The LOGFILE field of `@ build-started`: the same file, spelt with the
   * daemon's double slash (guix.md 1.6).
   */
  daemonLogField(drvPath: string): string {
    const basename = drvPath.slice(drvPath.lastIndexOf("/") + 1);
    return `${this.stateDir}/log/guix/drvs/${basename.slice(0, 2)}//${
      basename.slice(2)
    }.gz`;
  }

  /** Registers `link` (a user file pointing into the store) as a root. */
  async addIndirectRoot(link: string): Promise<void> {
    const dir = `${this.stateDir}/gcroots/auto`;
    await Deno.mkdir(dir, { recursive: true });
    const name = encodeNixBase32(sha256(link).subarray(0, 20));
    const root = `${dir}/${name}`;
    await Deno.remove(root).catch(() => {});
    await Deno.symlink(link, root);
  }

  /** The GC roots: indirect roots print the user's link, like Guix. */
  async listRoots(): Promise<string[]> {
    const roots: string[] = [];
    await walkRoots(`${this.stateDir}/gcroots`, this.storeDir, roots);
    return roots.sort();
  }
}

/** Writes `text` to `file` through a temporary file and a rename. */
export async function writeAtomic(
  file: string,
  text: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const dir = file.slice(0, file.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const temp = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  if (typeof text === "string") await Deno.writeTextFile(temp, text, { mode });
  else await Deno.writeFile(temp, text, { mode });
  await Deno.rename(temp, file);
}

/** True when `path` exists (without following a final symlink). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function walkRoots(
  dir: string,
  storeDir: string,
  roots: string[],
): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const entry of entries) {
    const full = `${dir}/${entry.name}`;
    if (entry.isDirectory) {
      await walkRoots(full, storeDir, roots);
    } else if (entry.isSymlink) {
      const target = await Deno.readLink(full);
      if (target.startsWith(storeDir + "/")) roots.push(full);
      else if (await exists(target)) roots.push(target);
    }
  }
}
