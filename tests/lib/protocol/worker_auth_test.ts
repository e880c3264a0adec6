import assert from "node:assert/strict";
import {
  makeAuthProof,
  makeNonce,
  parseWorkerKeys,
  verifyAuthProof,
  WorkerKeyError,
} from "../../../lib/protocol/worker_auth.ts";

const SECRET = "a-secret-of-enough-length";

Deno.test("parseWorkerKeys() reads ids and secrets, or one bare secret", () => {
  assert.deepEqual(
    parseWorkerKeys(`# farm keys\nfarm ${SECRET}\n\nlab ${SECRET}-2\n`),
    new Map([["farm", SECRET], ["lab", `${SECRET}-2`]]),
  );
  assert.deepEqual(
    parseWorkerKeys(`${SECRET}\n`),
    new Map([["default", SECRET]]),
  );
});

Deno.test("parseWorkerKeys() rejects short secrets, duplicates and empty files", () => {
  for (
    const text of ["short", `a ${SECRET}\na ${SECRET}`, "# none\n", `a b c`]
  ) {
    assert.throws(() => parseWorkerKeys(text), WorkerKeyError, text);
  }
  // The secret never appears in the message.
  assert.throws(
    () => parseWorkerKeys("id tiny"),
    (e: Error) => !e.message.includes("tiny"),
  );
});

Deno.test("verifyAuthProof() accepts only the right key, nonce and name", async () => {
  const keys = new Map([["farm", SECRET]]);
  const nonce = makeNonce();
  const proof = await makeAuthProof("farm", SECRET, nonce, "W1");
  assert.match(proof.mac, /^[0-9a-f]{64}$/);
  assert.equal(await verifyAuthProof(keys, nonce, "W1", proof), true);
  assert.equal(await verifyAuthProof(keys, makeNonce(), "W1", proof), false);
  assert.equal(await verifyAuthProof(keys, nonce, "W2", proof), false);
  assert.equal(await verifyAuthProof(keys, nonce, "W1", undefined), false);
  assert.equal(
    await verifyAuthProof(keys, nonce, "W1", { key: "other", mac: proof.mac }),
    false,
  );
  assert.equal(
    await verifyAuthProof(keys, nonce, "W1", { key: "farm", mac: "zz" }),
    false,
  );
});
