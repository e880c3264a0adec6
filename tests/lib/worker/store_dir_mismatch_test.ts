// A worker whose store directory is not the server's, against the real
// dispatcher: told the server's store in lorica-welcome, it takes no build
// (and kills the one under way, when the server restarts on another store)
// and stops with an error naming both directories; no build of the queue
// turns failed.

import assert from "node:assert/strict";
import {
  runSession,
  type SessionOptions,
  StoreDirMismatchError,
} from "../../../lib/worker/session.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
  STORE_DIR,
  within,
} from "../server/_dispatch_fixture.ts";
import { makeRoot, makeSigningDaemon } from "../../fake-guix/test_env.ts";
import { quietPort } from "../../_ports.ts";
import { closing, sessionOptions } from "./_session_helpers.ts";

const WORKER = new URL("../../../worker.ts", import.meta.url).pathname;
const FAKE_GUIX_DIR = new URL("../../fake-guix", import.meta.url).pathname;

/** Asserts that every build of `drvs` is still waiting, held by nobody. */
async function stillQueued(f: Fixture, drvs: string[]) {
  for (const drv of drvs) {
    const build = await f.store.getBuildByDerivation(drv);
    assert.equal(build?.status, BuildStatus.scheduled, drv);
    assert.equal(build?.worker, null, drv);
  }
}

/**
 * What a session named `name` of store /srv/other-store against `f` ends
 * with (its error), waited for at most 10 s.
 */
function otherStoreSessionEnd(
  f: Fixture,
  name: string,
  lines: string[],
  extra: Partial<SessionOptions> = {},
): Promise<unknown> {
  const running = runSession(
    sessionOptions(f.port, name, lines, {
      storeDir: "/srv/other-store",
      ...extra,
    }),
    AbortSignal.timeout(10_000),
  );
  return within(
    running.then(() => undefined, (error) => error),
    10_000,
    "session end",
  );
}

Deno.test({
  name:
    "a Lorica worker session of another store than the server's ends with an error naming both, having registered not",
  async fn() {
    await using f = closing(await startFixture({ logPort: quietPort() }));
    const lines: string[] = [];
    const drvs = await f.addJobs([job("hello", 1), job("world", 2)]);
    const error = await otherStoreSessionEnd(f, "ELSEWHR1", lines);
    assert.ok(error instanceof StoreDirMismatchError, String(error));
    assert.equal(
      error.message,
      `Cannot build for the server at 127.0.0.1:${f.port}: its store directory is "${STORE_DIR}", this worker's (NIX_STORE_DIR) is "/srv/other-store"`,
    );
    assert.deepEqual(
      lines.filter((l) => l.startsWith("error ")),
      [
        `error store directory mismatch worker=ELSEWHR1 server=127.0.0.1:${f.port} server_store_dir=${STORE_DIR} store_dir=/srv/other-store action="no builds taken, worker stopping"`,
      ],
    );
    assert.ok(
      !f.lines.some((l) => l.startsWith("info worker ready ")),
      f.lines.join("\n"),
    );
    await stillQueued(f, drvs);
  },
});

Deno.test({
  name:
    "a worker of another store serving a server that does not say its own (Cuirass) fails the first build it is sent, then ends with the error naming both; the rest stay queued",
  async fn() {
    await using f = closing(await startFixture({ logPort: quietPort() }));
    const lines: string[] = [];
    const drvs = await f.addJobs([job("hello", 1), job("world", 2)]);
    const error = await otherStoreSessionEnd(f, "ELSEWHR2", lines, {
      extensions: false,
    });
    assert.ok(error instanceof StoreDirMismatchError, String(error));
    assert.equal(error.serverStoreDir, STORE_DIR);
    assert.deepEqual(
      lines.filter((l) => l.startsWith("error ")),
      [
        `error store directory mismatch worker=ELSEWHR2 server=127.0.0.1:${f.port} server_store_dir=${STORE_DIR} store_dir=/srv/other-store action="build reported failed, worker stopping"`,
      ],
    );
    const statuses = () =>
      Promise.all(
        drvs.map(async (drv) =>
          (await f.store.getBuildByDerivation(drv))?.status
        ),
      );
    await eventually(
      async () => (await statuses()).includes(BuildStatus.failed),
      "the failure recorded",
    );
    assert.deepEqual(
      (await statuses()).toSorted(),
      [BuildStatus.scheduled, BuildStatus.failed].toSorted(),
      "one failed, the other still queued",
    );
  },
});

/** guix builds that run until killed; `killed` counts those that were. */
function lingeringBuilds() {
  const state = { started: 0, killed: 0 };
  const spawn: Spawner = (_argv, options) => {
    state.started++;
    const status = Promise.withResolvers<
      { code: number; signal: string | null }
    >();
    const stop = new AbortController();
    const kill = () => {
      if (stop.signal.aborted) return;
      state.killed++;
      stop.abort();
      status.resolve({ code: 143, signal: "SIGTERM" });
    };
    if (options?.signal?.aborted) queueMicrotask(kill);
    else options?.signal?.addEventListener("abort", kill, { once: true });
    const open = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          stop.signal.addEventListener("abort", () => controller.close(), {
            once: true,
          });
        },
      });
    const child: Child = {
      pid: 4242,
      stdout: open(),
      stderr: open(),
      stdin: null,
      status: status.promise,
      kill,
    };
    return child;
  };
  return {
    state,
    guix: new Guix({ logger: createLogger({ sink: () => {} }), spawn }),
  };
}

Deno.test({
  name:
    "a server restarted mid-build on another store: the session kills its guix build and ends with the error naming both",
  async fn() {
    let f = await startFixture({ logPort: quietPort() });
    let firstRoot: string | undefined;
    const lines: string[] = [];
    const { state, guix } = lingeringBuilds();
    try {
      const [drv] = await f.addJobs([job("long", 1)]);
      const running = runSession(
        sessionOptions(f.port, "MOVED001", lines, { guix }),
        AbortSignal.timeout(20_000),
      ).then(() => undefined, (error) => error);
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.started,
        "build started",
      );
      const port = f.port;
      firstRoot = f.root;
      await f.close(true);
      f = await startFixture({
        database: f.database,
        port,
        storeDir: "/srv/new-store",
      });
      const error = await within(running, 10_000, "session end");
      assert.ok(error instanceof StoreDirMismatchError, String(error));
      assert.equal(error.serverStoreDir, "/srv/new-store");
      assert.equal(error.storeDir, STORE_DIR);
      assert.deepEqual(state, { started: 1, killed: 1 });
    } finally {
      await f.close();
      if (firstRoot) await Deno.remove(firstRoot, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "lorica-worker whose NIX_STORE_DIR is not the server's store exits 1 naming both, and no build turns failed",
  async fn() {
    const f = await startFixture({ logPort: quietPort() });
    const root = await makeRoot();
    try {
      const drvs = await f.addJobs([job("hello", 1), job("world", 2)]);
      // Its own store, and a key for its guix publish.
      const daemon = await makeSigningDaemon(root, "worker");
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          WORKER,
          `--server=127.0.0.1:${f.port}`,
          "--publish-listen=127.0.0.1",
          "--publish-port=0",
          "--workers=2",
        ],
        env: {
          ...daemon.env,
          PATH: `${FAKE_GUIX_DIR}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
          LORICA_LOG: "info",
          REQUEST_PERIOD: "1",
        },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      // A worker that does not stop is stopped here, by its pid.
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      const output = await child.output();
      clearTimeout(timer);
      const stderr = new TextDecoder().decode(output.stderr);

      assert.equal(output.code, 1, stderr);
      assert.ok(
        stderr.endsWith(
          `\nlorica-worker: error: Cannot build for the server at 127.0.0.1:${f.port}: its store directory is "${STORE_DIR}", this worker's (NIX_STORE_DIR) is "${daemon.storeDir}"\n`,
        ),
        stderr,
      );
      // Said by each session that got the welcome before the first one
      // stopped the worker (the other may drain before it asks); the
      // worker stops once.
      const said = stderr.match(
        new RegExp(
          ` error store directory mismatch worker=\\w+ server=127\\.0\\.0\\.1:${f.port} server_store_dir=${STORE_DIR} store_dir=${daemon.storeDir} `,
          "g",
        ),
      )?.length ?? 0;
      assert.ok(said === 1 || said === 2, stderr);
      assert.equal(
        stderr.match(/ error worker stopping /g)?.length,
        1,
        stderr,
      );
      await stillQueued(f, drvs);
    } finally {
      await f.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
