// Starting the demo farm when things go wrong: a web port held by something
// that never answers, and an interrupt while the farm is still starting.
// Nothing may hang, and nothing may be left behind.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { startFarm } from "../../demo/farm.ts";

const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
const DEMO = `${REPO}/demo`;

Deno.test({
  name:
    "startFarm() fails with the server's error when the web port's holder accepts and never answers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) held.push(conn);
    })();
    const root = await Deno.makeTempDir({ prefix: "lorica-demo-start-" });
    try {
      await assert.rejects(
        startFarm({
          root,
          specFile: `${DEMO}/demo-spec.scm`,
          scenarioFile: `${DEMO}/scenario.json`,
          workers: [{ systems: ["x86_64-linux"], sessions: 1 }],
          webPort: listener.addr.port,
          requestPeriod: 1,
        }),
        /Cannot start the server: it exited[\s\S]*Address already in use/,
      );
    } finally {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of held) conn.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the demo interrupted while its farm starts stops it and removes its directory",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "lorica-demo-tmp-" });
    const demo = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}/demo.ts`, "--web-port=0"],
      cwd: REPO,
      env: { TMPDIR: tmp },
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // The server process is being started: its log exists.
      const started = Date.now();
      let serverLog = false;
      while (!serverLog && Date.now() - started < 60_000) {
        for await (const entry of Deno.readDir(tmp)) {
          const log = `${tmp}/${entry.name}/server.log`;
          serverLog ||= await Deno.stat(log).then(() => true, () => false);
        }
        if (!serverLog) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(serverLog, "the farm never started its server");
      demo.kill("SIGINT");
      const status = await demo.status;
      assert.equal(status.code, 130);
      const left = [];
      for await (const entry of Deno.readDir(tmp)) left.push(entry.name);
      assert.deepEqual(left, [], "the farm's directory is removed");
      assert.deepEqual(await processesMentioning(tmp), [], "no process left");
    } finally {
      try {
        demo.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await demo.status;
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

/** Pids of the processes whose command line mentions `text`. */
async function processesMentioning(text: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`)
      .catch(() => "");
    if (cmdline.includes(text)) pids.push(Number(entry.name));
  }
  return pids;
}
