// A keyed worker session whose key the server (the real dispatcher, worker
// keys required) does not accept: the worker hears the refusal
// ("worker-refused") and says so in its own log, naming the server and the
// key it used, rather than ask for work in vain, none the wiser; and it
// does not say it registered, as it does once a server accepts its key.

import assert from "node:assert/strict";
import { eventually, job, startFixture } from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import { closing, runningSession, sessionOptions } from "./_session_helpers.ts";
import { makeRoot, makeSigningDaemon } from "../../fake-guix/test_env.ts";
import { spawnWorkerProcess } from "../../_worker_process.ts";

/** The secret of key "farm" as the server holds it. */
const SERVER_SECRET = "the-secret-the-server-holds";

/**
 * A dispatcher that takes only workers proving they hold key "farm" with
 * {@link SERVER_SECRET}, as every test here needs.
 */
function keyedFixture(extra: { storeDir?: string } = {}) {
  return startFixture({
    logPort: quietPort(),
    workerKeys: new Map([["farm", SERVER_SECRET]]),
    ...extra,
  });
}

Deno.test({
  name:
    "a session whose worker key the server refuses logs an error naming the server, the key and its file",
  async fn() {
    await using f = closing(await keyedFixture());
    const lines: string[] = [];
    const name = "BADKEY01";
    const [drv] = await f.addJobs([job("guarded", 1)]);
    await using _session = runningSession(
      sessionOptions(f.port, name, lines, {
        authKey: {
          id: "farm",
          secret: "a-secret-the-server-never-saw",
          file: "/etc/lorica/worker.key",
        },
      }),
    );
    const refused =
      `error registration refused worker=${name} server=127.0.0.1:${f.port} reason="bad proof for key \\"farm\\"" key=farm key_file=/etc/lorica/worker.key action="no work until a registration is accepted"`;
    // Refused twice: at the registration, and at the one the server asks
    // for when the session asks for work all the same.
    await eventually(
      () => lines.filter((l) => l === refused).length === 2,
      `two refusals logged\n${lines.join("\n")}`,
    );
    assert.equal(
      f.lines.filter((l) =>
        l.startsWith("warn worker refused ") && l.includes(`worker=${name}`)
      ).length,
      2,
      f.lines.join("\n"),
    );
    // The session asks for work again only once answered: a third
    // request means it read the no-build that follows the second
    // refusal, past which a registration said made would be.
    await eventually(
      () =>
        f.lines.filter((l) => /^(warn|debug) work refused /.test(l))
          .length >= 3,
      `a third work request\nserver:\n${f.lines.join("\n")}`,
    );
    assert.deepEqual(
      lines.filter((l) => / worker registered/.test(l)),
      [],
      "no registration said made",
    );
    const build = await f.store.getBuildByDerivation(drv);
    assert.equal(build?.worker, null, "nothing handed out");
  },
});

Deno.test({
  name:
    "a session whose worker key the server accepts says it registered, once the server says it accepted",
  async fn() {
    await using f = closing(await keyedFixture());
    const lines: string[] = [];
    const name = "GOODKEY1";
    await using _session = runningSession(
      sessionOptions(f.port, name, lines, {
        authKey: { id: "farm", secret: SERVER_SECRET },
      }),
    );
    await eventually(
      () =>
        lines.some((l) =>
          l.startsWith(
            `info worker registered worker=${name} server=127.0.0.1:${f.port} `,
          )
        ),
      `registration logged\n${lines.join("\n")}`,
    );
    assert.ok(!lines.some((l) => l.includes("registration refused")));
  },
});

Deno.test({
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
    const f = await keyedFixture({ storeDir: daemon.storeDir });
    const worker = spawnWorkerProcess([
      `--server=127.0.0.1:${f.port}`,
      "--publish-listen=127.0.0.1",
      "--publish-port=0",
      `--worker-key-file=${keyFile}`,
    ], daemon.env);
    try {
      const refused = new RegExp(
        ` error registration refused worker=\\w+ server=127\\.0\\.0\\.1:${f.port} reason="bad proof for key \\\\"farm\\\\"" key=farm key_file=${keyFile} `,
      );
      assert.ok(await worker.logged(refused), worker.log());
      await eventually(
        () =>
          f.lines.filter((l) => l.startsWith("warn worker refused ")).length ===
            2,
        `two registrations refused\nserver:\n${f.lines.join("\n")}`,
      );
      worker.child.kill("SIGTERM");
      await worker.child.status;
      await worker.reading;
      assert.equal(
        worker.log().match(new RegExp(refused.source, "g"))?.length,
        2,
        worker.log(),
      );
      assert.doesNotMatch(worker.log(), / worker registered/);
    } finally {
      await worker.close();
      await f.close();
      await Deno.remove(root, { recursive: true });
    }
  },
});
