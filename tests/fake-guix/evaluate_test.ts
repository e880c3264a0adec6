// The fake guix's evaluation: job lines, .drv files, determinism, channels.

import assert from "node:assert/strict";
import { derivationOutputPaths, parseDerivation } from "../../lib/guix/drv.ts";
import { type Datum, isSym } from "../../lib/sexp/datum.ts";
import { readSexp } from "../../lib/sexp/read.ts";
import {
  evaluate,
  guix,
  makeDaemon,
  makeRoot,
  writeChannels,
  writeScenario,
} from "./test_env.ts";

const SCENARIO = {
  packages: [
    { name: "gmp", version: "6.3.0", behaviour: { seconds: 0.1, logLines: 2 } },
    { name: "acl", version: "2.3.1", outputs: ["out", "doc"] },
    {
      name: "coreutils",
      version: "9.1",
      inputs: ["acl", "gmp"],
      timeout: 1000,
      maxSilentTime: 60,
      behaviour: { seconds: 1.5, logLines: 40, outputBytes: 2048 },
    },
    { name: "hello", version: "2.12", inputs: ["coreutils"] },
    { name: "grub", version: "2.12", systems: ["x86_64-linux"] },
  ],
};

/** The fields of one `(job …)` datum. */
function jobFields(datum: Datum): Map<string, Datum[]> {
  assert.ok(Array.isArray(datum) && isSym(datum[0], "job"));
  const fields = new Map<string, Datum[]>();
  for (const field of (datum as Datum[]).slice(1)) {
    assert.ok(Array.isArray(field) && isSym(field[0]));
    fields.set(String(field[0]), field.slice(1));
  }
  return fields;
}

Deno.test("time-machine repl evaluates a 5-package scenario for two systems", async () => {
  const root = await makeRoot();
  try {
    const scenario = await writeScenario(root, SCENARIO);
    const daemon = await makeDaemon(root, "server", {
      FAKE_GUIX_SCENARIO: scenario,
    });
    const channels = await writeChannels(root);

    for (const system of ["x86_64-linux", "i686-linux"]) {
      const run = await evaluate(daemon, channels, "all", system);
      assert.equal(run.code, 0, run.stderr);
      assert.match(
        run.stderr,
        /Updating channel 'guix' from Git repository at 'https:\/\/git\.example\.org\/guix\.git'\.\.\./,
      );
      const lines = run.stdout.trimEnd().split("\n");
      const expected = system === "x86_64-linux"
        ? ["gmp", "acl", "coreutils", "hello", "grub"]
        : ["gmp", "acl", "coreutils", "hello"];
      assert.equal(lines.length, expected.length + 1);
      assert.equal(lines.at(-1), `(done ${expected.length})`);

      const jobs = lines.slice(0, -1).map((line) => jobFields(readSexp(line)));
      const drvByName = new Map<string, string>();
      for (const [index, job] of jobs.entries()) {
        const name = expected[index];
        assert.deepEqual(job.get("name"), [`${name}.${system}`]);
        assert.deepEqual(job.get("system"), [system]);
        const [drvPath] = job.get("derivation") as string[];
        drvByName.set(name, drvPath);
        assert.ok(drvPath.startsWith(`${daemon.storeDir}/`));

        const drv = parseDerivation(await Deno.readTextFile(drvPath));
        assert.equal(drv.system, system);
        const outputs = job.get("outputs") as [string, string][];
        assert.deepEqual(outputs, [...derivationOutputPaths(drv)]);
        assert.deepEqual(
          job.get("inputs"),
          drv.inputDrvs.map((input) => input.path),
        );
        const env = new Map(drv.env);
        assert.ok(env.has("fake-seconds") && env.has("fake-log-text"));

        // Every drv is valid for this daemon: `gc --references` answers.
        const refs = await guix(daemon, ["gc", "--references", drvPath]);
        assert.equal(refs.code, 0, refs.stderr);
      }
      const coreutils = jobs[2];
      assert.deepEqual(coreutils.get("nix-name"), ["coreutils-9.1"]);
      assert.deepEqual(coreutils.get("timeout"), [1000]);
      assert.deepEqual(coreutils.get("max-silent-time"), [60]);
      assert.deepEqual(
        coreutils.get("inputs"),
        [drvByName.get("acl"), drvByName.get("gmp")].sort(),
      );
      assert.deepEqual(jobs[0].get("timeout"), [72000]);
      assert.deepEqual(
        (jobs[1].get("outputs") as string[][]).map(([name]) => name),
        ["doc", "out"],
      );
      const env = new Map(
        parseDerivation(await Deno.readTextFile(drvByName.get("coreutils")!))
          .env,
      );
      assert.equal(env.get("fake-seconds"), "1.5");
      assert.equal(env.get("fake-log-lines"), "40");
      assert.equal(env.get("fake-output-bytes"), "2048");
    }

    // Same scenario, another daemon on the same store: same bytes.
    const other = await makeDaemon(root, "other", {
      FAKE_GUIX_SCENARIO: scenario,
    });
    const first = await evaluate(daemon, channels, "all", "x86_64-linux");
    const second = await evaluate(other, channels, "all", "x86_64-linux");
    assert.equal(second.stdout, first.stdout);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("repl evaluates a (packages …) selector and reports failures", async () => {
  const root = await makeRoot();
  try {
    const scenario = await writeScenario(root, SCENARIO);
    const daemon = await makeDaemon(root, "server", {
      FAKE_GUIX_SCENARIO: scenario,
    });
    const run = await guix(daemon, [
      "repl",
      "--",
      "/nonexistent/evaluate.scm",
      '(packages "hello")',
      "x86_64-linux",
    ]);
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^\(job \(name "hello\.x86_64-linux"\)/);
    assert.equal(lines[1], "(done 1)");

    const failing = await writeScenario(
      root,
      { ...SCENARIO, evaluationError: "error: package 'foo' is broken" },
      "failing.json",
    );
    const failed = await guix(daemon, [
      "repl",
      "--",
      "/x/evaluate.scm",
      "all",
      "x86_64-linux",
    ], { env: { FAKE_GUIX_SCENARIO: failing } });
    assert.equal(failed.code, 1);
    assert.equal(failed.stdout, "");
    assert.match(failed.stderr, /package 'foo' is broken/);

    // Only Lorica's two scripts are known; anything else is refused.
    const other = await guix(daemon, ["repl", "--", "/x.scm", "a", "b"]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /cannot run "\/x\.scm"/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("time-machine rejects a file that is not a list of channels", async () => {
  const root = await makeRoot();
  try {
    const daemon = await makeDaemon(root, "server");
    const file = `${root}/bad.scm`;
    await Deno.writeTextFile(file, `(channel (name 'guix) (url "x"))\n`);
    const run = await evaluate(daemon, file, "all", "x86_64-linux");
    assert.equal(run.code, 1);
    assert.equal(
      run.stderr,
      `guix time-machine: error: '${file}' did not return a list of channels\n`,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
