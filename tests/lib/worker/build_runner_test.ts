import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  buildRefusal,
  type BuildRunnerOptions,
  isUnavailableDerivation,
  LOG_BACKLOG_LIMIT_BYTES,
  MAX_BUILD_LIMIT_SECONDS,
  runBuild,
} from "../../../lib/worker/build_runner.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { LogUpload } from "../../../lib/protocol/log_upload.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { FakeClock, fakeSpawner } from "../server/_dispatch_fixture.ts";
import { mountSmallDisk, smallDiskAvailability } from "../../_small_disk.ts";
import { scriptedLogServer } from "../protocol/_scripted_log_server.ts";
import {
  logFileName,
  startLogReceiver,
} from "../../../lib/protocol/log_channel.ts";

const DRV = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x.drv";
const smallDisk = smallDiskAvailability();
// Port 9 on loopback: nothing listens, the log is dropped, the build goes on.
const NO_LOG = { hostname: "127.0.0.1", port: 9 };
const fast = {
  sleep: () => Promise.resolve(),
  now: () => 0,
  monotonic: () => 0,
};

/**
 * Runs a build of DRV on a guix spawned by `spawn`, its log dropped, its
 * waits instant; its outcome and the lines it logged.
 */
async function quickBuild(
  spawn: Spawner,
  options: Partial<BuildRunnerOptions> = {},
) {
  const lines: string[] = [];
  const outcome = await runBuild({ drv: DRV, timeout: 0, maxSilent: 0 }, {
    guix: new Guix({ logger: silentLogger, spawn }),
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    substituteUrls: [],
    logServer: NO_LOG,
    clock: fast,
    ...options,
  });
  return { outcome, lines };
}

Deno.test("runBuild() retries a build whose derivation was unavailable, then succeeds", async () => {
  const calls: string[][] = [];
  let n = 0;
  const { outcome, lines } = await quickBuild(fakeSpawner(
    () =>
      ++n < 3
        ? { code: 1, stderr: `cannot build missing derivation \`${DRV}'\n` }
        : { code: 0 },
    calls,
  ));
  assert.deepEqual(outcome, { status: "succeeded" });
  assert.equal(calls.length, 3);
  assert.equal(
    lines.filter((l) => l.startsWith("warn build retried")).length,
    2,
  );
});

Deno.test("runBuild() tells a guix build killed by a signal it did not send from a failed build: its outcome is unknown", async () => {
  const { outcome, lines } = await quickBuild(
    fakeSpawner(() => ({ code: 143, signal: "SIGTERM" })),
  );
  assert.deepEqual(outcome, { status: "killed" });
  assert.ok(
    lines.includes(
      `warn guix build killed drv=${DRV} signal=SIGTERM reason="a signal this worker did not send"`,
    ),
    lines.join("\n"),
  );
  assert.ok(!lines.some((l) => l.startsWith("info build failed locally")));
});

Deno.test("runBuild() reports a real build failure at once, and a lasting unavailability after its retries", async () => {
  for (
    const [stderr, expectedCalls] of [
      ["builder for `x.drv' failed with exit code 1\n", 1],
      [`cannot build missing derivation \`${DRV}'\n`, 3],
    ] as const
  ) {
    const calls: string[][] = [];
    const { outcome } = await quickBuild(
      fakeSpawner(() => ({ code: 1, stderr }), calls),
      { retries: 2 },
    );
    assert.deepEqual(outcome, { status: "failed" });
    assert.equal(calls.length, expectedCalls, stderr);
  }
});

/**
 * A `guix build` whose daemon is stuck: it prints what `say()` is given,
 * and ends only when killed; with `exitedAtKill`, the kill finds it
 * already ended with status 0 (the build finished as the kill was sent).
 */
function stuckBuild({ exitedAtKill = false } = {}) {
  const encoder = new TextEncoder();
  const spawned = Promise.withResolvers<void>();
  const state = { killed: false, say: (_text: string) => {} };
  const spawn: Spawner = (_argv, options) => {
    const stderr = new TransformStream<Uint8Array, Uint8Array>();
    const writer = stderr.writable.getWriter();
    const status = Promise.withResolvers<
      { code: number; signal: string | null }
    >();
    const kill = () => {
      state.killed = true;
      writer.close().catch(() => {});
      status.resolve(
        exitedAtKill
          ? { code: 0, signal: null }
          : { code: 143, signal: "SIGTERM" },
      );
    };
    // As the real spawner does: a signal aborted already kills at once.
    // (A stop landing between build-started and the spawn left this fake
    // running for good, and a session waiting for it.)
    if (options?.signal?.aborted) queueMicrotask(kill);
    else options?.signal?.addEventListener("abort", kill, { once: true });
    state.say = (text) => void writer.write(encoder.encode(text));
    spawned.resolve();
    const child: Child = {
      pid: 1,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr: stderr.readable,
      stdin: null,
      status: status.promise,
      kill,
    };
    return child;
  };
  return { spawn, spawned: spawned.promise, state };
}

/**
 * Runs a build of DRV with `maxSilent` on `stuck`, on `clock`, a grace of
 * 5 s and no log server unless `extra` says otherwise.
 */
function runStuck(
  stuck: ReturnType<typeof stuckBuild>,
  clock: FakeClock,
  maxSilent: number,
  extra: Partial<BuildRunnerOptions> = {},
) {
  return runBuild({ drv: DRV, timeout: 0, maxSilent }, {
    guix: new Guix({ logger: silentLogger, spawn: stuck.spawn }),
    logger: silentLogger,
    substituteUrls: [],
    logServer: NO_LOG,
    clock,
    daemonSilenceGraceSeconds: 5,
    ...extra,
  });
}

Deno.test("runBuild() kills guix build once the daemon is silent for the max-silent-time and the grace; each log chunk starts the wait again", async () => {
  const clock = new FakeClock();
  const stuck = stuckBuild();
  const server = scriptedLogServer([""]);
  const lines: string[] = [];
  try {
    const building = runStuck(stuck, clock, 10, {
      logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
      logServer: { hostname: "127.0.0.1", port: server.port },
    });
    await stuck.spawned;
    await clock.advance(14_000);
    stuck.state.say("building...\n");
    await clock.advance(0); // the chunk is read
    await clock.advance(14_000);
    assert.equal(stuck.state.killed, false, "a chunk 14 s in moves the limit");
    await clock.advance(1_000);
    assert.equal(stuck.state.killed, true, "15 s of silence kill guix build");
    assert.deepEqual(await building, {
      status: "daemon-silent",
      silentSeconds: 15,
    });
    const [upload] = await server.served;
    assert.equal(
      upload.log,
      "building...\nlorica-worker: guix-daemon silent for 15 s, past the max-silent-time of 10 s: build given up\n",
    );
    assert.ok(
      !lines.some((l) => l.includes("build failed locally")),
      lines.join("\n"),
    );
  } finally {
    server.close();
  }
});

Deno.test("runBuild() reports success when guix build ended with status 0 as the silent daemon's kill was sent", async () => {
  const clock = new FakeClock();
  const stuck = stuckBuild({ exitedAtKill: true });
  const building = runStuck(stuck, clock, 10);
  await stuck.spawned;
  await clock.advance(15_000);
  assert.equal(stuck.state.killed, true);
  // The outputs are built: neither a failure nor a build to do again.
  assert.deepEqual(await building, { status: "succeeded" });
});

Deno.test("runBuild() waits for good on a silent build without a max-silent-time", async () => {
  const clock = new FakeClock();
  const stuck = stuckBuild();
  const abort = new AbortController();
  const building = runStuck(stuck, clock, 0, { signal: abort.signal });
  await stuck.spawned;
  await clock.advance(365 * 24 * 3600 * 1000);
  assert.equal(stuck.state.killed, false);
  abort.abort();
  assert.deepEqual(await building, { status: "killed" });
});

Deno.test("isUnavailableDerivation() tells a missing derivation from a failed builder", () => {
  assert.ok(
    isUnavailableDerivation(`cannot build missing derivation \`${DRV}'`),
  );
  assert.ok(isUnavailableDerivation(`error: path '${DRV}' is not valid`));
  assert.ok(
    !isUnavailableDerivation("builder for `x.drv' failed with exit code 2"),
  );
  assert.ok(!isUnavailableDerivation(""));
});

Deno.test("buildRefusal() lets a derivation of the store with limits from 0 to the bound through", () => {
  for (const limit of [0, 1, 72000, MAX_BUILD_LIMIT_SECONDS]) {
    assert.equal(
      buildRefusal(
        { drv: DRV, timeout: limit, maxSilent: limit },
        "/gnu/store",
      ),
      null,
    );
  }
});

Deno.test("buildRefusal() blames the field and names the value of anything else", () => {
  const cases: [
    { drv?: string; timeout?: number; maxSilent?: number },
    string,
    string,
  ][] = [
    [{ drv: "--version" }, "drv", '"--version"'],
    [{ drv: "-e" }, "drv", '"-e"'],
    [{ drv: DRV.replace("/gnu/store", "/nix/store") }, "drv", "/nix/store"],
    [{ drv: DRV.slice(0, -4) }, "drv", '".drv"'],
    [{ timeout: -5 }, "timeout", "timeout -5:"],
    [{ timeout: 1.5 }, "timeout", "timeout 1.5:"],
    [{ timeout: MAX_BUILD_LIMIT_SECONDS + 1 }, "timeout", "timeout 31536001"],
    [{ maxSilent: -1 }, "max-silent", "max-silent -1:"],
    [{ maxSilent: Infinity }, "max-silent", "max-silent Infinity:"],
  ];
  for (const [fields, field, named] of cases) {
    const refusal = buildRefusal(
      { drv: DRV, timeout: 60, maxSilent: 60, ...fields },
      "/gnu/store",
    );
    assert.equal(refusal?.field, field, JSON.stringify(fields));
    assert.ok(refusal.reason.includes(named), refusal.reason);
  }
});

/**
 * A `guix build` whose log comes in two parts: the first at once, the
 * second when `release` resolves; it then succeeds.
 */
function twoPartBuild(first: string, second: string, release: Promise<void>) {
  return () => {
    const encoder = new TextEncoder();
    const stderr = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encoder.encode(first));
        await release;
        controller.enqueue(encoder.encode(second));
        controller.close();
      },
    });
    const status = release.then(() => ({ code: 0, signal: null }));
    return {
      pid: 1,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr,
      stdin: null,
      status,
      kill() {},
    };
  };
}

/**
 * runBuild() of a build whose log comes in two parts (see twoPartBuild),
 * the second once `finish()` is called; what it logs is in `lines`.
 */
function twoPartBuildRun() {
  const release = Promise.withResolvers<void>();
  const lines: string[] = [];
  return {
    lines,
    finish: () => release.resolve(),
    start: (
      options:
        & Partial<BuildRunnerOptions>
        & Pick<BuildRunnerOptions, "logServer">,
    ) =>
      runBuild({ drv: DRV, timeout: 0, maxSilent: 0 }, {
        guix: new Guix({
          logger: silentLogger,
          spawn: twoPartBuild(
            "step 1 of 2\n",
            "step 2 of 2\n",
            release.promise,
          ),
        }),
        logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
        substituteUrls: [],
        ...options,
      }),
  };
}

function startReceiver(cacheDir: string, port: number) {
  return startLogReceiver({
    hostname: "127.0.0.1",
    port,
    cacheDir,
    storeDir: "/gnu/store",
    logger: silentLogger,
  });
}

async function storedLog(cacheDir: string, drv: string): Promise<string> {
  const path = logFileName(cacheDir, "/gnu/store", drv);
  const compressed = await Deno.readFile(path).catch(() => new Uint8Array());
  if (compressed.length === 0) return "";
  return new TextDecoder().decode(
    zlib.gunzipSync(compressed, { finishFlush: zlib.constants.Z_SYNC_FLUSH }),
  );
}

/** Waits until the receiver stored the first part of the build's log. */
async function firstPartStored(cacheDir: string): Promise<void> {
  while (!(await storedLog(cacheDir, DRV)).includes("step 1 of 2")) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Waits until the worker saw its log server go, as it does during a build
 * of minutes. (Gone in the instant the build ends, the close would read as
 * the server's end of a whole upload.)
 */
async function serverGoneNoticed(lines: string[]): Promise<void> {
  const noticed = () =>
    lines.some((l) => l.startsWith("warn log upload failed"));
  for (const deadline = Date.now() + 10_000; !noticed();) {
    assert.ok(Date.now() < deadline, "the worker never saw the server go");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * A log receiver storing into a fresh temporary directory, and a two-part
 * build run (see twoPartBuildRun) whose log server it is. The resend tests
 * stop and start this receiver under a running build; disposing finishes
 * the build, closes whichever receiver is up and removes the directory.
 */
async function resendScene(prefix = "lorica-resend-") {
  const root = await Deno.makeTempDir({ prefix });
  const cacheDir = `${root}/logs`;
  let receiver = await startReceiver(cacheDir, 0);
  const logServer = { hostname: "127.0.0.1", port: receiver.port };
  const run = twoPartBuildRun();
  return {
    root,
    run,
    lines: run.lines,
    logServer,
    /** The log of DRV as the receiver stored it so far. */
    storedLog: () => storedLog(cacheDir, DRV),
    firstPartStored: () => firstPartStored(cacheDir),
    serverGoneNoticed: () => serverGoneNoticed(run.lines),
    /** The server goes away: its log port closes. */
    stopReceiver: () => receiver.close(),
    /** The server comes back on the same port, into the same directory. */
    async restartReceiver() {
      receiver = await startReceiver(cacheDir, logServer.port);
    },
    async [Symbol.asyncDispose]() {
      run.finish();
      await receiver.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/**
 * A clock on real time whose pauses between log resends go to `sleep`, so
 * that a test sees them, skips them, or acts during them.
 */
function realTimeClock(
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>,
) {
  return { now: () => Date.now(), monotonic: () => performance.now(), sleep };
}

Deno.test("runBuild() sends the whole log again when the server restarted mid-build (C08)", async () => {
  await using scene = await resendScene();
  const { run, lines } = scene;
  const building = run.start({ logServer: scene.logServer });
  // The server got the first part, then stops and starts again.
  await scene.firstPartStored();
  await scene.stopReceiver();
  await scene.restartReceiver();
  // The build goes on once the worker saw the server go.
  await scene.serverGoneNoticed();
  run.finish();
  assert.deepEqual(await building, { status: "succeeded" });
  const log = await scene.storedLog();
  assert.equal(log, "step 1 of 2\nstep 2 of 2\n", lines.join("\n"));
  assert.ok(
    lines.some((l) => l.startsWith("info log sent again") && /ok=true/.test(l)),
    lines.join("\n"),
  );
});

Deno.test({
  name: smallDisk.ok
    ? "runBuild() whose log copy the full disk refused says so, naming the copy, when it cannot send the log again"
    : `runBuild() whose log copy the full disk refused (skipped: ${smallDisk.reason})`,
  ignore: !smallDisk.ok,
  async fn() {
    await using disk = await mountSmallDisk(1024 * 1024);
    await using scene = await resendScene();
    const { run, lines } = scene;
    await disk.fill();
    // The worker's copy of the log goes to the full disk. (Not through
    // TMPDIR: the environment is the whole test process's, and other
    // test files run in it meanwhile.)
    const building = run.start({
      logServer: scene.logServer,
      spoolDir: disk.path,
    });
    await scene.firstPartStored();
    await scene.stopReceiver();
    await scene.restartReceiver();
    await scene.serverGoneNoticed();
    run.finish();
    assert.deepEqual(await building, { status: "succeeded" });
    const copyFailed = lines.find((l) => l.startsWith("warn log copy failed"));
    assert.match(copyFailed ?? "", /path=.*\/lorica-log-[^ ]* .*os error 28/);
    const notSent = lines.find((l) => l.startsWith("warn log not sent again"));
    assert.match(
      notSent ?? lines.join("\n"),
      /reason="the copy of the log could not be written" path=.*\/lorica-log-.*os error 28/,
    );
  },
});

Deno.test("runBuild() sends the log again when a server that acknowledges logs closes without (log-stored)", async () => {
  // A log server that stores nothing the first time (its disk full as
  // the upload ends, say) and says so by its silence, then acknowledges.
  const server = scriptedLogServer(["", "(log-stored)"]);
  const run = twoPartBuildRun();
  const { lines } = run;
  try {
    run.finish();
    const outcome = await run.start({
      logServer: {
        hostname: "127.0.0.1",
        port: server.port,
        acknowledges: true,
      },
    });
    assert.deepEqual(outcome, { status: "succeeded" });
    // Without the acknowledgement's check no second upload ever comes.
    const bound = Promise.withResolvers<void>();
    const timer = setTimeout(bound.resolve, 10_000);
    await Promise.race([server.served, bound.promise]);
    clearTimeout(timer);
    const log = "step 1 of 2\nstep 2 of 2\n";
    assert.deepEqual(server.uploads.map((upload) => upload.log), [log, log]);
    assert.ok(
      lines.some((l) =>
        l.startsWith("info log sent again") && /ok=true/.test(l)
      ),
      lines.join("\n"),
    );
  } finally {
    server.close();
  }
});

Deno.test("runBuild() tries the log again while the restarted server's log port is still closed (C08)", async () => {
  await using scene = await resendScene();
  const { run, lines } = scene;
  // The server comes back during the worker's first pause before a retry.
  const pauses: number[] = [];
  const clock = realTimeClock(async (ms) => {
    pauses.push(ms);
    if (pauses.length === 1) await scene.restartReceiver();
  });
  const building = run.start({
    logServer: scene.logServer,
    clock,
    retryDelayMs: 1000,
  });
  await scene.firstPartStored();
  // Killed: the server is still away when the build ends.
  await scene.stopReceiver();
  await scene.serverGoneNoticed();
  run.finish();
  assert.deepEqual(await building, { status: "succeeded" });
  assert.deepEqual(pauses, [1000], lines.join("\n"));
  assert.equal(
    await scene.storedLog(),
    "step 1 of 2\nstep 2 of 2\n",
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) =>
      l.startsWith("warn log resend retried") && /attempt=1 /.test(l)
    ),
    lines.join("\n"),
  );
  assert.ok(
    lines.some((l) => l.startsWith("info log sent again")),
    lines.join("\n"),
  );
});

Deno.test("runBuild() gives the log up, and says so, after its retries", async () => {
  await using scene = await resendScene();
  const { run, lines } = scene;
  const pauses: number[] = [];
  const clock = realTimeClock((ms) => {
    pauses.push(ms);
    return Promise.resolve();
  });
  const building = run.start({
    logServer: scene.logServer,
    clock,
    retries: 2,
    retryDelayMs: 500,
  });
  await scene.firstPartStored();
  await scene.stopReceiver();
  await scene.serverGoneNoticed();
  run.finish();
  assert.deepEqual(await building, { status: "succeeded" });
  assert.deepEqual(pauses, [500, 1000]);
  assert.ok(
    lines.some((l) =>
      l.startsWith("warn log not sent again") && /attempts=3/.test(l) &&
      /refused/i.test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test("runBuild() stops sending the log again once its signal aborts: a stop past the drain timeout does not wait out the retries", async () => {
  await using scene = await resendScene();
  const { run, lines } = scene;
  const stop = new AbortController();
  // The drain timeout ends during the first pause before a retry.
  const pauses: number[] = [];
  const clock = realTimeClock((ms, signal) => {
    pauses.push(ms);
    stop.abort();
    return signal?.aborted ? Promise.reject(signal.reason) : Promise.resolve();
  });
  const building = run.start({
    logServer: scene.logServer,
    clock,
    retries: 4,
    retryDelayMs: 500,
    signal: stop.signal,
  });
  await scene.firstPartStored();
  // The server goes away and stays away.
  await scene.stopReceiver();
  await scene.serverGoneNoticed();
  run.finish();
  assert.deepEqual(await building, { status: "succeeded" });
  assert.deepEqual(pauses, [500], lines.join("\n"));
  assert.ok(
    lines.some((l) =>
      l.startsWith("warn log not sent again") && /attempts=1 /.test(l) &&
      /stopping/.test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test("runBuild() keeps its copy of the log in no named file: a worker killed mid-build leaves none in the temporary directory", async () => {
  await using scene = await resendScene("lorica-spool-");
  const { run, lines } = scene;
  const tmp = `${scene.root}/tmp`;
  await Deno.mkdir(tmp);
  const names = async () => {
    const found = [];
    for await (const entry of Deno.readDir(tmp)) found.push(entry.name);
    return found;
  };
  const building = run.start({ logServer: scene.logServer, spoolDir: tmp });
  await scene.firstPartStored();
  // Mid-build: what is here now is what a SIGKILL would leave.
  assert.deepEqual(await names(), []);
  // The copy still serves: the server restarts, the log is sent again.
  await scene.stopReceiver();
  await scene.restartReceiver();
  await scene.serverGoneNoticed();
  run.finish();
  assert.deepEqual(await building, { status: "succeeded" });
  assert.equal(
    await scene.storedLog(),
    "step 1 of 2\nstep 2 of 2\n",
    lines.join("\n"),
  );
  assert.deepEqual(await names(), []);
});

/**
 * A `guix build` that prints `chunks` chunks of `chunkBytes` as fast as
 * they are read (a builder dumping noise), and reports each read to
 * `onRead`; it exits 0 once all are read.
 */
function floodingBuild(
  chunks: number,
  chunkBytes: number,
  onRead: () => void,
): Spawner {
  return () => {
    const exited = Promise.withResolvers<
      { code: number; signal: string | null }
    >();
    let printed = 0;
    const stderr = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (printed === chunks) {
          controller.close();
          exited.resolve({ code: 0, signal: null });
          return;
        }
        printed++;
        onRead();
        controller.enqueue(new Uint8Array(chunkBytes).fill(printed & 0xff));
      },
    }, { highWaterMark: 0 });
    return {
      pid: 1,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr,
      stdin: null,
      status: exited.promise,
      kill() {},
    };
  };
}

Deno.test("runBuild() reads guix build's output no faster than the log upload takes it (C11 on the worker)", async () => {
  const chunkBytes = 1024 * 1024;
  const chunks = 64;
  let read = 0;
  let sent = 0;
  let mostAhead = 0;
  // An upload that takes a chunk per turn of the event loop: far slower
  // than the builder, as a gzip stream flushed every 64 KiB is.
  const slowUpload: LogUpload = {
    error: undefined,
    async write(chunk) {
      await new Promise((resolve) => setTimeout(resolve, 0));
      sent += chunk.length;
    },
    close: () => Promise.resolve(),
  };
  const outcome = await runBuild({ drv: DRV, timeout: 0, maxSilent: 0 }, {
    guix: new Guix({
      logger: silentLogger,
      spawn: floodingBuild(chunks, chunkBytes, () => {
        read++;
        mostAhead = Math.max(mostAhead, read * chunkBytes - sent);
      }),
    }),
    logger: silentLogger,
    substituteUrls: [],
    logServer: NO_LOG,
    clock: fast,
    openUpload: () => Promise.resolve(slowUpload),
  });
  assert.deepEqual(outcome, { status: "succeeded" });
  assert.equal(sent, chunks * chunkBytes, "the whole log went out");
  // What was read and not sent yet is what the worker holds in memory.
  assert.ok(
    mostAhead <= LOG_BACKLOG_LIMIT_BYTES + 2 * chunkBytes,
    `${mostAhead} bytes read ahead of the upload`,
  );
});
