// lorica-worker's command line: a value it cannot use stops it at once with
// status 2, before it connects anywhere.

import assert from "node:assert/strict";

const WORKER = new URL("../../../worker.ts", import.meta.url).pathname;
const SERVER = new URL("../../../server.ts", import.meta.url).pathname;

/**
 * Runs `deno run --allow-all ARGS` (a program and its arguments) with
 * `env` added; returns its exit code and what it printed on stderr.
 */
async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return {
    code: output.code,
    stderr: new TextDecoder().decode(output.stderr),
  };
}

/**
 * Runs ARGS as {@link run} does, asserts that it exits 2 (a usage error),
 * and returns what it printed on stderr.
 */
async function refusedWith(
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const { code, stderr } = await run(args, env);
  assert.equal(code, 2, stderr);
  return stderr;
}

Deno.test("lorica-worker --systems=x86_64 exits 2: not a system name, as the admin API would say", async () => {
  const stderr = await refusedWith([
    WORKER,
    "--systems=x86_64",
    // A loopback address, and a --workers checked later that stops the
    // worker anyway if --systems were accepted.
    "--server=127.0.0.1:1",
    "--workers=0",
  ]);
  assert.match(
    stderr,
    /Cannot use --systems "x86_64": "x86_64" is not a system name/,
  );
});

Deno.test("lorica-worker with a --drain-timeout it cannot use exits 2 at start, not at SIGTERM", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      WORKER,
      "--server=127.0.0.1:1",
      "--publish-listen=127.0.0.1",
      "--publish-port=0",
      "--drain-timeout=5m",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // A worker that started anyway is stopped here: its drain is what failed.
  const timer = setTimeout(() => child.kill("SIGTERM"), 10_000);
  const output = await child.output();
  clearTimeout(timer);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 2, stderr);
  assert.match(
    stderr,
    /Cannot use --drain-timeout "5m": not a positive integer/,
  );
  assert.doesNotMatch(stderr, /guix publish/, "nothing was started");
});

Deno.test("lorica-server and lorica-worker take -u for --user, as Cuirass's programs do", async () => {
  for (const program of [SERVER, WORKER]) {
    // No such account: the lookup stops the program before it starts.
    const stderr = await refusedWith([program, "-u", "lorica-no-such-user"]);
    assert.match(
      stderr,
      /: error: Cannot use --user "lorica-no-such-user": no such user\n$/,
    );
  }
});

Deno.test("lorica-worker takes a --minimum-disk-space of digits only, naming any other value", async () => {
  for (const value of ["Infinity", "0x10", "1e3", " 5", "-1"]) {
    // --workers=0 stops a worker that accepted the value, before it
    // connects anywhere.
    const stderr = await refusedWith([
      WORKER,
      "--server=127.0.0.1:1",
      `--minimum-disk-space=${value}`,
      "--workers=0",
    ]);
    assert.ok(
      stderr.includes(
        `Cannot use --minimum-disk-space ${
          JSON.stringify(value)
        }: not a number of GiB`,
      ),
      stderr,
    );
  }
  const { stderr } = await run([
    WORKER,
    "--server=127.0.0.1:1",
    "--minimum-disk-space=2.5",
    "--workers=0",
  ]);
  assert.match(
    stderr,
    /Cannot use --workers "0"/,
    "2.5 GiB is accepted",
  );
});

Deno.test("lorica-server and lorica-worker refuse options that mean nothing beside another, naming both", async () => {
  const cases: [string, string[], string][] = [
    [
      SERVER,
      ["--no-publish", "--publish-port=6000"],
      'Cannot use --publish-port "6000" with --no-publish: no guix publish runs to listen on it',
    ],
    [
      SERVER,
      ["--build-remote", "--no-advertise", "--advertise-name=farm"],
      'Cannot use --advertise-name "farm" with --no-advertise: the server is not announced with DNS-SD',
    ],
    [
      WORKER,
      ["--server=127.0.0.1:1", "--server-name=farm"],
      'Cannot use --server-name "farm" with --server: a server named by --server is not looked for with DNS-SD',
    ],
  ];
  for (const [program, args, message] of cases) {
    // --web-port and --workers of 0 stop a program that accepted them,
    // before it listens or connects anywhere.
    const stop = program === SERVER ? "--web-port=-1" : "--workers=0";
    const stderr = await refusedWith([program, ...args, stop]);
    assert.ok(stderr.endsWith(`: error: ${message}\n`), stderr);
  }
});

Deno.test("lorica-server and lorica-worker refuse an option given twice, naming it and both values, with no stack trace", async () => {
  // The last value of each stops a program that took it and dropped the
  // first, before it listens or connects anywhere.
  const cases: [string, string[], string][] = [
    [
      SERVER,
      ["--web-port", "8080", "--web-port=-1"],
      'option --web-port given twice ("8080", then "-1")',
    ],
    [
      SERVER,
      ["-p", "6000", "--publish-port=-1"],
      'option --publish-port given twice ("6000" as -p, then "-1")',
    ],
    [
      WORKER,
      ["--server=127.0.0.1:1", "--workers=2", "-w", "0"],
      'option --workers given twice ("2", then "0" as -w)',
    ],
  ];
  for (const [program, args, message] of cases) {
    const stderr = await refusedWith([program, ...args]);
    const name = program === SERVER ? "lorica-server" : "lorica-worker";
    assert.equal(
      stderr,
      `${name}: error: Cannot read the command line: ${message}\n`,
    );
  }
  // The command line still wins over the environment, as documented.
  const stderr = await refusedWith(
    [WORKER, "--server=127.0.0.1:1", "--workers=0"],
    { LORICA_WORKERS: "2" },
  );
  assert.equal(
    stderr,
    'lorica-worker: error: Cannot use --workers "0": not a positive integer\n',
  );
});

Deno.test("lorica-server and lorica-worker with a LORICA_LOG that is no level exit 2 naming it", async () => {
  for (const program of [SERVER, WORKER]) {
    // --web-port and --workers of 0 stop a program that accepted it,
    // before it listens or connects anywhere.
    const stop = program === SERVER
      ? ["--web-port=-1"]
      : ["--server=127.0.0.1:1", "--workers=0"];
    const stderr = await refusedWith([program, ...stop], {
      LORICA_LOG: "warning",
    });
    assert.match(
      stderr,
      /: error: Cannot use LORICA_LOG "warning": not a log level \(debug, info, warn or error\)\n$/,
    );
  }
});

Deno.test("lorica-server refuses an option of the other mode, naming it and --build-remote", async () => {
  const cases: [string[], string][] = [
    [
      ["--backend-port=6000"],
      'Cannot use --backend-port "6000" without --build-remote: only remote mode has workers',
    ],
    [
      ["--worker-keys=/nonexistent"],
      'Cannot use --worker-keys "/nonexistent" without --build-remote: only remote mode has workers',
    ],
    [
      ["--build-remote", "--no-advertise", "--max-jobs=4"],
      'Cannot use --max-jobs "4" with --build-remote: the workers build, not the local daemon',
    ],
  ];
  for (const [args, message] of cases) {
    // A --web-port of -1 stops a server that accepted them, before it
    // listens anywhere.
    const stderr = await refusedWith([SERVER, ...args, "--web-port=-1"]);
    assert.ok(stderr.endsWith(`: error: ${message}\n`), stderr);
  }
});

Deno.test("lorica-worker with a --substitute-urls word that is no URL exits 2 naming it, before any build", async () => {
  const stderr = await refusedWith([
    WORKER,
    "--server=127.0.0.1:1",
    "--substitute-urls=substitutes.example.org",
    // Stops a worker that accepted the list, before it connects.
    "--workers=0",
  ]);
  assert.ok(
    stderr.endsWith(
      ': error: Cannot use --substitute-urls "substitutes.example.org": "substitutes.example.org" is not an http, https or file URL\n',
    ),
    stderr,
  );
});
