// lorica-server and lorica-worker (run from source, the fake guix on PATH)
// whose guix publish cannot start, or dies: they exit 1 saying why, so that
// systemd restarts them, instead of running on without it.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { quietPort } from "../_ports.ts";
import { makeDaemon, makeRoot } from "../fake-guix/test_env.ts";
import { heldPort } from "../lib/server/_publish_fixture.ts";

const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
const FAKE_GUIX_DIR = `${REPO}/tests/fake-guix`;

/**
 * A root with a fake daemon (and its key); the environment to run under.
 * The root is removed when the `await using` scope that holds it ends.
 */
async function setUp(): Promise<
  { root: string; env: Record<string, string> } & AsyncDisposable
> {
  const root = await makeRoot();
  const remove = () => Deno.remove(root, { recursive: true });
  try {
    const daemon = await makeDaemon(root, "host");
    const env = {
      ...daemon.env,
      PATH: `${FAKE_GUIX_DIR}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
      LORICA_LOG: "info",
    };
    const generated = await new Deno.Command(`${FAKE_GUIX_DIR}/guix`, {
      args: ["archive", "--generate-key"],
      env,
      stdout: "null",
      stderr: "null",
    }).output();
    assert.ok(generated.success, "guix archive --generate-key failed");
    return { root, env, [Symbol.asyncDispose]: remove };
  } catch (error) {
    await remove();
    throw error;
  }
}

/** Starts `script ARGS` from the repository with `env`, output piped. */
function spawn(script: string, args: string[], env: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO}/${script}`, ...args],
    cwd: REPO,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * Starts lorica-worker with `env`, publishing on loopback, its server a
 * loopback port where nothing answers, and `args` added.
 */
function spawnWorker(env: Record<string, string>, args: string[]) {
  return spawn("worker.ts", [
    `--server=127.0.0.1:${quietPort()}`,
    "--publish-listen=127.0.0.1",
    ...args,
  ], env);
}

/** The output and status of `child`, killing it (by pid) after `ms`. */
async function finish(child: Deno.ChildProcess, ms: number) {
  const timer = setTimeout(() => child.kill("SIGKILL"), ms);
  const output = await child.output();
  clearTimeout(timer);
  return {
    code: output.code,
    signal: output.signal,
    stderr: new TextDecoder().decode(output.stderr),
  };
}

Deno.test({
  name: "lorica-worker exits 1 naming the port when its publish port is in use",
  async fn() {
    await using host = await setUp();
    using held = heldPort();
    const child = spawnWorker(host.env, [`--publish-port=${held.port}`]);
    const { code, stderr } = await finish(child, 60_000);
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      new RegExp(
        `\\nlorica-worker: error: Cannot start guix publish on the publish port 127\\.0\\.0\\.1:${held.port}: exit code 1: .*Address already in use`,
      ),
    );
    assert.ok(!stderr.includes("worker started"), stderr);
  },
});

Deno.test({
  name: "lorica-worker exits 1 naming the key when guix publish cannot read it",
  async fn() {
    await using host = await setUp();
    const child = spawnWorker(host.env, [
      "--publish-port=0",
      `--private-key=${host.root}/missing.sec`,
    ]);
    const { code, stderr } = await finish(child, 60_000);
    assert.equal(code, 1, stderr);
    assert.ok(
      stderr.includes(
        `lorica-worker: error: Cannot start guix publish on the publish port 127.0.0.1:0 (with --private-key=${host.root}/missing.sec): exit code 1: guix publish: error: cannot read private key`,
      ),
      stderr,
    );
  },
});

Deno.test({
  name: "lorica-worker whose guix publish dies stops and exits 1",
  async fn() {
    await using host = await setUp();
    const child = spawnWorker(host.env, [
      "--publish-port=0",
      "--drain-timeout=1",
    ]);
    const lines = child.stderr.pipeThrough(new TextDecoderStream())
      .getReader();
    let text = "";
    let pid = 0;
    while (!text.includes("worker started")) {
      const { value, done } = await lines.read();
      if (done) break;
      text += value;
    }
    pid = Number(text.match(/ process=publish pid=(\d+)/)?.[1]);
    assert.ok(pid > 0 && text.includes("worker started"), text);
    Deno.kill(pid, "SIGKILL");
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    for (;;) {
      const { value, done } = await lines.read();
      if (done) break;
      text += value;
    }
    const status = await child.status;
    clearTimeout(timer);
    await child.stdout.cancel();
    assert.equal(status.code, 1, text);
    assert.match(
      text,
      /error worker stopping reason="guix publish exited"/,
    );
    assert.match(
      text,
      /\nlorica-worker: error: Cannot publish on the publish port 127\.0\.0\.1:0: guix publish was killed by SIGKILL/,
    );
  },
});

Deno.test({
  name:
    "lorica-server exits 1 naming the publish port when guix publish finds it in use",
  async fn() {
    await using host = await setUp();
    await Deno.mkdir(`${host.root}/server`, { recursive: true });
    using held = heldPort();
    const child = spawn("server.ts", [
      "--build-remote",
      "--no-advertise",
      "--no-poll",
      `--database=${host.root}/server/lorica.db`,
      `--cache=${host.root}/server/cache`,
      `--gc-roots=${host.root}/server/gcroots`,
      "--listen=127.0.0.1",
      "--backend-port=0",
      "--log-port=0",
      `--publish-port=${held.port}`,
      "--web-port=0",
    ], host.env);
    const { code, stderr } = await finish(child, 60_000);
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      new RegExp(
        `\\nlorica-server: error: Cannot start guix publish on the publish port 127\\.0\\.0\\.1:${held.port}: exit code 1: .*Address already in use`,
      ),
    );
  },
});
