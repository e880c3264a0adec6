// Syntax of store paths: `<store>/<32 nix-base32 chars>-<name>`.

/** The default store directory; Guix honours `NIX_STORE_DIR` instead. */
export const DEFAULT_STORE_DIR = "/gnu/store";

/** The 32 characters of nix-base32 (no e, o, t, u). */
export const NIX_BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

const HASH_PART_REGEXP = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;
const NAME_REGEXP = /^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*$/;

/** A store path split into its parts. */
export interface StorePath {
  /** The full path, e.g. `/gnu/store/<hash>-hello-2.12.drv`. */
  path: string;
  /** The 32-character nix-base32 hash part. */
  hash: string;
  /** Everything after the hash and its dash, e.g. `hello-2.12.drv`. */
  name: string;
  /** `<hash>-<name>`. */
  basename: string;
}

/** Thrown for text that is not a store path of the expected store. */
export class StorePathError extends TypeError {
  constructor(message: string, readonly value: string) {
    super(message);
    this.name = "StorePathError";
  }
}

/** The store directory this process uses: `NIX_STORE_DIR` or /gnu/store. */
export function storeDirFromEnv(
  env: { get(key: string): string | undefined } = Deno.env,
): string {
  const dir = env.get("NIX_STORE_DIR");
  return dir ? dir.replace(/\/+$/, "") : DEFAULT_STORE_DIR;
}

/**
 * Parses `path` as an item directly inside `storeDir`.
 * @throws {StorePathError} when it is anything else (sub-paths, `..`, bad hash).
 */
export function parseStorePath(path: string, storeDir: string): StorePath {
  const prefix = storeDir + "/";
  if (!path.startsWith(prefix)) {
    throw new StorePathError(
      `Cannot parse store path ${quote(path)}: not inside ${quote(storeDir)}`,
      path,
    );
  }
  const basename = path.slice(prefix.length);
  const { hash, name } = parseStoreBasename(basename, path);
  return { path, hash, name, basename };
}

/**
 * Parses `<hash>-<name>`, the last component of a store path.
 * @throws {StorePathError} when the hash or name is malformed.
 */
export function parseStoreBasename(
  basename: string,
  shownAs = basename,
): { hash: string; name: string } {
  const hash = basename.slice(0, 32);
  const name = basename.slice(33);
  if (!HASH_PART_REGEXP.test(hash) || basename[32] !== "-") {
    throw new StorePathError(
      `Cannot parse store path ${
        quote(shownAs)
      }: hash part is not 32 nix-base32 characters`,
      shownAs,
    );
  }
  if (!NAME_REGEXP.test(name) || name.length > 211) {
    throw new StorePathError(
      `Cannot parse store path ${quote(shownAs)}: invalid name ${quote(name)}`,
      shownAs,
    );
  }
  return { hash, name };
}

/** True when `path` is an item directly inside `storeDir`. */
export function isStorePath(path: string, storeDir: string): boolean {
  try {
    parseStorePath(path, storeDir);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `path` as a derivation: an item directly inside `storeDir` whose
 * name ends in `.drv`. This is what stands between a derivation name a peer
 * sent and a command line or a file name built from it.
 * @throws {StorePathError} when it is anything else.
 */
export function parseDerivationPath(path: string, storeDir: string): StorePath {
  const parsed = parseStorePath(path, storeDir);
  if (!parsed.name.endsWith(".drv")) {
    throw new StorePathError(
      `Cannot parse derivation path ${quote(path)}: name ${
        quote(parsed.name)
      } does not end in ".drv"`,
      path,
    );
  }
  return parsed;
}

/** True for a store path whose name ends in `.drv`. */
export function isDerivationPath(path: string, storeDir: string): boolean {
  try {
    parseDerivationPath(path, storeDir);
    return true;
  } catch {
    return false;
  }
}

/**
 * The store directory `drv` is a derivation of, as far as its path shows:
 * the directory it sits in, when that is an absolute path with no empty,
 * `.` or `..` component (as a store directory is) and `drv` a well-formed
 * derivation there; undefined otherwise. A path such as
 * `/gnu/store/../../etc/HASH-x.drv` names no store: it is a malformed
 * derivation, not one of another store.
 */
export function derivationStoreDir(drv: string): string | undefined {
  const directory = drv.slice(0, Math.max(0, drv.lastIndexOf("/")));
  const parts = directory.split("/").slice(1);
  const plain = directory.startsWith("/") &&
    parts.every((part) => part !== "" && part !== "." && part !== "..");
  return plain && isDerivationPath(drv, directory) ? directory : undefined;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 200 ? value.slice(0, 200) + "…" : value);
}
