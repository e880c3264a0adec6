// Starting the demo farm when things go wrong: a web port held by something
// that never answers, and an interrupt while the farm is still starting.
// Nothing may hang, and nothing may be left behind.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { SETSID, startFarm } from "../../demo/farm.ts";

const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
const DEMO = `${REPO}/demo`;

Deno.test({
  name:
    "startFarm() fails with the server's error when the web port's holder accepts and never answers",
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
    "startFarm() fails with the server's error when another web server already answers on the web port",
  async fn() {
    // A demo still running on 8080, say: its answers were taken for the
    // new farm's server, which had died on the port in use, and the demo
    // showed the other farm's progress and waited for it.
    const other = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => Response.json([]),
    );
    const root = await Deno.makeTempDir({ prefix: "lorica-demo-start-" });
    let farm: Awaited<ReturnType<typeof startFarm>> | undefined;
    try {
      await assert.rejects(
        (async () => {
          farm = await startFarm({
            root,
            specFile: `${DEMO}/demo-spec.scm`,
            scenarioFile: `${DEMO}/scenario.json`,
            workers: [{ systems: ["x86_64-linux"], sessions: 1 }],
            webPort: other.addr.port,
            requestPeriod: 1,
          });
        })(),
        /Cannot start the server: it exited[\s\S]*Address already in use/,
      );
    } finally {
      await farm?.stop();
      await other.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "startFarm() removes its directory when a guix command before the server dies, as one does under an interrupt to the demo's process group",
  async fn() {
    // Ctrl-C reaches every process of the group: the `guix archive` that
    // makes the keys died, and the farm's directory was left behind.
    const tmp = await Deno.makeTempDir({ prefix: "lorica-demo-tmp-" });
    const tree = await Deno.makeTempDir({ prefix: "lorica-demo-tree-" });
    await Deno.mkdir(`${tree}/tests/fake-guix`, { recursive: true });
    await Deno.writeTextFile(
      `${tree}/tests/fake-guix/guix`,
      "#!/bin/sh\nkill -INT $$\n",
      { mode: 0o755 },
    );
    const tmpdir = Deno.env.get("TMPDIR");
    Deno.env.set("TMPDIR", tmp);
    try {
      await assert.rejects(
        startFarm({
          tree,
          specFile: `${DEMO}/demo-spec.scm`,
          scenarioFile: `${DEMO}/scenario.json`,
          workers: [{ systems: ["x86_64-linux"], sessions: 1 }],
          webPort: 0,
          requestPeriod: 1,
        }),
        /Cannot run "guix archive --generate-key" for server: killed by SIGINT/,
      );
      const left = [];
      for await (const entry of Deno.readDir(tmp)) left.push(entry.name);
      assert.deepEqual(left, [], "the farm's directory is removed");
    } finally {
      if (tmpdir === undefined) Deno.env.delete("TMPDIR");
      else Deno.env.set("TMPDIR", tmpdir);
      await Deno.remove(tmp, { recursive: true });
      await Deno.remove(tree, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the demo interrupted while its farm starts stops it and removes its directory",
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "lorica-demo-tmp-" });
    const demo = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}/demo.ts`, "--web-port=0"],
      cwd: REPO,
      env: { TMPDIR: tmp },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Said when the demo does not end as it should.
    const stderr = new Response(demo.stderr).text();
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
      assert.equal(status.code, 130, await stderr);
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
      await stderr;
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test({
  name:
    `the demo interrupted by Ctrl-C (SIGINT to its process group) while its guix commands run exits 130 without an error and leaves nothing${
      SETSID ? "" : " (skipped: no setsid)"
    }`,
  ignore: SETSID === undefined,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "lorica-demo-tmp-" });
    await using demo = demoJob(tmp, { stdout: "null", stderr: "piped" });
    const stderr = new Response(demo.stderr).text();
    // The server's directory is made just before its key, the first guix
    // command: the interrupt reaches that command too.
    const started = Date.now();
    let keysBeingMade = false;
    while (!keysBeingMade && Date.now() - started < 60_000) {
      for await (const entry of Deno.readDir(tmp)) {
        const etc = `${tmp}/${entry.name}/server/etc`;
        keysBeingMade ||= await Deno.stat(etc).then(() => true, () => false);
      }
      if (!keysBeingMade) await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(keysBeingMade, "the farm never began to make its keys");
    Deno.kill(-demo.pid, "SIGINT");
    const status = await demo.status;
    const said = await stderr;
    assert.equal(status.code, 130, said);
    assert.doesNotMatch(said, /error/, "an interrupt is no error");
    await assertFarmGone(tmp);
  },
});

Deno.test({
  name:
    `the demo whose terminal closes (SIGHUP to its process group) stops its farm and removes its directory${
      SETSID ? "" : " (skipped: no setsid)"
    }`,
  ignore: SETSID === undefined,
  async fn() {
    const tmp = await Deno.makeTempDir({ prefix: "lorica-demo-tmp-" });
    await using demo = demoJob(tmp, { stdout: "piped", stderr: "null" });
    // Hang up once the farm serves its pages, as a user closing the
    // terminal would; the output is read to its end meanwhile.
    const served = Promise.withResolvers<void>();
    const reading = (async () => {
      let text = "";
      for await (
        const chunk of demo.stdout.pipeThrough(new TextDecoderStream())
      ) {
        text += chunk;
        if (text.includes("Web interface: ")) served.resolve();
      }
      served.reject(new Error(`the demo stopped early:\n${text}`));
    })();
    const timer = setTimeout(
      () => served.reject(new Error("the farm did not start in 120 s")),
      120_000,
    );
    await served.promise.finally(() => clearTimeout(timer));
    Deno.kill(-demo.pid, "SIGHUP");
    const status = await demo.status;
    await reading;
    assert.equal(status.code, 130);
    await assertFarmGone(tmp);
  },
});

/**
 * The demo started in a process group of its own, as a shell gives a job
 * in a terminal, its temporary files in `tmp`; disposed of by a kill of
 * whatever it left running, by pid, and the removal of `tmp`.
 */
function demoJob(
  tmp: string,
  output: { stdout: "piped" | "null"; stderr: "piped" | "null" },
): Deno.ChildProcess & AsyncDisposable {
  const demo = new Deno.Command(SETSID!, {
    args: [
      Deno.execPath(),
      "run",
      "--allow-all",
      `${REPO}/demo.ts`,
      "--web-port=0",
    ],
    cwd: REPO,
    env: { TMPDIR: tmp },
    stdin: "null",
    ...output,
  }).spawn();
  return Object.assign(demo, {
    async [Symbol.asyncDispose]() {
      try {
        demo.kill("SIGKILL");
      } catch {
        // Exited already.
      }
      await demo.status;
      // Whatever a failed stop left running, by pid.
      for (const pid of await processesMentioning(tmp)) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Gone meanwhile.
        }
      }
      await Deno.remove(tmp, { recursive: true });
    },
  });
}

/** Asserts that the farm of the demo run in `tmp` left nothing behind. */
async function assertFarmGone(tmp: string): Promise<void> {
  const left = [];
  for await (const entry of Deno.readDir(tmp)) left.push(entry.name);
  assert.deepEqual(left, [], "the farm's directory is removed");
  assert.deepEqual(await processesMentioning(tmp), [], "no process left");
}

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

Deno.test({
  name:
    "startFarm() workers ask for far less free disk than the 5 GiB default, so that the demo runs where TMPDIR has less",
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "lorica-demo-disk-" });
    const farm = await startFarm({
      root,
      specFile: `${DEMO}/demo-spec.scm`,
      scenarioFile: `${DEMO}/scenario.json`,
      workers: [{ systems: ["x86_64-linux"], sessions: 1 }],
      webPort: 0,
      requestPeriod: 1,
    });
    try {
      const pid = farm.pid("worker1")!;
      // The worker's own command line, whether setsid(1) ran it or not,
      // once it has one: read in the middle of the exec, it is empty.
      let argv: string[] = [];
      const isWorker = () => argv.some((arg) => arg.endsWith("/worker.ts"));
      for (let i = 0; i < 200 && !isWorker(); i++) {
        if (i > 0) await new Promise((resolve) => setTimeout(resolve, 25));
        argv = Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0");
      }
      const given = argv.find((arg) => arg.startsWith("--minimum-disk-space="));
      assert.ok(given !== undefined, `no --minimum-disk-space in ${argv}`);
      const gib = Number(given.split("=")[1]);
      assert.ok(gib >= 0 && gib <= 0.5, given);
    } finally {
      await farm.stop();
      await Deno.remove(root, { recursive: true });
    }
  },
});
