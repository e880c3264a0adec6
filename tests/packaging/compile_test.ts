// scripts/compile.ts where Deno's compile runtime (denort) is not available:
// the task must say so and build nothing. All traffic goes to a closed
// loopback port, so no download can succeed or leave the machine.

import assert from "node:assert/strict";
import { copyTree, offlineEnv, run } from "./tree_copy.ts";

const DENO = Deno.execPath();

async function distFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(`${dir}/dist`)) {
      names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/** Deno's cache directory, where npm packages and runtimes are kept. */
async function denoCacheDir(): Promise<string> {
  const info = await new Deno.Command(DENO, {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return JSON.parse(new TextDecoder().decode(info.stdout)).denoDir;
}

/** True when Deno already holds a compile runtime of this version. */
async function runtimeCached(denoDir: string): Promise<boolean> {
  try {
    for await (
      const entry of Deno.readDir(
        `${denoDir}/dl/release/v${Deno.version.deno}`,
      )
    ) {
      if (entry.name.startsWith("denort-")) return true;
    }
  } catch {
    // No download directory: nothing cached.
  }
  return false;
}

const CACHE = await denoCacheDir();

Deno.test({
  name: "compile task reports a runtime it cannot download and builds nothing",
  // The programs' npm packages come from Deno's cache; only the runtime is
  // missing, as on this project's machines. Where it is cached, the task
  // would rightly succeed.
  ignore: await runtimeCached(CACHE),
  async fn() {
    await using tree = await copyTree("lorica-compile-");
    const result = await run(
      DENO,
      ["run", "-A", "scripts/compile.ts", "--no-check"],
      { cwd: tree.dir, env: offlineEnv({ DENO_DIR: CACHE }) },
    );
    assert.equal(result.code, 1, result.stderr);
    for (const target of ["x86_64", "aarch64"]) {
      assert.match(
        result.stderr,
        new RegExp(
          `Deno could not download its compile runtime for ${target}-unknown-linux-gnu`,
        ),
      );
      assert.ok(
        result.stderr.includes(
          `https://dl.deno.land/release/v${Deno.version.deno}/denort-${target}-unknown-linux-gnu.zip`,
        ),
      );
      assert.ok(
        result.stderr.includes(
          `DENORT_BIN_${target.toUpperCase()}=/path/to/denort`,
        ),
      );
    }
    assert.match(result.stderr, /DENORT_BIN=\/path\/to\/denort/);
    assert.match(result.stderr, /\d build\(s\) failed/);
    assert.doesNotMatch(result.stdout, /built /);
    assert.deepEqual(await distFiles(tree.dir), ["build_info.json"]);
  },
});

Deno.test("compile task says so when DENORT_BIN names a missing file", async () => {
  await using tree = await copyTree("lorica-compile-");
  const result = await run(DENO, ["run", "-A", "scripts/compile.ts"], {
    cwd: tree.dir,
    env: offlineEnv({ DENORT_BIN: `${tree.dir}/no/such/denort` }),
  });
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    /Cannot use DENORT_BIN=".*\/no\/such\/denort": no such file/,
  );
  assert.deepEqual(await distFiles(tree.dir), []);
});

Deno.test("compile task rejects a DENORT_BIN that is not an executable for Linux", async () => {
  await using tree = await copyTree("lorica-compile-");
  const result = await run(DENO, ["run", "-A", "scripts/compile.ts"], {
    cwd: tree.dir,
    env: offlineEnv({ DENORT_BIN: `${tree.dir}/README.md` }),
  });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /not an x86_64 or aarch64 Linux executable/);
});

Deno.test({
  name:
    "compile task embeds the evaluator but refuses a binary that does not run as Lorica (deno given as DENORT_BIN)",
  // deno itself is an ELF of this machine's architecture, but not a runtime.
  ignore: Deno.build.os !== "linux" ||
    !["x86_64", "aarch64"].includes(Deno.build.arch),
  async fn() {
    await using tree = await copyTree("lorica-compile-");
    const target = `${Deno.build.arch}-unknown-linux-gnu`;
    const result = await run(
      DENO,
      [
        "run",
        "-A",
        "scripts/compile.ts",
        "--no-check",
        `--target=${target}`,
        "server",
      ],
      { cwd: tree.dir, env: offlineEnv({ DENORT_BIN: DENO }) },
    );
    assert.equal(result.code, 1, result.stderr);
    // The embedding check passed (else it would have complained first) ...
    assert.doesNotMatch(result.stderr, /Cannot find .* embedded/);
    // ... and the smoke test caught the wrong runtime.
    assert.match(
      result.stderr,
      /does not run as lorica-server \(`--version` printed "deno /,
    );
    assert.deepEqual(await distFiles(tree.dir), ["build_info.json"]);
    const info = JSON.parse(
      await Deno.readTextFile(`${tree.dir}/dist/build_info.json`),
    );
    assert.equal(info.deno, Deno.version.deno);
    assert.equal(typeof info.revision, "string");
  },
});

Deno.test("compile task rejects an unknown target with status 2", async () => {
  await using tree = await copyTree("lorica-compile-");
  const result = await run(
    DENO,
    ["run", "-A", "scripts/compile.ts", "--target=riscv64-unknown-linux-gnu"],
    { cwd: tree.dir, env: offlineEnv() },
  );
  assert.equal(result.code, 2);
  assert.match(
    result.stderr,
    /Cannot build for target "riscv64-unknown-linux-gnu"/,
  );
});
