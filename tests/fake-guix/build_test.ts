// The fake guix's `guix build`: outputs, logs, failures, limits, messages.

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { parseDerivation } from "../../lib/guix/drv.ts";
import { readSexp } from "../../lib/sexp/read.ts";
import {
  type DaemonEnv,
  evaluate,
  guix,
  makeDaemon,
  makeRoot,
  writeChannels,
  writeScenario,
} from "./test_env.ts";

const SCENARIO = {
  packages: [
    { name: "gmp", version: "6.3.0", behaviour: { seconds: 0.2, logLines: 3 } },
    {
      name: "coreutils",
      version: "9.1",
      inputs: ["gmp"],
      outputs: ["out", "debug"],
      behaviour: {
        seconds: 0.2,
        logLines: 2,
        outputBytes: 5000,
        logText: "raw \u00ff bytes\n",
      },
    },
    {
      name: "broken",
      version: "1.0",
      behaviour: { seconds: 0.1, logLines: 2, exit: 2 },
    },
    { name: "needs-broken", version: "1.0", inputs: ["broken", "gmp"] },
    { name: "slow", version: "1.0", behaviour: { seconds: 5, logLines: 50 } },
    {
      name: "silent",
      version: "1.0",
      behaviour: { seconds: 0.1, logLines: 1, silenceSeconds: 5 },
    },
  ],
};

/** Evaluates the scenario and returns drv paths by package name. */
async function setUp(): Promise<{
  daemon: DaemonEnv;
  drvs: Map<string, string>;
}> {
  const root = await makeRoot();
  const scenario = await writeScenario(root, SCENARIO);
  const daemon = await makeDaemon(root, "server", {
    FAKE_GUIX_SCENARIO: scenario,
  });
  const run = await evaluate(
    daemon,
    await writeChannels(root),
    "all",
    "x86_64-linux",
  );
  assert.equal(run.code, 0, run.stderr);
  const drvs = new Map<string, string>();
  for (const line of run.stdout.trimEnd().split("\n").slice(0, -1)) {
    const job = readSexp(line) as [unknown, ...[unknown, string][]];
    const name = job[1][1].replace(/\.x86_64-linux$/, "");
    drvs.set(name, job[2][1]);
  }
  return { daemon, drvs };
}

function logOf(daemon: DaemonEnv, drv: string): string {
  const base = drv.slice(drv.lastIndexOf("/") + 1);
  return `${daemon.stateDir}/log/guix/drvs/${base.slice(0, 2)}/${
    base.slice(2)
  }.gz`;
}

Deno.test("guix build builds a drv and its inputs, printing only outputs", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const drv = drvs.get("coreutils")!;
    const parsed = parseDerivation(await Deno.readTextFile(drv));
    const root = `${daemon.root}/result`;
    const run = await guix(daemon, ["build", "-r", root, drv]);
    assert.equal(run.code, 0, run.stderr);
    // Outputs sorted by name: debug before out.
    assert.deepEqual(
      run.stdout.trimEnd().split("\n"),
      parsed.outputs.map((output) => output.path),
    );
    assert.match(run.stdout, /-coreutils-9\.1-debug\n.*-coreutils-9\.1\n$/);
    assert.ok(run.stderr.includes(`building ${drvs.get("gmp")}...\n`));
    assert.ok(run.stderr.includes("[coreutils-9.1] step 2 of 2"));

    const data = await Deno.readFile(
      `${parsed.outputs[1].path}/share/coreutils-9.1/data`,
    );
    assert.equal(data.length, 5000);
    const log = gunzipSync(await Deno.readFile(logOf(daemon, drv)));
    assert.deepEqual([...log.subarray(0, 4)], [0x72, 0x61, 0x77, 0x20]);
    assert.equal(log[4], 0xff);
    assert.ok(new TextDecoder().decode(log).includes("step 1 of 2"));

    // Outputs are valid now: a second build prints them with no stderr.
    const again = await guix(daemon, ["build", drv]);
    assert.deepEqual([again.code, again.stdout, again.stderr], [
      0,
      run.stdout,
      "",
    ]);
    const refs = await guix(daemon, [
      "gc",
      "--derivers",
      parsed.outputs[1].path,
    ]);
    assert.equal(refs.stdout, `${drv}\n`);
    const roots = await guix(daemon, ["gc", "--list-roots"]);
    assert.equal(roots.stdout, `${root}-0\n${root}-1\n`);
    assert.equal(await Deno.readLink(`${root}-1`), parsed.outputs[1].path);
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});

Deno.test("guix build reports a failing builder with Guix's exact lines", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const drv = drvs.get("broken")!;
    const run = await guix(daemon, ["build", drv]);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, "");
    assert.deepEqual(run.stderr.trimEnd().split("\n").slice(-4), [
      `builder for \`${drv}' failed with exit code 2`,
      `build of ${drv} failed`,
      `View build log at '${logOf(daemon, drv)}'.`,
      `guix build: error: build of \`${drv}' failed`,
    ]);
    assert.ok(run.stderr.startsWith(
      `The following derivation will be built:\n  ${drv}\nbuilding ${drv}...\n`,
    ));

    const quiet = await guix(daemon, ["build", "-q", drv]);
    assert.equal(
      quiet.stderr,
      `guix build: error: build of \`${drv}' failed\n`,
    );

    const dependent = drvs.get("needs-broken")!;
    const keepGoing = await guix(daemon, ["build", "-k", dependent]);
    assert.equal(keepGoing.code, 1);
    assert.ok(keepGoing.stderr.includes(
      `cannot build derivation \`${dependent}': 1 dependencies couldn't be built\n`,
    ));
    assert.ok(keepGoing.stderr.includes(`building ${drvs.get("gmp")}...`));
    assert.ok(keepGoing.stderr.endsWith(
      `guix build: error: build of \`${dependent}' failed\n`,
    ));
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});

Deno.test("guix build enforces --timeout and --max-silent-time", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const slow = drvs.get("slow")!;
    const timedOut = await guix(daemon, ["build", "--timeout=1", slow]);
    assert.equal(timedOut.code, 1);
    assert.ok(timedOut.stderr.includes(
      `building of \`${slow}' timed out after 1 seconds\nbuild of ${slow} failed\n`,
    ));

    const silent = drvs.get("silent")!;
    const quiet = await guix(daemon, ["build", "--max-silent-time=1", silent]);
    assert.equal(quiet.code, 1);
    assert.ok(quiet.stderr.includes(
      `building of \`${silent}' timed out after 1 seconds of silence\n`,
    ));
    assert.ok(quiet.stderr.endsWith(
      `guix build: error: build of \`${silent}' failed\n`,
    ));
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});

Deno.test("guix build rejects missing drvs, bad options, other systems, max-jobs 0", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const missing = `${daemon.storeDir}/${"0".repeat(32)}-nothing-1.0.drv`;
    const run = await guix(daemon, ["build", missing]);
    assert.equal(run.code, 1);
    assert.ok(run.stderr.includes(
      `cannot build missing derivation \`${missing}'\n`,
    ));

    const bad = await guix(daemon, ["build", "--frobnicate", missing]);
    assert.deepEqual([bad.code, bad.stderr], [
      1,
      "guix build: error: --frobnicate: unrecognized option\n",
    ]);

    const gmp = drvs.get("gmp")!;
    const arm = await guix(daemon, ["build", gmp], {
      env: { FAKE_GUIX_SYSTEMS: "aarch64-linux" },
    });
    assert.equal(arm.code, 1);
    assert.ok(arm.stderr.includes(
      `a \`x86_64-linux' is required to build \`${gmp}', but I am a \`aarch64-linux'\n`,
    ));

    const none = await guix(daemon, ["build", "--max-jobs=0", gmp]);
    assert.equal(none.code, 1);
    assert.ok(none.stderr.endsWith(
      "guix build: error: unable to start any build; either increase `--max-jobs' or enable distributed builds\n",
    ));

    const refs = await guix(daemon, ["gc", "--references", `${missing}x`]);
    assert.equal(refs.code, 1);
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});

Deno.test("guix build takes what follows -- as items only; GUIX_BUILD_OPTIONS still counts and the command line wins", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const gmp = drvs.get("gmp")!;
    const noJobs = { env: { GUIX_BUILD_OPTIONS: "--max-jobs=0" } };
    const none = await guix(daemon, ["build", "--", gmp], noJobs);
    assert.equal(none.code, 1, "the environment's --max-jobs=0 applies");
    assert.ok(none.stderr.includes("unable to start any build"), none.stderr);

    const run = await guix(
      daemon,
      ["build", "--max-jobs=1", "--timeout=60", "--", gmp],
      noJobs,
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /-gmp-6\.3\.0\n$/);

    for (const item of ["--version", "-e", "--expression=(exit 7)"]) {
      const after = await guix(daemon, ["build", "--", item]);
      assert.deepEqual([after.code, after.stdout, after.stderr], [
        1,
        "",
        `guix build: error: ${item}: unknown package\n`,
      ]);
    }
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});

Deno.test("concurrent guix build processes on one daemon agree", async () => {
  const { daemon, drvs } = await setUp();
  try {
    const drv = drvs.get("coreutils")!;
    const runs = await Promise.all([
      guix(daemon, ["build", drv]),
      guix(daemon, ["build", drv]),
    ]);
    for (const run of runs) assert.equal(run.code, 0, run.stderr);
    assert.equal(runs[0].stdout, runs[1].stdout);
    assert.equal(runs[0].stdout.split("\n").length, 3);
  } finally {
    await Deno.remove(daemon.root, { recursive: true });
  }
});
