// lorica-server's startup checks: a path or database option that cannot be
// used stops the server at once with status 2 (1 for a database that
// refuses it), naming the option actually at fault, and leaves no admin
// token behind; a PostgreSQL that is down is waited for; doubtful settings
// are warned about at start. Each run is local mode on port 0 in a temp
// directory (remote mode only inside a network namespace of its own); one
// that starts where it should not is stopped after a while and fails its
// test.

import assert from "node:assert/strict";
import { postgresBinaries, startOwnPostgres } from "../store/_own_postgres.ts";
import {
  HOLDER_RENEWAL_SECONDS,
  MAX_WORKER_TIMEOUT_SECONDS,
  MIN_WORKER_TIMEOUT_SECONDS,
} from "../../../lib/server/local_holder.ts";
import {
  NEEDS_POSTGRES,
  TEST_POSTGRES_URL,
  WITHOUT_POSTGRES,
} from "../../_test_postgres.ts";

const SERVER = new URL("../../../server.ts", import.meta.url).pathname;

interface Run {
  code: number;
  stderr: string;
  /** Milliseconds from the SIGTERM to the exit, if one was sent. */
  stopMs?: number;
}

/** Extra ways to start the server; see {@link runServer}. */
interface RunOptions {
  env?: Record<string, string>;
  /** A command the server runs under (its argv is appended). */
  wrapper?: string[];
  /** Once stderr matches it, the server is sent SIGTERM. */
  stopAt?: RegExp;
  /**
   * Called with all of stderr each time more arrives; the server is sent
   * SIGTERM once it returns true.
   */
  watch?: (stderr: string) => Promise<boolean>;
  /** Arguments appended as they are (`--cache=`, an empty value). */
  extraArgs?: string[];
}

/**
 * Runs lorica-server in `dir` with its paths in `dir` (`--database`,
 * `--cache`, `--gc-roots`), as changed by `options` (null drops one), until
 * it exits, or until its stderr matches `stopAt`; one still running after
 * 30 s is stopped too.
 */
async function runServer(
  dir: string,
  options: Record<string, string | null> = {},
  { env = {}, wrapper = [], stopAt, watch, extraArgs = [] }: RunOptions = {},
): Promise<Run> {
  const paths: Record<string, string | null> = {
    database: `${dir}/farm.db`,
    cache: `${dir}/cache`,
    "gc-roots": `${dir}/roots`,
    "web-listen": "127.0.0.1",
    "web-port": "0",
    ...options,
  };
  const argv = [
    Deno.execPath(),
    "run",
    "--allow-all",
    SERVER,
    "--no-publish",
    ...(options["build-remote"] === undefined ? ["--no-advertise"] : []),
    ...Object.entries(paths).filter(([, value]) => value !== null)
      .map(([name, value]) =>
        value === "" ? `--${name}` : `--${name}=${value}`
      ),
    ...extraArgs,
  ];
  const command = [...wrapper, ...argv];
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    cwd: dir,
    env: { XDG_STATE_HOME: `${dir}/state-home`, LORICA_LOG: "error", ...env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stoppedAt: number | undefined;
  const stop = () => {
    // Once: a second SIGTERM is not what these tests are about.
    if (stoppedAt === undefined) child.kill("SIGTERM");
    stoppedAt ??= performance.now();
  };
  const timer = setTimeout(stop, 30_000);
  try {
    let stderr = "";
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      stderr += text;
      if (stopAt?.test(stderr) || await watch?.(stderr)) stop();
    }
    const { code } = await child.status;
    const stopMs = stoppedAt === undefined
      ? undefined
      : performance.now() - stoppedAt;
    return { code, stderr, stopMs };
  } finally {
    clearTimeout(timer);
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-startup-" });
  try {
    await Deno.writeTextFile(`${dir}/afile`, "");
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("lorica-server with an unusable --gc-roots exits 2 naming it, before writing anything", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { "gc-roots": `${dir}/afile/roots` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`Cannot use --gc-roots "${dir}/afile/roots": `),
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
    assert.ok(!exists(`${dir}/farm.db`), "no database");
  });
});

Deno.test("lorica-server with --database in a directory that does not exist exits 2 and creates nothing", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { database: `${dir}/missing/farm.db` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(
        `Cannot use --database "${dir}/missing/farm.db": directory "${dir}/missing" does not exist`,
      ),
    );
    assert.ok(!exists(`${dir}/missing`));
  });
});

Deno.test("lorica-server with a --database that is a directory exits 2 naming it, leaving no admin token", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/state`);
    const run = await runServer(dir, { database: `${dir}/state` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(
        `^lorica-server: error: Cannot use --database "${dir}/state": a directory, not a database file \\(such as "${dir}/state/lorica.db"\\)\n$`,
      ),
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server with a --database that is no SQLite file exits 2 naming it, leaving the file as it was", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/farm.db`;
    await Deno.writeTextFile(path, "these are not the builds you seek\n");
    const run = await runServer(dir, { database: path });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(
        `^lorica-server: error: Cannot use --database "${path}": not a SQLite database \\(its first bytes are not SQLite's header\\)\n$`,
      ),
    );
    assert.equal(
      await Deno.readTextFile(path),
      "these are not the builds you seek\n",
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server with a --ttl that is a bare number exits 2 naming it, once", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, {}, { extraArgs: ["--ttl=30"] });
    assert.equal(run.code, 2, run.stderr);
    assert.equal(
      run.stderr,
      `lorica-server: error: Cannot use --ttl "30": not a duration (a number, then s, h, d, w, or m for months of 30 days)\n`,
    );
  });
});

Deno.test("lorica-server names --database, not --state-directory, when the database's directory is a file", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { database: `${dir}/afile/farm.db` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(
        `Cannot use --database "${dir}/afile/farm.db": "${dir}/afile" is not a directory`,
      ),
    );
    assert.doesNotMatch(run.stderr, /--state-directory/);
  });
});

Deno.test("lorica-server with an unusable --cache exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { cache: `${dir}/afile/logs` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`Cannot use --cache "${dir}/afile/logs": Not a directory`),
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server refuses an empty --database or --worker-keys by name, starting nothing", async () => {
  // Taken as given, an empty --database was a temporary SQLite database
  // (and the admin token written to the current directory), an empty
  // --worker-keys a server accepting any worker.
  await withDir(async (dir) => {
    for (const option of ["database", "worker-keys"]) {
      const run = await runServer(dir, { [option]: null }, {
        extraArgs: [`--${option}=`],
        env: { LORICA_LOG: "info" },
        stopAt: /server started/,
      });
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(`^lorica-server: error: Cannot use --${option} "": `),
      );
      assert.ok(!exists(`${dir}/admin-token`), "no admin token");
    }
  });
});

Deno.test("a second lorica-server on a SQLite database in use exits 1 naming the first's pid, and the first goes on", async () => {
  // Two servers on one SQLite file took each other's work: the second
  // resumed the first's output fetches and expired its workers.
  await withDir(async (dir) => {
    let second: Run | undefined;
    const first = await runServer(dir, {}, {
      env: { LORICA_LOG: "info" },
      watch: async (stderr) => {
        if (!/server started/.test(stderr)) return false;
        second ??= await runServer(dir, { cache: `${dir}/cache2` });
        return true;
      },
    });
    assert.ok(second !== undefined, first.stderr);
    assert.equal(second.code, 1, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(
        `^lorica-server: error: Cannot use SQLite database "${dir}/farm.db": another lorica-server \\(pid \\d+\\) uses it`,
      ),
    );
    assert.equal(first.code, 0, first.stderr);
    // The claim ends with its server: a restart takes the database.
    const again = await runServer(dir, {}, {
      env: { LORICA_LOG: "info" },
      stopAt: /server started/,
    });
    assert.equal(again.code, 0, again.stderr);
  });
});

Deno.test("lorica-server rejects a --database URL of an unknown scheme", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { database: "mysql://x/y" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --database "mysql:\/\/x\/y": unknown scheme "mysql:\/\/"/,
    );
    assert.ok(!exists(`${dir}/mysql:`), "no SQLite file of that name");
  });
});

Deno.test("lorica-server with a conninfo --database it cannot read exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, {
      database: "dbname=farm port=99999 password=secretpw",
    });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /Cannot use --database .*port "99999"/);
    assert.doesNotMatch(run.stderr, /secretpw/);
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server quotes a --database it cannot read once, in an exact message", async () => {
  const cases: [string, string][] = [
    [
      "dbname=farm port=99999 password=secretpw",
      `"dbname=farm port=99999 password=***": port "99999" is not a port number`,
    ],
    ["dbname='farm", `"dbname='farm": a quoted value is not closed`],
    [
      "dbname=farm host=127.0.0.1 bogus",
      `"dbname=farm host=127.0.0.1 bogus": expected key=value pairs, not "bogus"`,
    ],
    ["postgres://a b/farm", `"postgres://a b/farm": not a well-formed URL`],
    [
      "mysql://root:pw@x/y",
      `"mysql://root:***@x/y": unknown scheme "mysql://" (expected a SQLite file name, a postgres:// URL or "dbname=... host=...")`,
    ],
  ];
  for (const [database, expected] of cases) {
    await withDir(async (dir) => {
      const run = await runServer(dir, { database });
      assert.equal(run.code, 2, run.stderr);
      assert.equal(
        run.stderr,
        `lorica-server: error: Cannot use --database ${expected}\n`,
      );
    });
  }
});

Deno.test("lorica-server with a --base-url that is not an http(s) URL exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { "base-url": "ci.example.org" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --base-url "ci\.example\.org": not an http\(s\) URL/,
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server with an --evaluation-timeout that is not a whole number exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { "evaluation-timeout": "3h" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --evaluation-timeout "3h": not a whole number of 0 or more/,
    );
  });
});

Deno.test("lorica-server with a --max-worker-connections-per-address of 0 exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, {
      "build-remote": "",
      "no-advertise": "",
      listen: "127.0.0.1",
      "backend-port": "0",
      "log-port": "0",
      "max-worker-connections-per-address": "0",
    });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --max-worker-connections-per-address "0": /,
    );
  });
});

Deno.test("lorica-server with a --database-timeout that is not a whole number exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { "database-timeout": "1m" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --database-timeout "1m": not a whole number of 0 or more/,
    );
  });
});

Deno.test("lorica-server with a --database-timeout longer than a timer holds exits 2 naming it", async () => {
  // 2147484 s is 2^31 ms and more: such a timer fires at once, and every
  // query would time out as soon as it is sent.
  await withDir(async (dir) => {
    const run = await runServer(dir, { "database-timeout": "2147484" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --database-timeout "2147484": more than 2147483 \(/,
    );
  });
});

Deno.test("lorica-server with a --listen or --web-listen that is not an IP address exits 2 naming it, before any lookup", async () => {
  for (const option of ["listen", "web-listen"]) {
    await withDir(async (dir) => {
      // ".invalid" names nothing (RFC 6761): were it looked up, nothing
      // would answer it.
      const run = await runServer(dir, { [option]: "farm.invalid" });
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(
          `Cannot use --${option} "farm\\.invalid": not an IP address`,
        ),
      );
      assert.ok(!exists(`${dir}/admin-token`), "no admin token");
    });
  }
});

Deno.test("lorica-server with a --mastodon-url that is not an http(s) URL exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { "mastodon-url": "mastodon.example" });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      /Cannot use --mastodon-url "mastodon\.example": not an http\(s\) URL/,
    );
    assert.ok(!exists(`${dir}/admin-token`), "no admin token");
  });
});

Deno.test("lorica-server with a missing --specifications file exits 2 naming it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, { specifications: `${dir}/specs.scm` });
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`Cannot read --specifications "${dir}/specs.scm": `),
    );
  });
});

Deno.test("lorica-server waits for a PostgreSQL that does not answer, logging it without its password, until SIGTERM ends it with status 0", async () => {
  await withDir(async (dir) => {
    const waits = /warn database unavailable .*\n.*warn database unavailable /;
    const run = await runServer(dir, {
      // Port 1 on loopback: nothing listens there.
      database: "postgres://lorica:secretpw@127.0.0.1:1/farm",
    }, { env: { LORICA_LOG: "warn" }, stopAt: waits });
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stderr,
      /warn database unavailable database=postgres:\/\/lorica:\*\*\*@127\.0\.0\.1:1\/farm error=.*ECONNREFUSED.* retryMs=1000\n.* retryMs=2000\n/,
    );
    assert.doesNotMatch(run.stderr, /secretpw/);
    // Stopped in the middle of the 2 s wait, not at its end.
    assert.ok(run.stopMs! < 1800, `stopped after ${run.stopMs} ms`);
    assert.ok(
      !exists(`${dir}/state-home/lorica/admin-token`),
      "no admin token",
    );
  });
});

const postgresBin = postgresBinaries();

Deno.test({
  name:
    `lorica-server started before its PostgreSQL comes up once it is started${
      postgresBin === null
        ? " (skipped: no PostgreSQL server binaries in /usr/lib/postgresql)"
        : ""
    }`,
  ignore: postgresBin === null,
  async fn() {
    const cluster = await startOwnPostgres(postgresBin!);
    try {
      await cluster.stop("fast");
      await withDir(async (dir) => {
        let clusterStarted = false;
        let answer: number | string | undefined;
        const run = await runServer(dir, { database: cluster.url }, {
          env: { LORICA_LOG: "info" },
          async watch(stderr) {
            if (!clusterStarted && /warn database unavailable /.test(stderr)) {
              clusterStarted = true;
              await cluster.start();
            }
            const web = /info server started .*web=(http:\S+)/.exec(stderr);
            if (web === null || answer !== undefined) return web !== null;
            try {
              const response = await fetch(`${web[1]}/api/latestbuilds?nr=1`);
              answer = response.status;
              await response.body?.cancel();
            } catch (error) {
              answer = String(error);
            }
            return true;
          },
        });
        assert.equal(answer, 200, run.stderr);
        assert.equal(run.code, 0, run.stderr);
      });
    } finally {
      await cluster.remove();
    }
  },
});

Deno.test({
  name:
    `lorica-server with a PostgreSQL --database naming no database exits 1 naming it, without waiting${NEEDS_POSTGRES}`,
  ignore: WITHOUT_POSTGRES,
  async fn() {
    await withDir(async (dir) => {
      const database = new URL(TEST_POSTGRES_URL!);
      database.pathname = "/lorica_no_such_database";
      const run = await runServer(dir, { database: database.href }, {
        env: { LORICA_LOG: "warn" },
      });
      assert.equal(run.code, 1, run.stderr);
      assert.match(
        run.stderr,
        /Cannot use --database ".*\/lorica_no_such_database": .*does not exist/,
      );
      assert.doesNotMatch(run.stderr, /database unavailable/);
    });
  },
});

Deno.test("lorica-server that cannot listen on its web port leaves no admin token", async () => {
  await withDir(async (dir) => {
    const holder = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const run = await runServer(dir, {
        "web-port": String(holder.addr.port),
      });
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /Address already in use/);
      assert.ok(!exists(`${dir}/admin-token`), "no admin token");
    } finally {
      holder.close();
    }
  });
});

Deno.test("lorica-server in remote mode with a --worker-timeout not above the workers' 60 s ping interval warns at start", async () => {
  await withDir(async (dir) => {
    const warning =
      /warn worker timeout shorter than the ping interval timeout=30 ping=60/;
    const run = await runServer(dir, {
      "worker-timeout": "30",
      "build-remote": "",
      "no-advertise": "",
      listen: "127.0.0.1",
      "backend-port": "0",
      "log-port": "0",
    }, {
      env: { LORICA_LOG: "warn" },
      stopAt: warning,
    });
    assert.match(run.stderr, warning);
  });
});

for (const mode of ["local", "remote"]) {
  Deno.test(`lorica-server in ${mode} mode refuses a --worker-timeout below the shortest accepted, naming the value: its sweep would expire the live holders of servers in local mode sharing the database`, async () => {
    await withDir(async (dir) => {
      const remote = {
        "build-remote": "",
        "no-advertise": "",
        listen: "127.0.0.1",
        "backend-port": "0",
        "log-port": "0",
      };
      const run = await runServer(dir, {
        "worker-timeout": String(MIN_WORKER_TIMEOUT_SECONDS - 1),
        ...(mode === "remote" ? remote : {}),
      });
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(
          `Cannot use --worker-timeout "${
            MIN_WORKER_TIMEOUT_SECONDS - 1
          }": less than ${MIN_WORKER_TIMEOUT_SECONDS} \\(servers in local mode sharing the database renew their rows every ${HOLDER_RENEWAL_SECONDS} s`,
        ),
      );
      assert.ok(!exists(`${dir}/admin-token`), "no admin token");
    });
  });
}

Deno.test("lorica-server refuses a --worker-timeout above a year, or beyond what a number holds exactly, naming the value", async () => {
  for (const value of [MAX_WORKER_TIMEOUT_SECONDS + 1, 2 ** 53 + 2]) {
    await withDir(async (dir) => {
      const run = await runServer(dir, { "worker-timeout": String(value) });
      assert.equal(run.code, 2, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(`Cannot use --worker-timeout "${value}": more than \\d+`),
      );
    });
  }
});

Deno.test("lorica-server in local mode does not warn of the workers' ping interval at the shortest --worker-timeout: none pings it, and its holder name is renewed at a fixed pace well within it", async () => {
  await withDir(async (dir) => {
    const run = await runServer(dir, {
      "worker-timeout": String(MIN_WORKER_TIMEOUT_SECONDS),
    }, {
      env: { LORICA_LOG: "info" },
      stopAt: /info server started mode=local/,
    });
    assert.match(run.stderr, /info server started mode=local/);
    assert.doesNotMatch(run.stderr, /ping interval/);
  });
});

Deno.test("lorica-server whose --gc-roots the daemon never walks warns at start, naming both directories and the state directory it assumed", async () => {
  await withDir(async (dir) => {
    const daemonState = `${dir}/guix-state`;
    const inside = /warn gc roots outside the daemon's/;
    const run = await runServer(dir, { "gc-roots": `${dir}/roots` }, {
      env: { LORICA_LOG: "warn", GUIX_STATE_DIRECTORY: daemonState },
      stopAt: inside,
    });
    assert.match(
      run.stderr,
      new RegExp(
        `warn gc roots outside the daemon's dir=${dir}/roots daemonRoots="${daemonState}/gcroots ${daemonState}/profiles" stateDirectory=${daemonState} stateSource=GUIX_STATE_DIRECTORY hint="the daemon walks only ${daemonState}/gcroots and ${daemonState}/profiles if its state directory is ${daemonState} \\(from GUIX_STATE_DIRECTORY\\): give a --gc-roots under one of them \\(the daemon follows no link to a directory elsewhere\\), or give lorica-server the daemon's own state directory as GUIX_STATE_DIRECTORY"`,
      ),
    );
    // Within either of the daemon's trees: no warning.
    for (const tree of ["gcroots", "profiles"]) {
      const quiet = await runServer(
        dir,
        { "gc-roots": `${daemonState}/${tree}/lorica` },
        {
          // Stopped once started: the warning comes before, if at all.
          // (A local-mode server gives no worker timeout warning to stop
          // at: waiting for one held each run for the 30-s fallback.)
          env: { LORICA_LOG: "info", GUIX_STATE_DIRECTORY: daemonState },
          stopAt: /info server started/,
        },
      );
      assert.doesNotMatch(quiet.stderr, inside, tree);
    }
  });
});

Deno.test("lorica-server whose GUIX_DAEMON_SOCKET names a daemon over the network warns that its --gc-roots may be out of that daemon's sight, wherever they lie", async () => {
  await withDir(async (dir) => {
    const daemonState = `${dir}/guix-state`;
    const warning = /warn gc roots unseen by a daemon over the network/;
    // Nothing connects to it: lorica-server reaches the daemon only
    // through the (fake) guix commands it runs.
    const run = await runServer(
      dir,
      { "gc-roots": `${daemonState}/gcroots/lorica` },
      {
        env: {
          LORICA_LOG: "warn",
          GUIX_STATE_DIRECTORY: daemonState,
          GUIX_DAEMON_SOCKET: "guix://builder:pw@127.0.0.1:1",
        },
        stopAt: warning,
      },
    );
    assert.match(
      run.stderr,
      new RegExp(
        `warn gc roots unseen by a daemon over the network dir=${daemonState}/gcroots/lorica daemon=guix://127.0.0.1:1 hint="GUIX_DAEMON_SOCKET names a daemon reached over the network: if it runs on another machine, `,
      ),
    );
    assert.doesNotMatch(run.stderr, /pw/);
    assert.doesNotMatch(run.stderr, /gc roots outside the daemon's/);
  });
});

const hostStateDirectory = Deno.env.get("GUIX_STATE_DIRECTORY");

Deno.test({
  name:
    "lorica-server started without GUIX_STATE_DIRECTORY says its --gc-roots warning assumes the default state directory" +
    (hostStateDirectory === undefined
      ? ""
      : " (skipped: GUIX_STATE_DIRECTORY is set here, and the server inherits it)"),
  ignore: hostStateDirectory !== undefined,
  async fn() {
    await withDir(async (dir) => {
      const warning = /warn gc roots outside the daemon's/;
      const run = await runServer(dir, { "gc-roots": `${dir}/roots` }, {
        env: { LORICA_LOG: "warn" },
        stopAt: warning,
      });
      assert.match(
        run.stderr,
        new RegExp(
          `warn gc roots outside the daemon's dir=${dir}/roots daemonRoots="/var/guix/gcroots /var/guix/profiles" stateDirectory=/var/guix stateSource=default hint="the daemon walks only /var/guix/gcroots and /var/guix/profiles if its state directory is /var/guix \\(the default, GUIX_STATE_DIRECTORY being unset\\): `,
        ),
      );
    });
  },
});

Deno.test({
  name:
    "lorica-server --build-remote with only loopback up warns that it cannot advertise and keeps serving",
  // A network namespace of its own: only loopback, so nothing can leave it.
  ignore: Deno.uid() !== 0,
  async fn() {
    await withDir(async (dir) => {
      const run = await runServer(dir, {
        "build-remote": "",
        listen: "127.0.0.1",
        "backend-port": "0",
        "log-port": "0",
      }, {
        env: { LORICA_LOG: "warn" },
        wrapper: [
          "unshare",
          "--net",
          "sh",
          "-c",
          'ip link set lo up && exec "$0" "$@"',
        ],
        stopAt: /advertising failed/,
      });
      assert.match(run.stderr, /warn advertising failed .*only loopback is up/);
      // Stopped by the signal, not by the failure.
      assert.equal(run.code, 0, run.stderr);
    });
  },
});
