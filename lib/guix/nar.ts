// NAR (Nix ARchive) serialisation: streaming dump, hash and restore.

import { createHash, type Hash } from "node:crypto";
import { encodeNixBase32 } from "./base32.ts";

/** Options of `restoreNar`. */
export interface RestoreNarOptions {
  /** Largest NAR accepted, in bytes; default unlimited. */
  maxBytes?: number;
}

/** NAR hash and size, as a narinfo or the daemon records them. */
export interface NarDigest {
  /** `sha256:<nix-base32>`. */
  narHash: string;
  narSize: number;
}

/** Thrown for bytes that are not a well-formed, safe NAR. */
export class NarFormatError extends SyntaxError {
  constructor(
    message: string,
    readonly offset: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "NarFormatError";
  }
}

const MAGIC = "nix-archive-1";
const CHUNK_SIZE = 64 * 1024;
const MAX_TOKEN_LENGTH = 4096;
const MAX_DEPTH = 512;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Streams the NAR serialisation of the file, directory or symlink at `path`,
 * reading one file chunk at a time.
 */
export function dumpNar(path: string): ReadableStream<Uint8Array> {
  return ReadableStream.from(narChunks(path));
}

/** NarHash and NarSize of the item at `path`, streaming its NAR. */
export async function narHashOfPath(path: string): Promise<NarDigest> {
  const hash = createHash("sha256");
  let narSize = 0;
  for await (const chunk of dumpNar(path)) {
    hash.update(chunk);
    narSize += chunk.length;
  }
  return { narHash: formatNarHash(hash), narSize };
}

/**
 * Unpacks a NAR into `destination`, which must not exist yet; on failure
 * whatever was created is removed again.
 * @throws {NarFormatError} for malformed or unsafe input (bad names, entries
 * out of order or repeated, bad padding, trailing bytes, too large).
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
    await input.expect(MAGIC);
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

function formatNarHash(hash: Hash): string {
  return "sha256:" + encodeNixBase32(new Uint8Array(hash.digest()));
}

// ---------------------------------------------------------------- dumping

async function* narChunks(path: string): AsyncGenerator<Uint8Array> {
  const out = new TokenBuffer();
  out.string(MAGIC);
  yield* dumpNode(path, out);
  yield out.take();
}

async function* dumpNode(
  path: string,
  out: TokenBuffer,
): AsyncGenerator<Uint8Array> {
  const info = await Deno.lstat(path);
  out.string("(");
  out.string("type");
  if (info.isSymlink) {
    out.string("symlink");
    out.string("target");
    out.string(await Deno.readLink(path));
  } else if (info.isFile) {
    out.string("regular");
    if ((info.mode ?? 0) & 0o100) {
      out.string("executable");
      out.string("");
    }
    out.string("contents");
    out.u64(info.size);
    yield out.take();
    yield* fileChunks(path, info.size);
    out.padding(info.size);
  } else if (info.isDirectory) {
    out.string("directory");
    const names: Uint8Array[] = [];
    for await (const entry of Deno.readDir(path)) {
      names.push(encoder.encode(entry.name));
    }
    names.sort(compareBytes);
    for (const name of names) {
      out.string("entry");
      out.string("(");
      out.string("name");
      out.bytes(name);
      out.string("node");
      yield* dumpNode(`${path}/${new TextDecoder().decode(name)}`, out);
      out.string(")");
      if (out.size >= CHUNK_SIZE) yield out.take();
    }
  } else {
    throw new TypeError(
      `Cannot dump ${JSON.stringify(path)} as a NAR: unsupported file type`,
    );
  }
  out.string(")");
}

async function* fileChunks(
  path: string,
  size: number,
): AsyncGenerator<Uint8Array> {
  using file = await Deno.open(path, { read: true });
  let remaining = size;
  while (remaining > 0) {
    const chunk = new Uint8Array(Math.min(CHUNK_SIZE, remaining));
    const count = await file.read(chunk);
    if (count === null) break;
    remaining -= count;
    yield count === chunk.length ? chunk : chunk.subarray(0, count);
  }
  // The length is already written, so a file that changed size while we
  // read it cannot be serialised correctly.
  if (remaining !== 0 || (await file.read(new Uint8Array(1))) !== null) {
    throw new Error(
      `Cannot dump ${
        JSON.stringify(path)
      } as a NAR: file changed size while being read`,
    );
  }
}

/** Collects the small framing tokens between file contents. */
class TokenBuffer {
  #parts: Uint8Array[] = [];
  size = 0;

  string(value: string): void {
    this.bytes(encoder.encode(value));
  }

  bytes(value: Uint8Array): void {
    this.u64(value.length);
    this.#push(value);
    this.padding(value.length);
  }

  u64(value: number): void {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(value), true);
    this.#push(bytes);
  }

  padding(length: number): void {
    const pad = (8 - length % 8) % 8;
    if (pad > 0) this.#push(new Uint8Array(pad));
  }

  take(): Uint8Array {
    const joined = new Uint8Array(this.size);
    let at = 0;
    for (const part of this.#parts) {
      joined.set(part, at);
      at += part.length;
    }
    this.#parts = [];
    this.size = 0;
    return joined;
  }

  #push(bytes: Uint8Array): void {
    this.#parts.push(bytes);
    this.size += bytes.length;
  }
}

// -------------------------------------------------------------- restoring

async function restoreNode(
  input: NarReader,
  path: string,
  depth: number,
  onCreate: () => void,
): Promise<void> {
  if (depth > MAX_DEPTH) {
    input.fail(`directories nested deeper than ${MAX_DEPTH}`);
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
      const nameBytes = await input.bytes(MAX_TOKEN_LENGTH);
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
    const bytes = await this.bytes(MAX_TOKEN_LENGTH);
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
    const pad = (8 - length % 8) % 8;
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

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
}
