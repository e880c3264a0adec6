import assert from "node:assert/strict";
import {
  type BuildEvent,
  BuildEventParser,
  guixSpawner,
  queryDerivations,
  runBuildDriver,
} from "../../../lib/guix/build_events.ts";
import {
  evaluate,
  GUIX,
  makeDaemon,
  makeRoot,
  writeChannels,
  writeScenario,
} from "../../fake-guix/test_env.ts";
import { joinBytes } from "./_support.ts";
import { spawnProcess } from "../../../lib/process.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DRV = "/gnu/store/i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv";

function frame(pid: number, payload: string | Uint8Array): Uint8Array {
  const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
  const header = encoder.encode(`@ build-log ${pid} ${bytes.length}\n`);
  const all = new Uint8Array(header.length + bytes.length);
  all.set(header);
  all.set(bytes, header.length);
  return all;
}

/** Parses `stream` fed in chunks of `size` bytes, merging log chunks. */
function parseAll(stream: Uint8Array, size: number): BuildEvent[] {
  const parser = new BuildEventParser();
  const events: BuildEvent[] = [];
  for (let i = 0; i < stream.length; i += size) {
    events.push(...parser.push(stream.slice(i, i + size)));
  }
  events.push(...parser.end());
  const merged: BuildEvent[] = [];
  for (const event of events) {
    const last = merged[merged.length - 1];
    if (
      event.type === "build-log" && last?.type === "build-log" &&
      last.pid === event.pid
    ) {
      merged[merged.length - 1] = {
        ...last,
        data: joinBytes(last.data, event.data),
      };
    } else merged.push(event);
  }
  return merged;
}

const SPOOF = `all good\n@ build-succeeded ${DRV} -\n@ build-log 1 3\n@ b`;

const STREAM = joinBytes(
  `@ build-started ${DRV} - x86_64-linux /var/log/guix/drvs/i3//b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv.gz 4242\n`,
  frame(4242, SPOOF),
  frame(4242, new Uint8Array([0xff, 0x0a, 0xfe])),
  `builder for \`${DRV}' failed with exit code 1\n`,
  `@ build-failed ${DRV} - 1 builder for \`${DRV}' failed with exit code 1\n`,
  `@ build-started ${DRV} - x86_64-linux  77\n`,
  `@ substituter-started /gnu/store/abc-x substitute\n`,
  `cannot build derivation \`${DRV}': 1 dependencies couldn't be built`,
);

Deno.test("BuildEventParser reads traces, frames and daemon messages", async (t) => {
  for (const size of [1, 7, 64, STREAM.length]) {
    await t.step(`in chunks of ${size} bytes`, () => {
      const events = parseAll(STREAM, size);
      assert.deepEqual(events.map((e) => e.type), [
        "build-started",
        "build-log",
        "message",
        "build-failed",
        "build-started",
        "trace",
        "message",
      ]);
      assert.deepEqual(events[0], {
        type: "build-started",
        drv: DRV,
        system: "x86_64-linux",
        logFile:
          "/var/log/guix/drvs/i3//b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv.gz",
        pid: 4242,
      });
      const log = events[1] as { data: Uint8Array; pid: number };
      assert.equal(log.pid, 4242);
      assert.deepEqual(
        log.data,
        joinBytes(SPOOF, new Uint8Array([0xff, 0x0a, 0xfe])),
      );
      assert.deepEqual(events[3], {
        type: "build-failed",
        drv: DRV,
        code: "1",
        message: `builder for \`${DRV}' failed with exit code 1`,
      });
      // An empty LOGFILE field survives the split (two spaces).
      assert.equal((events[4] as { logFile: string }).logFile, "");
      assert.equal((events[4] as { pid: number }).pid, 77);
      assert.deepEqual(events[5], {
        type: "trace",
        name: "substituter-started",
        fields: ["/gnu/store/abc-x", "substitute"],
      });
      assert.match((events[6] as { text: string }).text, /^cannot build/);
    });
  }
});

Deno.test("BuildEventParser: builder output cannot fake an event", () => {
  // The builder prints an event line, then a lying frame header: all of it
  // is inside the daemon's frame, so it stays log.
  const events = parseAll(
    joinBytes(
      frame(9, `\n@ build-succeeded ${DRV} -\n`),
      "@ build-failed x - timeout\n",
    ),
    5,
  );
  assert.deepEqual(events.map((e) => e.type), ["build-log", "build-failed"]);
  assert.equal(
    decoder.decode((events[0] as { data: Uint8Array }).data),
    `\n@ build-succeeded ${DRV} -\n`,
  );
  assert.equal((events[1] as { code: string }).code, "timeout");
});

Deno.test("BuildEventParser takes malformed frame headers as messages", () => {
  const events = parseAll(
    encoder.encode("@ build-log x 3\n@ build-log 1 99999999999\nabc\n"),
    4,
  );
  assert.deepEqual(events.map((e) => e.type), [
    "message",
    "message",
    "message",
  ]);
});

// The fake guix, run as Lorica runs it.

async function fakeFarm(scenario: unknown) {
  const root = await makeRoot();
  const daemon = await makeDaemon(root, "local", {
    FAKE_GUIX_SCENARIO: await writeScenario(root, scenario),
  });
  const channels = await writeChannels(root);
  const drvs = new Map<string, string>();
  const run = await evaluate(daemon, channels, "all", "x86_64-linux");
  assert.equal(run.code, 0, run.stderr);
  for (const line of run.stdout.split("\n")) {
    const match = /\(name "([^"]+)\.x86_64-linux"\) \(derivation "([^"]+)"/
      .exec(line);
    if (match) drvs.set(match[1], match[2]);
  }
  const spawn = guixSpawner({ command: GUIX, env: daemon.env });
  return { root, daemon, drvs, spawn };
}

Deno.test("runBuildDriver() streams the fake daemon's events; logs cannot spoof them", async () => {
  const farm = await fakeFarm({
    packages: [
      {
        name: "liar",
        version: "1",
        behaviour: {
          seconds: 0.1,
          logLines: 2,
          exit: 1,
          logText: `@ build-succeeded /gnu/store/x-liar.drv -\n\u00ff`,
        },
      },
      {
        name: "app",
        version: "1",
        inputs: ["liar"],
        behaviour: { seconds: 0 },
      },
      {
        name: "slow",
        version: "1",
        behaviour: { seconds: 0, silenceSeconds: 30 },
      },
      { name: "ok", version: "1", behaviour: { seconds: 0.1, logLines: 3 } },
    ],
  });
  try {
    const { drvs, spawn } = farm;
    const events: BuildEvent[] = [];
    const result = await runBuildDriver(spawn, {
      drvs: [drvs.get("liar")!, drvs.get("app")!, drvs.get("ok")!],
      maxSilentTime: 1,
    }, (event) => {
      events.push(event);
    });
    assert.equal(result.exitCode, 1, result.stderr);
    const succeeded = events.filter((e) => e.type === "build-succeeded")
      .map((e) => (e as { drv: string }).drv);
    assert.deepEqual(succeeded, [drvs.get("ok")]);
    const failed = events.filter((e) => e.type === "build-failed");
    assert.deepEqual(failed.map((e) => (e as { drv: string }).drv), [
      drvs.get("liar"),
    ]);
    // The dependent gets only a daemon message, no build-failed.
    assert.ok(
      events.some((e) =>
        e.type === "message" &&
        e.text ===
          `cannot build derivation \`${
            drvs.get("app")
          }': 1 dependencies couldn't be built`
      ),
    );
    const started = events.find((e) =>
      e.type === "build-started" && e.drv === drvs.get("liar")
    ) as { pid: number; logFile: string };
    assert.match(started.logFile, /\/log\/guix\/drvs\/[0-9a-z]{2}\/\//);
    const log = joinBytes(
      ...events.filter((e) => e.type === "build-log" && e.pid === started.pid)
        .map((e) => (e as { data: Uint8Array }).data),
    );
    assert.ok(
      decoder.decode(log).includes("@ build-succeeded /gnu/store/x-liar.drv -"),
    );
    assert.ok(log.includes(0xff), "raw bytes arrive unchanged");

    // max-silent-time is honoured and reported as a timeout.
    const silent: BuildEvent[] = [];
    const timed = await runBuildDriver(spawn, {
      drvs: [drvs.get("slow")!],
      maxSilentTime: 1,
    }, (event) => {
      silent.push(event);
    });
    assert.equal(timed.exitCode, 1);
    assert.ok(
      silent.some((e) => e.type === "build-failed" && e.code === "timeout"),
    );
    assert.ok(
      silent.some((e) =>
        e.type === "message" &&
        /timed out after 1 seconds of silence/.test(e.text)
      ),
    );

    const states = await queryDerivations(spawn, [
      drvs.get("ok")!,
      drvs.get("liar")!,
      drvs.get("app")!,
      drvs.get("ok")!.replace(/-ok-1\.drv$/, "-gone-1.drv"),
    ]);
    assert.deepEqual([...states.values()], [
      "valid",
      "failed",
      "none",
      "missing",
    ]);
  } finally {
    await Deno.remove(farm.root, { recursive: true });
  }
});

Deno.test("runBuildDriver() stops the driver when the event handler fails", async () => {
  let pid = 0;
  // A driver that reports a start, then builds for a long while.
  const spawn = (_args: string[], options = {}) => {
    const child = spawnProcess([
      "sh",
      "-c",
      `echo "@ build-started ${DRV} - x86_64-linux /l 42"; exec sleep 30`,
    ], options);
    pid = child.pid;
    return child;
  };
  try {
    await assert.rejects(
      runBuildDriver(spawn, { drvs: [DRV] }, () => {
        throw new Error("No space left on device");
      }),
      /No space left on device/,
    );
    assert.throws(() => Deno.kill(pid, "SIGCONT"), "the driver still runs");
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Stopped, as it should be.
    }
  }
});

Deno.test("runBuildDriver() kills a driver that ignores SIGTERM when the event handler fails", async () => {
  let pid = 0;
  // A driver that reports a start, then ignores SIGTERM for a long build.
  const spawn = (_args: string[], options = {}) => {
    const child = spawnProcess([
      "sh",
      "-c",
      `trap "" TERM; echo "@ build-started ${DRV} - x86_64-linux /l 42"; exec sleep 60`,
    ], { ...options, killGraceMs: 200 });
    pid = child.pid;
    return child;
  };
  const started = performance.now();
  try {
    await assert.rejects(
      runBuildDriver(spawn, { drvs: [DRV] }, () => {
        throw new Error("No space left on device");
      }),
      /No space left on device/,
    );
    assert.ok(
      performance.now() - started < 10_000,
      "the driver ran on long after its SIGTERM",
    );
    assert.throws(() => Deno.kill(pid, "SIGCONT"), "the driver still runs");
  } finally {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Stopped, as it should be.
    }
  }
});
