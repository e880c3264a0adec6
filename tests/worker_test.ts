// lorica-worker as a process: how it stops on SIGTERM.

import assert from "node:assert/strict";
import { quietPort } from "./_ports.ts";
import { makeRoot, makeSigningDaemon } from "./fake-guix/test_env.ts";
import { processExists as alive } from "./_processes.ts";
import { spawnWorkerProcess } from "./_worker_process.ts";

Deno.test({
  name:
    "lorica-worker whose server is unreachable stops on the first SIGTERM, at once, and logs its stop once",
  async fn() {
    const root = await makeRoot();
    const daemon = await makeSigningDaemon(root, "worker");
    const worker = spawnWorkerProcess([
      // Nothing listens there, and the kernel hands the port to no one.
      `--server=127.0.0.1:${quietPort()}`,
      "--publish-port=0",
      "--publish-listen=127.0.0.1",
    ], daemon.env);
    const { child } = worker;
    try {
      const log = worker.log;
      assert.ok(await worker.logged(/info worker started /), log());
      const publishPid = Number(/process=publish pid=(\d+)/.exec(log())?.[1]);
      assert.ok(publishPid > 0, log());
      // Let the sessions settle into waiting for the server's first message.
      await new Promise((resolve) => setTimeout(resolve, 1000));

      const before = Date.now();
      child.kill("SIGTERM");
      const late = setTimeout(worker.killGroup, 15_000);
      const status = await child.status;
      clearTimeout(late);
      const took = Date.now() - before;
      await worker.reading;

      assert.ok(took < 15_000, `stopped only after ${took} ms:\n${log()}`);
      assert.equal(status.code, 0, log());
      const lines = log().split("\n");
      assert.equal(
        lines.filter((l) => / info worker draining timeout=240$/.test(l))
          .length,
        1,
        log(),
      );
      assert.equal(
        lines.filter((l) => / info worker stopped$/.test(l)).length,
        1,
        log(),
      );
      assert.equal(alive(publishPid), false, "its guix publish is gone");
    } finally {
      await worker.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
