import assert from "node:assert/strict";
import { readTail, spawnProcess } from "../../lib/process.ts";

Deno.test("spawnProcess() runs a command and reports its exit code", async () => {
  const child = spawnProcess(["sh", "-c", "echo out; echo err >&2; exit 3"]);
  const [out, err, status] = await Promise.all([
    readTail(child.stdout, 100),
    readTail(child.stderr, 100),
    child.status,
  ]);
  assert.equal(new TextDecoder().decode(out), "out\n");
  assert.equal(new TextDecoder().decode(err), "err\n");
  assert.equal(status.code, 3);
});

Deno.test("readTail() keeps only the last bytes and sees every chunk", async () => {
  const chunks = ["aaaa", "bbbb", "cccc"].map((s) =>
    new TextEncoder().encode(s)
  );
  let seen = 0;
  const tail = await readTail(ReadableStream.from(chunks), 6, (c) => {
    seen += c.length;
  });
  assert.equal(new TextDecoder().decode(tail), "bbcccc");
  assert.equal(seen, 12);
});
