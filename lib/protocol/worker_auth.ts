// Worker authentication, a Lorica extension: the worker proves it holds a key
// the server knows by an HMAC over the server's per-connection nonce and its
// name. Cuirass has nothing of the kind (cuirass.md §10 item 2).

import { toHex } from "../hex.ts";
import type { WorkerAuthProof } from "./messages.ts";

/** Key id used when a key file holds a bare secret. */
export const DEFAULT_KEY_ID = "default";

const CONTEXT = "lorica-worker-auth/1";
const encoder = new TextEncoder();

/** A key file that cannot be used. */
export class WorkerKeyError extends Error {
  constructor(message: string, readonly line: number) {
    super(message);
    this.name = "WorkerKeyError";
  }
}

/**
 * Reads a key file: one key a line, `KEY-ID SECRET`, or a single bare
 * `SECRET` (key id "default"); blank lines and `#` comments are skipped.
 * @throws {WorkerKeyError} on a duplicate id, a short secret or no key.
 */
export function parseWorkerKeys(text: string): Map<string, string> {
  const keys = new Map<string, string>();
  const lines = text.split("\n");
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const parts = line.split(/\s+/);
    if (parts.length > 2) {
      throw new WorkerKeyError(
        `Cannot read worker key on line ${
          index + 1
        }: expected "KEY-ID SECRET", found ${parts.length} words`,
        index + 1,
      );
    }
    const [id, secret] = parts.length === 2
      ? parts
      : [DEFAULT_KEY_ID, parts[0]];
    if (secret.length < 16) {
      throw new WorkerKeyError(
        `Cannot read worker key ${JSON.stringify(id)} on line ${
          index + 1
        }: the secret has fewer than 16 characters`,
        index + 1,
      );
    }
    if (keys.has(id)) {
      throw new WorkerKeyError(
        `Cannot read worker key ${JSON.stringify(id)} on line ${
          index + 1
        }: this key id is already defined`,
        index + 1,
      );
    }
    keys.set(id, secret);
  });
  if (keys.size === 0) {
    throw new WorkerKeyError("Cannot read worker keys: the file has none", 0);
  }
  return keys;
}

/** A fresh random nonce, hex, for one connection. */
export function makeNonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/** The proof a worker named `name` sends for `nonce` with key `keyId`. */
export async function makeAuthProof(
  keyId: string,
  secret: string,
  nonce: string,
  name: string,
): Promise<WorkerAuthProof> {
  return { key: keyId, mac: toHex(await hmac(secret, nonce, name)) };
}

/** Whether `proof` was made with one of `keys` for this nonce and name. */
export async function verifyAuthProof(
  keys: Map<string, string>,
  nonce: string,
  name: string,
  proof: WorkerAuthProof | undefined,
): Promise<boolean> {
  if (proof === undefined) return false;
  const secret = keys.get(proof.key);
  if (secret === undefined || !/^[0-9a-f]{64}$/.test(proof.mac)) return false;
  const expected = await hmac(secret, nonce, name);
  const given = fromHex(proof.mac);
  let difference = 0;
  for (let i = 0; i < expected.length; i++) {
    difference |= expected[i] ^ given[i];
  }
  return difference === 0;
}

async function hmac(
  secret: string,
  nonce: string,
  name: string,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const data = encoder.encode(`${CONTEXT}\n${nonce}\n${name}`);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
}

function fromHex(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) {
    bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}
