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

/** Whether `pid` exists and is no zombie. */
function running(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

/** Whether `pid` still runs after up to 2 s of waiting for its end. */
async function stillRunning(pid: number): Promise<boolean> {
  for (let i = 0; i < 40 && running(pid); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return running(pid);
}

/** Starts a shell with a `sleep` child; returns both and the shell's output. */
async function shellWithChild(options: { signal?: AbortSignal }) {
  const child = spawnProcess([
    "sh",
    "-c",
    "sleep 30 & echo $!; wait",
  ], { ...options, ownGroup: true });
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const sleeper = Number(new TextDecoder().decode(value).trim());
  return { child, sleeper };
}

Deno.test("spawnProcess() with ownGroup: kill() ends the command's children too", async () => {
  const { child, sleeper } = await shellWithChild({});
  try {
    assert.ok(running(sleeper));
    child.kill("SIGKILL");
    assert.equal((await child.status).signal, "SIGKILL");
    assert.ok(!await stillRunning(sleeper), `sleep ${sleeper} still runs`);
    // Its pipes close: no child is left holding them.
    await readTail(child.stdout, 100);
    await readTail(child.stderr, 100);
  } finally {
    if (running(sleeper)) Deno.kill(sleeper, "SIGKILL");
  }
});

Deno.test("spawnProcess() with ownGroup: an aborted signal ends the command's children too", async () => {
  const abort = new AbortController();
  const { child, sleeper } = await shellWithChild({ signal: abort.signal });
  try {
    abort.abort();
    assert.equal((await child.status).signal, "SIGTERM");
    assert.ok(!await stillRunning(sleeper), `sleep ${sleeper} still runs`);
    await readTail(child.stdout, 100);
  } finally {
    if (running(sleeper)) Deno.kill(sleeper, "SIGKILL");
  }
});

Deno.test("spawnProcess() with ownGroup: a missing command is NotFound", () => {
  assert.throws(
    () => spawnProcess(["lorica-no-such-command"], { ownGroup: true }),
    (error) =>
      error instanceof Deno.errors.NotFound &&
      /"lorica-no-such-command"/.test(error.message),
  );
});
