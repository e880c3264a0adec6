// The file an upload writes a build log into. Each upload gets a file of its
// own beside the build's log and puts it in the log's place once it holds
// log bytes. Until then the build's previous log stays where it is: an upload
// that carries nothing (a build whose outputs the worker already had, a
// worker cut off before its first line) cannot blank a real log. And an older
// upload still writing after a newer one took the place writes into a file
// nobody reads any more, never over the new log.
//
// The upload's own name (`<log>.<id>.part`) stays on its file, as a second
// link, until the upload has ended, and the upload holds an exclusive lock
// on it meanwhile. A server that dies mid-upload (SIGKILL, power loss) thus
// leaves, beside a log whose gzip stream stops short, an unlocked name that
// says which log it was writing: see left_uploads.ts.

import { toHex } from "../hex.ts";

/** Where one upload writes, and whether its file is the build's log yet. */
export class UploadFile {
  /** Open for writing, locked for this upload; the caller closes it. */
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
   * Creates the upload's own file beside `path` (`<path>.<random>.part`),
   * locked until `file` is closed.
   * @throws {Deno.errors.NotFound} and other errors of `Deno.open`.
   */
  static async create(path: string): Promise<UploadFile> {
    const partPath = partPathOf(path);
    const file = await Deno.open(partPath, {
      write: true,
      createNew: true,
      mode: 0o644,
    });
    try {
      // Nobody else knows the new name yet: the lock is free.
      await file.lock(true);
    } catch (error) {
      file.close();
      await Deno.remove(partPath).catch(() => {});
      throw error;
    }
    return new UploadFile(file, path, partPath);
  }

  /** True once the upload's file is at the log's path. */
  get published(): boolean {
    return this.#published;
  }

  /**
   * Puts the upload's file in the log's place, replacing the previous log;
   * writes through `file` keep going to it, and its own name stays until
   * `release()`. Does nothing the second time.
   * @throws {Deno.errors.NotFound} and other errors of `Deno.link`/`rename`.
   */
  async publish(): Promise<void> {
    if (this.#published) return;
    // A second name, renamed over the log, replaces it in one step while
    // the upload's own name stays. A crash between the two leaves a name
    // that is not the log's, which the left-upload sweep removes.
    const stage = partPathOf(this.#path);
    await Deno.link(this.#partPath, stage);
    try {
      await Deno.rename(stage, this.#path);
    } catch (error) {
      await Deno.remove(stage).catch(() => {});
      throw error;
    }
    this.#published = true;
  }

  /**
   * Puts the upload's file in the log's place only while the file there
   * is still `expected`, and returns whether it did: a repair of a left
   * log must not replace the log of a newer upload of the build. Checked
   * and done within one turn of the event loop, so that no upload of this
   * process publishes in between.
   * @throws {Deno.errors.NotFound} and other errors of `Deno.linkSync`.
   */
  replaceIfStill(expected: Deno.FileInfo): boolean {
    if (this.#published) return true;
    let current: Deno.FileInfo;
    try {
      current = Deno.statSync(this.#path);
    } catch {
      return false;
    }
    if (current.ino !== expected.ino || current.dev !== expected.dev) {
      return false;
    }
    const stage = partPathOf(this.#path);
    Deno.linkSync(this.#partPath, stage);
    try {
      Deno.renameSync(stage, this.#path);
    } catch (error) {
      Deno.removeSync(stage);
      throw error;
    }
    this.#published = true;
    return true;
  }

  /**
   * Ends the upload on disk: its own name goes, and with it the file unless
   * it was published (a published file stays the build's log).
   */
  async release(): Promise<void> {
    await Deno.remove(this.#partPath).catch(() => {});
  }
}

/** A new name for an upload file of the log at `path`. */
function partPathOf(path: string): string {
  const random = crypto.getRandomValues(new Uint8Array(8));
  return `${path}.${toHex(random)}.part`;
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
