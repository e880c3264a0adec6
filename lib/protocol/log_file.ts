// The file an upload writes a build log into. Each upload gets a file of its
// own beside the build's log and puts it in the log's place (one atomic
// rename) once it holds log bytes. Until then the build's previous log stays
// where it is: an upload that carries nothing (a build whose outputs the
// worker already had, a worker cut off before its first line) cannot blank a
// real log. And an older upload still writing after a newer one took the
// place writes into a file nobody reads any more, never over the new log.

import { toHex } from "../hex.ts";

/** Where one upload writes, and whether its file is the build's log yet. */
export class UploadFile {
  /** Open for writing; the caller closes it. */
  readonly file: Deno.FsFile;
  readonly #path: string;
  readonly #partPath: string;
  #published = false;

  private constructor(file: Deno.FsFile, path: string, partPath: string) {
    this.file = file;
    this.#path = path;
    this.#partPath = partPath;
  }

  /**
   * Creates the upload's own file beside `path` (`<path>.<random>.part`).
   * @throws {Deno.errors.NotFound} and other errors of `Deno.open`.
   */
  static async create(path: string): Promise<UploadFile> {
    const random = crypto.getRandomValues(new Uint8Array(8));
    const partPath = `${path}.${toHex(random)}.part`;
    const file = await Deno.open(partPath, {
      write: true,
      createNew: true,
      mode: 0o644,
    });
    return new UploadFile(file, path, partPath);
  }

  /** True once the upload's file is at the log's path. */
  get published(): boolean {
    return this.#published;
  }

  /**
   * Puts the upload's file in the log's place, replacing the previous log;
   * writes through `file` keep going to it. Does nothing the second time.
   * @throws {Deno.errors.NotFound} and other errors of `Deno.rename`.
   */
  async publish(): Promise<void> {
    if (this.#published) return;
    await Deno.rename(this.#partPath, this.#path);
    this.#published = true;
  }

  /** Removes the upload's file unless it was published. */
  async discard(): Promise<void> {
    if (this.#published) return;
    await Deno.remove(this.#partPath).catch(() => {});
  }
}

/** Size in bytes of the file at `path`; 0 when there is none. */
export async function storedLogSize(path: string): Promise<number> {
  try {
    const info = await Deno.stat(path);
    return info.isFile ? info.size : 0;
  } catch {
    return 0;
  }
}

const PART_NAME_REGEXP = /^[0-9a-df-np-sv-z]{32}\.log\.gz\.[0-9a-f]{16}\.part$/;

/**
 * Removes the upload files left in `cacheDir` by a receiver that stopped
 * mid-upload (a crash), if not written for `idleMs` (so none that a live
 * upload still owns); returns how many went. Nothing else is touched.
 */
export async function removeLeftUploads(
  cacheDir: string,
  idleMs: number,
  now: number,
): Promise<number> {
  let removed = 0;
  for await (const entry of Deno.readDir(cacheDir)) {
    if (!entry.isFile || !PART_NAME_REGEXP.test(entry.name)) continue;
    const path = `${cacheDir}/${entry.name}`;
    try {
      const info = await Deno.stat(path);
      if ((info.mtime?.getTime() ?? now) > now - idleMs) continue;
      await Deno.remove(path);
      removed++;
    } catch {
      // Gone meanwhile.
    }
  }
  return removed;
}
