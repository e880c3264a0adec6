// The nonces the server gave one worker connection in `lorica-welcome`,
// which worker proofs sign (worker_auth.ts), and which proofs they accept.

import type { WorkerAuthProof } from "../protocol/messages.ts";
import { makeNonce, verifyAuthProof } from "../protocol/worker_auth.ts";

/**
 * Unused nonces kept for one connection, the oldest forgotten first: a
 * worker says hello once a registration and uses the nonce at once, so
 * more than one waits only when its hellos crossed; a peer saying hello in
 * a loop makes the list no longer.
 */
const MAX_UNUSED = 8;

/**
 * One connection's nonces. A proof is accepted for any nonce given on this
 * connection and not used yet, not only the latest: a worker's hellos can
 * cross on one connection (a registration whose messages waited for a new
 * connection, then started over at that connection's probe; a registration
 * again racing a reconnection; an older worker), and its proof may then
 * sign the first welcome while the server has sent a second. Checking the
 * latest alone refused a worker holding a valid key for as long as its
 * connection lasted.
 *
 * What the nonce is for stays: a proof seen on the wire is worth nothing on
 * another connection, since each connection's nonces are its own, random,
 * and forgotten with it. And each nonce is good for one proof, spent once
 * used, so a proof grants one registration, not any number of them. The
 * one exception proves nothing new: the proof that last made this
 * connection speak for a name, said again for that name (a stopping
 * worker repeats its registration to hand its build back; a turn rolled
 * back handles its `worker-ready` again).
 */
export class ConnectionNonces {
  readonly #unused: string[] = [];
  /** The nonce and name of the last proof accepted here. */
  #proven: { nonce: string; name: string } | undefined;

  /** A fresh nonce, for a `lorica-welcome` on this connection. */
  issue(): string {
    const nonce = makeNonce();
    this.#unused.push(nonce);
    if (this.#unused.length > MAX_UNUSED) this.#unused.shift();
    return nonce;
  }

  /**
   * Whether `proof` was made with one of `keys` for `name` and a nonce this
   * connection accepts (see the class); the nonce it used is then spent.
   */
  async accept(
    keys: Map<string, string>,
    name: string,
    proof: WorkerAuthProof | undefined,
  ): Promise<boolean> {
    if (proof === undefined) return false;
    const proven = this.#proven;
    if (
      proven?.name === name &&
      await verifyAuthProof(keys, proven.nonce, name, proof)
    ) return true;
    for (const nonce of [...this.#unused]) {
      if (!await verifyAuthProof(keys, nonce, name, proof)) continue;
      this.#unused.splice(this.#unused.indexOf(nonce), 1);
      this.#proven = { nonce, name };
      return true;
    }
    return false;
  }
}
