// A keyed worker session whose key the server (the real dispatcher, worker
// keys required) does not accept: the worker hears the refusal
// ("worker-refused") and says so in its own log, naming the server and the
// key it used, rather than ask for work in vain, none the wiser.

import assert from "node:assert/strict";
import { runSession } from "../../../lib/worker/session.ts";
import { eventually, job, startFixture } from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import { sessionOptions } from "./_session_helpers.ts";
import { makeRoot, makeSigningDaemon } from "../../fake-guix/test_env.ts";
import { SETSID } from "../../../demo/farm.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
const WORKER = new URL("../../../worker.ts", import.meta.url).pathname;
const FAKE_GUIX_DIR = new URL("../../fake-guix", import.meta.url).pathname;

Deno.test({
  ...opts,
  name:
    "a session whose worker key the server refuses logs an error naming the server, the key and its file",
  async fn() {
    const f = await startFixture({
      logPort: quietPort(),
      workerKeys: new Map([["farm", "the-secret-the-server-holds"]]),
    });
    const abort = new AbortController();
    const lines: string[] = [];
    const name = "BADKEY01";
    try {
      const [drv] = await f.addJobs([job("guarded", 1)]);
      const running = runSession(
        sessionOptions(f.port, name, lines, {
          authKey: {
            id: "farm",
            secret: "a-secret-the-server-never-saw",
            file: "/etc/lorica/worker.key",
          },
        }),
        abort.signal,
      );
      const refused =
        `error registration refused worker=${name} server=127.0.0.1:${f.port} reason="bad proof for key \\"farm\\"" key=farm key_file=/etc/lorica/worker.key action="no work until a registration is accepted"`;
      await eventually(
        () => lines.includes(refused),
        `refusal logged\n${lines.join("\n")}`,
      );
      assert.ok(
        f.lines.some((l) =>
          l.startsWith("warn worker refused ") && l.includes(`worker=${name}`)
        ),
        f.lines.join("\n"),
      );
      const build = await f.store.getBuildByDerivation(drv);
      assert.equal(build?.worker, null, "nothing handed out");
      abort.abort();
      await running;
    } finally {
      abort.abort();
      await f.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "lorica-worker whose --worker-key-file the server refuses names that file in its log",
  async fn() {
    const root = await makeRoot();
    const keyFile = `${root}/worker.key`;
    await Deno.writeTextFile(keyFile, "farm a-secret-the-server-never-saw\n");
    await Deno.chmod(keyFile, 0o600);
    // Its own store, and a key for its guix publish; the server's store is
    // the same, or the worker would stop before it registers.
    const daemon = await makeSigningDaemon(root, "worker");
    const f = await startFixture({
      logPort: quietPort(),
      storeDir: daemon.storeDir,
      workerKeys: new Map([["farm", "the-secret-the-server-holds"]]),
    });
    const argv = [
      Deno.execPath(),
      "run",
      "--allow-all",
      WORKER,
      `--server=127.0.0.1:${f.port}`,
      "--publish-listen=127.0.0.1",
      "--publish-port=0",
      `--worker-key-file=${keyFile}`,
    ];
    // Its own process group (setsid): a failed test ends the worker and
    // its guix publish together.
    const child = new Deno.Command(SETSID ?? argv[0], {
      args: SETSID ? argv : argv.slice(1),
      env: {
        ...daemon.env,
        PATH: `${FAKE_GUIX_DIR}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
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
      const refused = new RegExp(
        ` error registration refused worker=\\w+ server=127\\.0\\.0\\.1:${f.port} reason="bad proof for key \\\\"farm\\\\"" key=farm key_file=${keyFile} `,
      );
      for (let i = 0; i < 300 && !refused.test(log); i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(log, refused);
      child.kill("SIGTERM");
      await child.status;
      await reading;
    } finally {
      clearTimeout(guard);
      killGroup();
      await child.status;
      await reading.catch(() => {});
      await f.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
