// The guix wrapper against the fake guix: real subprocesses, real formats.

import assert from "node:assert/strict";
import {
  Guix,
  GuixCommandError,
  MAX_FORWARDED_LINE_LENGTH,
} from "../../../lib/guix/guix_command.ts";
import { evaluateSystem } from "../../../lib/guix/evaluation.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { GUIX, makeDaemon, makeRoot } from "../../fake-guix/test_env.ts";
import { fakeSpawner, within } from "../server/_dispatch_fixture.ts";

const SCENARIO = {
  packages: [
    {
      name: "base",
      version: "1.0",
      behaviour: { seconds: 0.2, logLines: 3, exit: 0 },
    },
    {
      name: "broken",
      version: "2.0",
      inputs: ["base"],
      behaviour: { seconds: 0.1, logLines: 2, exit: 2 },
    },
  ],
};

async function setup() {
  const root = await makeRoot();
  await Deno.writeTextFile(`${root}/scenario.json`, JSON.stringify(SCENARIO));
  const daemon = await makeDaemon(root, "server", {
    FAKE_GUIX_SCENARIO: `${root}/scenario.json`,
  });
  const guix = new Guix({
    command: GUIX,
    env: daemon.env,
    logger: silentLogger,
  });
  const evaluation = await evaluateSystem(guix, {
    channels: [],
    build: { type: "all", params: [] },
    system: "x86_64-linux",
    workDir: root,
  });
  const job = (name: string) =>
    evaluation.jobs.find((j) => j.name === `${name}.x86_64-linux`)!;
  return { root, guix, evaluation, job };
}

Deno.test("Guix.build() returns the outputs and streams the log", async () => {
  const { root, guix, evaluation, job } = await setup();
  try {
    assert.ok(evaluation.ok, evaluation.log);
    const chunks: Uint8Array[] = [];
    const result = await guix.build([job("base").derivation], {
      onLog: (chunk) => void chunks.push(chunk.slice()),
    });
    assert.equal(result.ok, true, result.stderrTail);
    assert.deepEqual(result.outputs, job("base").outputs.map((o) => o.path));
    const log = new TextDecoder().decode(
      new Uint8Array(chunks.flatMap((c) => [...c])),
    );
    assert.match(log, /building .*base-1\.0\.drv\.\.\./);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Guix.build() ends guix's options with -- so that no item can be read as one", async () => {
  const calls: string[][] = [];
  const guix = new Guix({
    logger: silentLogger,
    spawn: fakeSpawner(() => ({ code: 0 }), calls),
  });
  const items = ["--expression=(exit 7)", "-e", "/gnu/store/x.drv"];
  await guix.build(items, { timeout: 60, maxSilentTime: 5, fallback: true });
  const argv = calls[0];
  const end = argv.indexOf("--");
  assert.deepEqual(argv.slice(end), ["--", ...items]);
  assert.deepEqual(argv.slice(0, end), [
    "guix",
    "build",
    "--timeout=60",
    "--max-silent-time=5",
    "--fallback",
  ]);
});

Deno.test("Guix.build() reports a failed build with guix's own error line", async () => {
  const { root, guix, job } = await setup();
  try {
    const drv = job("broken").derivation;
    const result = await guix.build([drv]);
    assert.equal(result.ok, false);
    assert.equal(result.exitCode, 1);
    assert.deepEqual(result.outputs, []);
    assert.ok(
      result.stderrTail.trimEnd().endsWith(
        `guix build: error: build of \`${drv}' failed`,
      ),
      result.stderrTail,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Guix.substitute() throws GuixCommandError when nothing serves the outputs", async () => {
  const { root, guix, job } = await setup();
  try {
    await assert.rejects(
      // Port 9 on loopback: nothing listens there.
      guix.substitute(job("base").derivation, "http://127.0.0.1:9"),
      (error: unknown) =>
        error instanceof GuixCommandError && error.exitCode === 1 &&
        error.message.includes("max-jobs"),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Guix.run() throws with the command and the last stderr line", async () => {
  const { root, guix } = await setup();
  try {
    await assert.rejects(
      guix.run(["build", "--no-such-option"]),
      /--no-such-option: unrecognized option/,
    );
    const allowed = await guix.run(["build", "--no-such-option"], {
      allowFailure: true,
    });
    assert.equal(allowed.exitCode, 1);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("Guix.start(): stop() kills a process that ignores SIGTERM once the wrapper's grace is over, and says so", async () => {
  const lines: string[] = [];
  const ready = Promise.withResolvers<void>();
  const guix = new Guix({
    command: "sh",
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    killGraceMs: 300,
  });
  const running = guix.start(
    ["-c", 'trap "" TERM; echo ready >&2; exec sleep 60'],
    "deaf",
    { onStderrLine: () => ready.resolve() },
  );
  try {
    await within(ready.promise, 5000, "start");
    await within(running.stop(), 3000, "stop");
    const exit = await running.exited;
    assert.equal(exit.signal, "SIGKILL");
    assert.equal(exit.requested, true);
    assert.ok(
      lines.includes(
        `warn process killed pid=${running.pid} signal=SIGKILL grace=0.3 reason="still running after SIGTERM"`,
      ),
      lines.join("\n"),
    );
  } finally {
    try {
      Deno.kill(running.pid, "SIGKILL");
    } catch {
      // Gone, as it should be.
    }
  }
});

/**
 * Runs `body` (a module body with `guix`, a Guix running `command`, and
 * `say(text)`, which prints a line) in a parent Deno process, reads the pid
 * it says, SIGKILLs the parent (as the OOM killer or kill -9 would) and
 * tells whether that pid still runs 5 s later at most.
 */
async function outlivesKilledParent(
  command: string,
  body: string,
): Promise<{ pid: number; outlived: boolean }> {
  const module = (path: string) =>
    JSON.stringify(new URL(`../../../lib/${path}`, import.meta.url).href);
  const script = `
    import { Guix } from ${module("guix/guix_command.ts")};
    import { silentLogger } from ${module("log.ts")};
    const guix = new Guix({ command: ${
    JSON.stringify(command)
  }, logger: silentLogger });
    const say = (text) => console.log(String(text).trim());
    ${body}
    await new Promise(() => {});
  `;
  const parent = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = parent.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  const pid = Number(new TextDecoder().decode(value).trim());
  assert.ok(pid > 0, `no pid from the parent: ${JSON.stringify(value)}`);
  try {
    parent.kill("SIGKILL");
    await parent.status;
    await parent.stdout.cancel();
    // Gone, or a zombie waiting for init: either way no longer running.
    const deadline = Date.now() + 5000;
    while (alive(pid) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return { pid, outlived: alive(pid) };
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone, as it should be.
    }
  }
}

/** A stand-in guix that says its pid on stderr, then waits a minute. */
async function waitingGuix(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-waiting-guix-" });
  const path = `${dir}/guix`;
  await Deno.writeTextFile(path, "#!/bin/sh\necho $$ >&2\nexec sleep 60\n");
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("Guix.start(), build() and run(): guix dies with a SIGKILLed parent, not left publishing, building or evaluating for nobody", async (t) => {
  const guix = await waitingGuix();
  try {
    for (
      const [name, body] of [
        [
          "start (guix publish: left behind it holds its port)",
          `say(guix.start(["publish"], "publish").pid);`,
        ],
        [
          "build (guix build of a silent build)",
          `guix.build(["/gnu/store/x.drv"], { onLog: (c) => say(new TextDecoder().decode(c)) });`,
        ],
        [
          "run (an evaluator, in a group of its own)",
          `guix.run(["repl"], { allowFailure: true });
           const stat = () => Deno.readDirSync("/proc");
           // Its pid: the child of this process that runs the stand-in.
           for (;;) {
             const mine = [...stat()].map((e) => Number(e.name)).filter((n) => {
               try {
                 const s = Deno.readTextFileSync(\`/proc/\${n}/stat\`);
                 return Number(s.slice(s.lastIndexOf(")") + 2).split(" ")[1]) === Deno.pid &&
                   Deno.readTextFileSync(\`/proc/\${n}/cmdline\`).includes("sleep");
               } catch { return false; }
             });
             if (mine.length > 0) { say(mine[0]); break; }
             await new Promise((r) => setTimeout(r, 20));
           }`,
        ],
      ]
    ) {
      await t.step(name, async () => {
        const { pid, outlived } = await outlivesKilledParent(guix, body);
        assert.equal(outlived, false, `pid ${pid} outlived its parent`);
      });
    }
  } finally {
    await Deno.remove(guix.slice(0, guix.lastIndexOf("/")), {
      recursive: true,
    });
  }
});

/** Whether `pid` exists and is no zombie. */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

Deno.test("Guix.start() forwards a child's output without newlines in bounded pieces, lines whole", async () => {
  const lines: string[] = [];
  const guix = new Guix({
    command: "sh",
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
  });
  // 4 MiB without a newline, then two ordinary lines.
  const running = guix.start(
    [
      "-c",
      "head -c 4194304 /dev/zero | tr '\\0' x >&2; printf '\\na\\nb\\n' >&2",
    ],
    "publish",
  );
  const exit = await running.exited;
  assert.equal(exit.code, 0);
  const pieces = lines.filter((l) => l.startsWith("info process output "))
    .map((l) => /line="?([^" ]*)/.exec(l)![1]);
  assert.equal(pieces.join(""), "x".repeat(4 * 1024 * 1024) + "ab");
  assert.ok(
    pieces.every((p) => p.length <= MAX_FORWARDED_LINE_LENGTH),
    `longest piece ${Math.max(...pieces.map((p) => p.length))}`,
  );
  assert.deepEqual(pieces.slice(-2), ["a", "b"]);
});
