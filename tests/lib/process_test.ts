import assert from "node:assert/strict";
import { createLogger } from "../../lib/log.ts";
import { readTail, spawnProcess, terminate } from "../../lib/process.ts";

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
    // Its pipes close: no child is left holding them.
    await readTail(child.stdout, 100);
    await readTail(child.stderr, 100);
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

/** The status `status` resolves to within `ms`, or "still running". */
async function statusWithin<T>(
  status: Promise<T>,
  ms: number,
): Promise<T | "still running"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      status,
      new Promise<"still running">((resolve) => {
        timer = setTimeout(() => resolve("still running"), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `pid` ignores SIGTERM (its shell ran `trap "" TERM`). */
async function untilIgnoresSigterm(pid: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const mask = /^SigIgn:\s*([0-9a-f]+)$/m.exec(status)![1];
    if ((BigInt(`0x${mask}`) & (1n << 14n)) !== 0n) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Cannot see pid ${pid} ignore SIGTERM: not after 2 s`);
}

Deno.test("spawnProcess() with ownGroup: an aborted signal kills a group ignoring SIGTERM after the grace, and says so", async () => {
  const lines: string[] = [];
  const abort = new AbortController();
  const child = spawnProcess([
    "sh",
    "-c",
    'trap "" TERM; sleep 60 & echo $!; wait',
  ], {
    ownGroup: true,
    signal: abort.signal,
    killGraceMs: 300,
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
  });
  const reader = child.stdout.getReader();
  const sleeper = Number(
    new TextDecoder().decode((await reader.read()).value).trim(),
  );
  reader.releaseLock();
  try {
    await untilIgnoresSigterm(child.pid);
    const started = performance.now();
    abort.abort();
    const ended = await statusWithin(child.status, 5000);
    assert.deepEqual(ended, { code: 137, signal: "SIGKILL" });
    assert.ok(performance.now() - started >= 300, "not before the grace");
    assert.ok(!await stillRunning(sleeper), `sleep ${sleeper} still runs`);
    assert.deepEqual(lines, [
      `warn process killed pid=${child.pid} signal=SIGKILL grace=0.3 reason="still running after SIGTERM"`,
    ]);
    await readTail(child.stdout, 100);
    await readTail(child.stderr, 100);
  } finally {
    for (const pid of [child.pid, sleeper]) {
      if (running(pid)) Deno.kill(pid, "SIGKILL");
    }
  }
});

Deno.test("spawnProcess(): an aborted signal kills a child ignoring SIGTERM after the grace", async () => {
  const abort = new AbortController();
  const child = spawnProcess([
    "sh",
    "-c",
    'trap "" TERM; echo ready; exec sleep 60',
  ], { signal: abort.signal, killGraceMs: 200 });
  const reader = child.stdout.getReader();
  await reader.read();
  reader.releaseLock();
  try {
    await untilIgnoresSigterm(child.pid);
    abort.abort();
    const ended = await statusWithin(child.status, 5000);
    assert.deepEqual(ended, { code: 137, signal: "SIGKILL" });
    await readTail(child.stdout, 100);
    await readTail(child.stderr, 100);
  } finally {
    if (running(child.pid)) Deno.kill(child.pid, "SIGKILL");
  }
});

Deno.test("terminate() ends a child that obeys SIGTERM at once, without SIGKILL or a word", async () => {
  const lines: string[] = [];
  const child = spawnProcess(["sleep", "60"]);
  const started = performance.now();
  const status = await terminate(child, {
    graceMs: 30_000,
    logger: createLogger({ sink: (l) => lines.push(l) }),
  });
  assert.deepEqual(status, { code: 143, signal: "SIGTERM" });
  assert.ok(performance.now() - started < 5000, "the grace was waited out");
  assert.deepEqual(lines, []);
  await readTail(child.stdout, 100);
  await readTail(child.stderr, 100);
});

Deno.test("spawnProcess() with ownGroup: an aborted signal leaves no member ignoring SIGTERM once the command obeyed it", async () => {
  const abort = new AbortController();
  // The command ends on SIGTERM; its child does not. The command's trap is
  // set before the pid is printed, so a SIGTERM sent once the pid is read
  // finds it in place.
  const child = spawnProcess([
    "sh",
    "-c",
    `trap "exit 0" TERM; (trap "" TERM; exec sleep 60) & echo $!; wait`,
  ], { ownGroup: true, signal: abort.signal, killGraceMs: 300 });
  const reader = child.stdout.getReader();
  const sleeper = Number(
    new TextDecoder().decode((await reader.read()).value).trim(),
  );
  reader.releaseLock();
  try {
    await untilIgnoresSigterm(sleeper);
    abort.abort();
    assert.deepEqual(await statusWithin(child.status, 5000), {
      code: 0,
      signal: null,
    });
    assert.ok(!await stillRunning(sleeper), `sleep ${sleeper} still runs`);
    // Nobody holds the pipes any more: reading them ends.
    await readTail(child.stdout, 100);
    await readTail(child.stderr, 100);
  } finally {
    if (running(sleeper)) Deno.kill(sleeper, "SIGKILL");
  }
});
