// NAR (Nix ARchive) serialisation of files on disk: streaming dump and hash.

import { createHash } from "node:crypto";
import {
  compareBytes,
  formatNarHash,
  NAR_MAGIC,
  type NarDigest,
  narPadding,
} from "./nar_format.ts";

const CHUNK_SIZE = 64 * 1024;
const encoder = new TextEncoder();

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

async function* narChunks(path: string): AsyncGenerator<Uint8Array> {
  const out = new TokenBuffer();
  out.string(NAR_MAGIC);
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
    const pad = narPadding(length);
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
