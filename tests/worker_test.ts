// lorica-worker as a process: how it stops on SIGTERM.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { quietPort } from "./_ports.ts";
import { makeRoot, makeSigningDaemon } from "./fake-guix/test_env.ts";
import { SETSID } from "../demo/farm.ts";

const REPO = fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "");
/** Whether process `pid` still exists. */
function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "lorica-worker whose server is unreachable stops on the first SIGTERM, at once, and logs its stop once",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const root = await makeRoot();
    const daemon = await makeSigningDaemon(root, "worker");
    const argv = [
      Deno.execPath(),
      "run",
      "--allow-all",
      `${REPO}/worker.ts`,
      // Nothing listens there, and the kernel hands the port to no one.
      `--server=127.0.0.1:${quietPort()}`,
      "--publish-port=0",
      "--publish-listen=127.0.0.1",
    ];
    // Its own process group (setsid), so that a failed test can end the
    // worker and its `guix publish` together.
    const child = new Deno.Command(SETSID ?? argv[0], {
      args: SETSID ? argv : argv.slice(1),
      cwd: REPO,
      env: {
        ...daemon.env,
        PATH: `${REPO}/tests/fake-guix:${Deno.env.get("PATH") ?? "/usr/bin"}`,
        LORICA_LOG: "info",
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let log = "";
    const reading = (async () => {
      for await (
        const text of child.stderr.pipeThrough(new TextDecoderStream())
      ) log += text;
    })();
    const killGroup = () => {
      try {
        if (SETSID) Deno.kill(-child.pid, "SIGKILL");
        else child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    };
    const guard = setTimeout(killGroup, 60_000);
    try {
      for (let i = 0; i < 300 && !/info worker started /.test(log); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(log, /info worker started /);
      const publishPid = Number(/process=publish pid=(\d+)/.exec(log)?.[1]);
      assert.ok(publishPid > 0, log);
      // Let the sessions settle into waiting for the server's first message.
      await new Promise((resolve) => setTimeout(resolve, 1000));

      const before = Date.now();
      child.kill("SIGTERM");
      const late = setTimeout(killGroup, 15_000);
      const status = await child.status;
      clearTimeout(late);
      const took = Date.now() - before;
      await reading;

      assert.ok(took < 15_000, `stopped only after ${took} ms:\n${log}`);
      assert.equal(status.code, 0, log);
      const lines = log.split("\n");
      assert.equal(
        lines.filter((l) => / info worker draining timeout=240$/.test(l))
          .length,
        1,
        log,
      );
      assert.equal(
        lines.filter((l) => / info worker stopped$/.test(l)).length,
        1,
        log,
      );
      assert.equal(alive(publishPid), false, "its guix publish is gone");
    } finally {
      clearTimeout(guard);
      killGroup();
      await child.status;
      await reading.catch(() => {});
      await Deno.remove(root, { recursive: true });
    }
  },
});
