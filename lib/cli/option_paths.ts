// Checks of the directories options name, done at startup so that a bad
// path stops the program at once, naming the option, instead of failing
// later in whatever first writes there.

import { UsageError } from "./args.ts";

export interface DirectoryCheckOptions {
  /** Create the directory and its parents when missing; default true. */
  create?: boolean;
  /**
   * The option as messages name it; default `OPTION "PATH"`. When it shows
   * another value (the directory of a `--database` file, a default), the
   * messages name the directory too.
   */
  label?: string;
  /**
   * What the check creates there, then removes: a file (default), or a
   * symbolic link for a directory of GC roots, which are links.
   */
  probe?: "file" | "symlink";
}

/**
 * Makes sure `path` is a directory this process can create entries in.
 * @throws {UsageError} naming the option and the path.
 */
export async function checkDirectoryOption(
  option: string,
  path: string,
  options: DirectoryCheckOptions = {},
): Promise<void> {
  const quoted = JSON.stringify(path);
  const { create = true, label = `${option} ${quoted}`, probe = "file" } =
    options;
  const same = label === `${option} ${quoted}`;
  const fail = (reason: string, cause?: unknown): never => {
    throw new UsageError(`Cannot use ${label}: ${reason}`, { cause });
  };

  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      fail((error as Error).message, error);
    }
  }
  if (info === null) {
    if (!create) {
      fail(same ? "no such directory" : `directory ${quoted} does not exist`);
    }
    try {
      await Deno.mkdir(path, { recursive: true });
    } catch (error) {
      fail((error as Error).message, error);
    }
  } else if (!info.isDirectory) {
    fail(same ? "not a directory" : `${quoted} is not a directory`);
  }

  const entry = `${path}/.lorica-probe-${crypto.randomUUID().slice(0, 8)}`;
  try {
    if (probe === "symlink") await Deno.symlink(".", entry);
    else await Deno.writeFile(entry, new Uint8Array(), { createNew: true });
  } catch (error) {
    fail(
      `cannot create entries in ${quoted}: ${(error as Error).message}`,
      error,
    );
  }
  await Deno.remove(entry).catch(() => {});
}

/**
 * The directory part of a file name: `"."` for a bare name, `"/"` for a
 * file at the root.
 */
export function directoryOf(path: string): string {
  const slash = path.lastIndexOf("/");
  if (slash === -1) return ".";
  return path.slice(0, slash) || "/";
}

/** The first bytes of every SQLite database file. */
const SQLITE_HEADER = "SQLite format 3\0";

/**
 * Makes sure the SQLite database file `path` names, when it exists, is
 * one this process can open for writing: not a directory, a SQLite file,
 * writable. SQLite's own errors for these ("unable to open database
 * file", "file is not a database") would end the server with status 1,
 * which systemd answers by starting it again every few seconds.
 * @throws {UsageError} naming `label` (the option and its value).
 */
export async function checkDatabaseFileOption(
  label: string,
  path: string,
): Promise<void> {
  const fail = (reason: string, cause?: unknown): never => {
    throw new UsageError(`Cannot use ${label}: ${reason}`, { cause });
  };
  const info = await Deno.stat(path).catch(() => null);
  if (info === null) return;
  if (info.isDirectory) {
    fail(
      `a directory, not a database file (such as ${
        JSON.stringify(`${path.replace(/\/+$/, "")}/lorica.db`)
      })`,
    );
  }
  let file: Deno.FsFile | null = null;
  try {
    file = await Deno.open(path, { read: true, write: true });
  } catch (error) {
    fail(`cannot open it for writing: ${(error as Error).message}`, error);
  }
  try {
    const head = new Uint8Array(SQLITE_HEADER.length);
    const read = await file!.read(head);
    // An empty file is a new database to SQLite.
    if (info.size === 0) return;
    const text = new TextDecoder().decode(head.subarray(0, read ?? 0));
    if (text !== SQLITE_HEADER) {
      fail("not a SQLite database (its first bytes are not SQLite's header)");
    }
  } finally {
    file!.close();
  }
}
