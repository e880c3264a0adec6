import assert from "node:assert/strict";
import { routingKey, WorkerLinks } from "../../../lib/server/worker_links.ts";

Deno.test("routingKey() keeps every byte, 0x00 and 0xFF included", () => {
  assert.equal(routingKey(new Uint8Array([0, 255, 16, 1])), "00ff1001");
  assert.notEqual(
    routingKey(new Uint8Array([0])),
    routingKey(new Uint8Array([0, 0])),
  );
});

Deno.test("WorkerLinks copies routing ids and maps names to their request connection", () => {
  const links = new WorkerLinks();
  const id = new Uint8Array([0, 1, 255]);
  links.learn(id, "W1", true);
  id[0] = 9; // The caller's buffer is reused: the link must not change.
  const link = links.connectionOf("W1");
  assert.deepEqual(link?.routingId, new Uint8Array([0, 1, 255]));
  assert.equal(links.nameOf(new Uint8Array([0, 1, 255])), "W1");
  // A ping connection with the same name does not take over cancels.
  links.learn(new Uint8Array([7]), "W1");
  assert.equal(links.connectionOf("W1"), link);
  links.forget(new Uint8Array([0, 1, 255]));
  assert.equal(links.connectionOf("W1"), undefined);
  assert.equal(links.nameOf(new Uint8Array([7])), "W1");
});

Deno.test("WorkerLinks stays bounded under a flood of connections", () => {
  const links = new WorkerLinks();
  for (let i = 0; i < 12_000; i++) {
    links.learn(new Uint8Array(new Uint32Array([i]).buffer), `n${i}`, true);
  }
  assert.equal(links.size, 10_000);
  assert.equal(links.connectionOf("n0"), undefined, "oldest forgotten");
  assert.ok(links.connectionOf("n11999"));
});
