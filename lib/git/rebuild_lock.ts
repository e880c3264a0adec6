// What lets several server processes share a git cache while they rebuild
// damaged mirrors: a lock per mirror, taken across processes, and the names
// of the directories a rebuild makes beside the mirror, unique to it, so
// that what a crashed rebuild left is recognised and removed.

/** What a rebuild makes beside the mirror: the new mirror, or the old one set aside. */
export type RebuildDirectoryKind = "rebuild" | "damaged";

/**
 * Takes the lock on rebuilding `mirror`; closing the returned file releases
 * it. The lock is flock(2) on a file beside the mirror: the kernel releases
 * it when its holder closes the file or dies, so a crash leaves no stale
 * lock. The file itself stays: removing it would let a process that opened
 * it just before lock a file that no other process sees any more.
 */
export async function lockRebuilds(mirror: string): Promise<Deno.FsFile> {
  await Deno.mkdir(splitPath(mirror).parent, { recursive: true });
  const file = await Deno.open(`${mirror}.lock`, {
    create: true,
    write: true,
  });
  try {
    await file.lock(true);
  } catch (error) {
    file.close();
    throw error;
  }
  return file;
}

/**
 * Creates an empty directory beside `mirror` for a rebuild, under a name
 * of its own (`NAME.rebuild-RANDOM`): two processes never share one.
 */
export async function rebuildDirectory(
  mirror: string,
  kind: RebuildDirectoryKind,
): Promise<string> {
  const { parent, name } = splitPath(mirror);
  return await Deno.makeTempDir({ dir: parent, prefix: `${name}.${kind}-` });
}

/**
 * The directories of rebuilds of `mirror` beside it, the fixed names of
 * earlier versions (`NAME.rebuild`, `NAME.damaged`) included. With the lock
 * held, no running rebuild owns any: they are what crashes left.
 */
export async function rebuildLeftovers(mirror: string): Promise<string[]> {
  const { parent, name } = splitPath(mirror);
  const leftovers: string[] = [];
  try {
    for await (const entry of Deno.readDir(parent)) {
      if (!entry.name.startsWith(`${name}.`)) continue;
      const rest = entry.name.slice(name.length + 1);
      const kind = rest.replace(/-.*$/s, "");
      if (kind === "rebuild" || kind === "damaged") {
        leftovers.push(`${parent}/${entry.name}`);
      }
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return leftovers.sort();
}

/**
 * Which directory `path` is (device and inode), null when there is none:
 * a rebuild swaps another one in under the same name.
 */
export async function directoryIdentity(path: string): Promise<string | null> {
  try {
    const info = await Deno.stat(path);
    return `${info.dev}:${info.ino}`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** The directory `path` is in, and its last component. */
function splitPath(path: string): { parent: string; name: string } {
  const trimmed = path.replace(/\/+$/, "");
  const slash = trimmed.lastIndexOf("/");
  return {
    parent: slash > 0 ? trimmed.slice(0, slash) : slash === 0 ? "/" : ".",
    name: trimmed.slice(slash + 1),
  };
}
