// NAR (Nix ARchive) restoring: unpacks an untrusted byte stream onto disk.

import { createHash } from "node:crypto";
import {
  compareBytes,
  formatNarHash,
  NAR_MAGIC,
  NAR_MAX_DEPTH,
  NAR_MAX_NAME_BYTES,
  NAR_MAX_PATH_BYTES,
  NAR_MAX_STRING_LENGTH,
  type NarDigest,
  NarFormatError,
  narPadding,
} from "./nar_format.ts";

/** Options of `restoreNar`. */
export interface RestoreNarOptions {
  /** Largest NAR accepted, in bytes; default unlimited. */
  maxBytes?: number;
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/**
 * Unpacks a NAR into `destination`, which must not exist yet; on failure
 * whatever was created is removed again.
 * @throws {NarFormatError} for malformed or unsafe input (bad names, entries
 * out of order or repeated, bad padding, trailing bytes, too large, names or
 * paths longer than the file system takes).
 */
export async function restoreNar(
  source: ReadableStream<Uint8Array>,
  destination: string,
  options: RestoreNarOptions = {},
): Promise<NarDigest> {
  const { maxBytes = Number.MAX_SAFE_INTEGER } = options;
  const input = new NarReader(source.getReader(), maxBytes);
  let created = false;
  try {
    await input.expect(NAR_MAGIC);
    await restoreNode(input, destination, 0, () => created = true);
    await input.end();
  } catch (error) {
    await input.cancel();
    if (created) {
      await Deno.remove(destination, { recursive: true }).catch(() => {});
    }
    throw error;
  }
  return { narHash: formatNarHash(input.hash), narSize: input.offset };
}

async function restoreNode(
  input: NarReader,
  path: string,
  depth: number,
  onCreate: () => void,
): Promise<void> {
  if (depth > NAR_MAX_DEPTH) {
    input.fail(`directories nested deeper than ${NAR_MAX_DEPTH}`);
  }
  // Checked here so that an over-long path is a format error, not an OS one.
  const pathBytes = encoder.encode(path).length;
  if (pathBytes > NAR_MAX_PATH_BYTES) {
    input.fail(
      `path of ${pathBytes} bytes exceeds ${NAR_MAX_PATH_BYTES}: ${
        quote(path)
      }`,
    );
  }
  await input.expect("(");
  await input.expect("type");
  const type = await input.token();
  if (type === "regular") {
    let token = await input.token();
    let executable = false;
    if (token === "executable") {
      await input.expect("");
      executable = true;
      token = await input.token();
    }
    if (token !== "contents") {
      input.fail(`expected "contents", found ${quote(token)}`);
    }
    const size = await input.u64();
    using file = await Deno.open(path, { write: true, createNew: true });
    onCreate();
    await Deno.chmod(path, executable ? 0o755 : 0o644);
    await input.copyTo(file, size);
    await input.padding(size);
  } else if (type === "symlink") {
    await input.expect("target");
    const target = await input.text();
    if (encoder.encode(target).length > NAR_MAX_PATH_BYTES) {
      input.fail(`symlink target longer than ${NAR_MAX_PATH_BYTES} bytes`);
    }
    if (target === "" || target.includes("\0")) {
      input.fail(`invalid symlink target ${quote(target)}`);
    }
    await Deno.symlink(target, path);
    onCreate();
  } else if (type === "directory") {
    await Deno.mkdir(path);
    onCreate();
    let previous: Uint8Array | null = null;
    for (;;) {
      const token = await input.token();
      if (token === ")") return;
      if (token !== "entry") {
        input.fail(`expected "entry" or ")", found ${quote(token)}`);
      }
      await input.expect("(");
      await input.expect("name");
      const nameBytes = await input.bytes(NAR_MAX_STRING_LENGTH);
      const name = checkName(input, nameBytes);
      if (previous !== null && compareBytes(previous, nameBytes) >= 0) {
        input.fail(
          `entry ${quote(name)} is not sorted after the one before it`,
        );
      }
      previous = nameBytes;
      await input.expect("node");
      await restoreNode(input, `${path}/${name}`, depth + 1, () => {});
      await input.expect(")");
    }
  } else {
    input.fail(`unknown node type ${quote(type)}`);
  }
  await input.expect(")");
}

function checkName(input: NarReader, bytes: Uint8Array): string {
  if (bytes.length > NAR_MAX_NAME_BYTES) {
    input.fail(
      `entry name of ${bytes.length} bytes exceeds ${NAR_MAX_NAME_BYTES}`,
    );
  }
  let name = "";
  try {
    name = strictDecoder.decode(bytes);
  } catch {
    input.fail("entry name is not valid UTF-8");
  }
  if (
    name === "" || name === "." || name === ".." || name.includes("/") ||
    name.includes("\0")
  ) {
    input.fail(`unsafe entry name ${quote(name)}`);
  }
  return name;
}

/** Pulls exact byte counts from a stream, hashing and counting as it goes. */
class NarReader {
  readonly hash = createHash("sha256");
  offset = 0;
  #chunk: Uint8Array = new Uint8Array(0);
  #at = 0;
  #received = 0;

  constructor(
    readonly reader: ReadableStreamDefaultReader<Uint8Array>,
    readonly maxBytes: number,
  ) {}

  async u64(): Promise<number> {
    const bytes = await this.read(8);
    const value = new DataView(bytes.buffer, bytes.byteOffset, 8)
      .getBigUint64(0, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      this.fail(`length ${value} is too large`, this.offset - 8);
    }
    return Number(value);
  }

  async bytes(maxLength: number): Promise<Uint8Array> {
    const length = await this.u64();
    if (length > maxLength) {
      this.fail(
        `string of ${length} bytes exceeds ${maxLength}`,
        this.offset - 8,
      );
    }
    const value = await this.read(length);
    await this.padding(length);
    return value;
  }

  async text(): Promise<string> {
    const start = this.offset;
    const bytes = await this.bytes(NAR_MAX_STRING_LENGTH);
    try {
      return strictDecoder.decode(bytes);
    } catch {
      this.fail("string is not valid UTF-8", start);
    }
  }

  /** A framing keyword; anything long cannot be one. */
  async token(): Promise<string> {
    const start = this.offset;
    const length = await this.u64();
    if (length > 16) {
      this.fail(`expected a keyword, found a string of ${length} bytes`, start);
    }
    const value = new TextDecoder().decode(await this.read(length));
    await this.padding(length);
    return value;
  }

  async expect(token: string): Promise<void> {
    const start = this.offset;
    const found = await this.token();
    if (found !== token) {
      this.fail(`expected ${quote(token)}, found ${quote(found)}`, start);
    }
  }

  async padding(length: number): Promise<void> {
    const pad = narPadding(length);
    if (pad === 0) return;
    const start = this.offset;
    if ((await this.read(pad)).some((byte) => byte !== 0)) {
      this.fail("non-zero padding", start);
    }
  }

  async copyTo(file: Deno.FsFile, length: number): Promise<void> {
    let remaining = length;
    while (remaining > 0) {
      if (this.#at === this.#chunk.length) await this.#pull();
      const take = Math.min(remaining, this.#chunk.length - this.#at);
      const piece = this.#chunk.subarray(this.#at, this.#at + take);
      this.#at += take;
      this.offset += take;
      remaining -= take;
      let written = 0;
      while (written < piece.length) {
        written += await file.write(piece.subarray(written));
      }
    }
  }

  async read(length: number): Promise<Uint8Array> {
    const value = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      if (this.#at === this.#chunk.length) await this.#pull();
      const take = Math.min(length - filled, this.#chunk.length - this.#at);
      value.set(this.#chunk.subarray(this.#at, this.#at + take), filled);
      this.#at += take;
      filled += take;
    }
    this.offset += length;
    return value;
  }

  async end(): Promise<void> {
    while (this.#at === this.#chunk.length) {
      const { done, value } = await this.reader.read();
      if (done) return;
      this.#accept(value);
    }
    this.fail("trailing bytes after the archive");
  }

  async cancel(): Promise<void> {
    try {
      await this.reader.cancel();
    } catch {
      // The stream already failed; nothing more to release.
    }
  }

  fail(problem: string, offset = this.offset): never {
    throw new NarFormatError(
      `Cannot restore NAR: ${problem} at offset ${offset}`,
      offset,
    );
  }

  async #pull(): Promise<void> {
    for (;;) {
      const { done, value } = await this.reader.read();
      if (done) this.fail("unexpected end of archive");
      if (value.length > 0) return this.#accept(value);
    }
  }

  #accept(chunk: Uint8Array): void {
    this.#received += chunk.length;
    if (this.#received > this.maxBytes) {
      this.fail(`archive exceeds the limit of ${this.maxBytes} bytes`);
    }
    this.hash.update(chunk);
    this.#chunk = chunk;
    this.#at = 0;
  }
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
}
