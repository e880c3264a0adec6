// The bench's dispatch server process, driven as bench/main.ts drives it.
// Not timed: what is checked is that its commands still answer.

import assert from "node:assert/strict";
import { startDispatchProcess } from "../../bench/dispatch_process.ts";

Deno.test("the bench's dispatch server process tells the CPU time it has used, which grows as it works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-dispatch-process-" });
  const server = await startDispatchProcess({
    database: `${dir}/dispatch.sqlite`,
  });
  try {
    const before = Number((await server.command("cpu")).cpuMs);
    assert.ok(before > 0, `cpuMs ${before}`);
    // Some work of its own: an evaluation of 2,000 jobs made in memory.
    assert.deepEqual(await server.command("jobs 2000 1"), { jobs: 2000 });
    const after = Number((await server.command("cpu")).cpuMs);
    assert.ok(after > before, `cpuMs ${before}, then ${after}`);
  } finally {
    assert.ok(await server.stop() > 0);
    await Deno.remove(dir, { recursive: true });
  }
});
