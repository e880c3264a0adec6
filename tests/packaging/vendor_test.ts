// Air-gapped install, end to end: vendor a copy of the tree, pack it, unpack
// it elsewhere, then run a server and two workers from the unpacked tree with
// an empty DENO_DIR, --cached-only and every HTTP(S) request sent to a closed
// loopback port, until the demo specification is built as its scenario says.

import assert from "node:assert/strict";
import { compareOutcome, readProgress } from "../../demo/report.ts";
import { type Farm, startFarm } from "../../demo/farm.ts";
import { copyTree, offlineEnv, REPO, run } from "./tree_copy.ts";

const DENO = Deno.execPath();
const OFFLINE_RUN = ["--cached-only", "--vendor", "--node-modules-dir=manual"];

/** True when the machine's DENO_DIR already holds the npm packages. */
const npmCached = await (async () => {
  const lock = JSON.parse(await Deno.readTextFile(`${REPO}/deno.lock`));
  const home = Deno.env.get("DENO_DIR") ??
    `${
      Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME")}/.cache`
    }/deno`;
  for (const key of Object.keys(lock.npm ?? {})) {
    const at = key.lastIndexOf("@");
    const path = `${home}/npm/registry.npmjs.org/${key.slice(0, at)}/${
      key.slice(at + 1)
    }`;
    try {
      await Deno.stat(path);
    } catch {
      return false;
    }
  }
  return true;
})();

Deno.test({
  name:
    "vendored tree runs the demo specification with an empty DENO_DIR, --cached-only and no registry",
  // Vendoring must not download: it needs the packages in this machine's
  // DENO_DIR (a first `deno install` on a connected machine puts them there).
  ignore: !npmCached,
  async fn() {
    await using source = await copyTree("lorica-vendor-src-");
    const work = await Deno.makeTempDir({ prefix: "lorica-airgap-" });
    let farm: Farm | undefined;
    try {
      // 1. Vendor with the machine's DENO_DIR, registry blocked, and pack.
      const archive = `${work}/lorica.tar.gz`;
      const vendor = await run(
        DENO,
        ["run", "-A", "scripts/vendor.ts", "--offline", `--archive=${archive}`],
        { cwd: source.dir, env: offlineEnv() },
      );
      assert.equal(vendor.code, 0, vendor.stdout + vendor.stderr);
      assert.match(vendor.stdout, /npm imports \(multicast-dns, postgres/);

      // 2. Unpack on the "air-gapped machine" and use an empty DENO_DIR.
      const tree = `${work}/lorica`;
      await Deno.mkdir(tree);
      const untar = await run("tar", ["-xzf", archive, "-C", tree], {
        cwd: work,
        env: offlineEnv(),
      });
      assert.equal(untar.code, 0, untar.stderr);
      const denoDir = `${work}/empty-deno-dir`;
      await Deno.mkdir(denoDir);

      // 3. The demo farm, every program and the fake guix from the tree.
      const started = await startFarm({
        tree,
        denoFlags: OFFLINE_RUN,
        baseEnv: offlineEnv({ DENO_DIR: denoDir }),
        root: `${work}/farm`,
        specFile: `${tree}/demo/demo-spec.scm`,
        scenarioFile: `${tree}/demo/scenario.json`,
        workers: [
          { systems: ["x86_64-linux"], sessions: 2 },
          { systems: ["i686-linux"], sessions: 2 },
        ],
        webPort: 0,
        requestPeriod: 1,
      });
      farm = started;
      const webUrl = started.webUrl;

      // 4. Wait for the outcome the scenario expects.
      const expected: Record<string, string> = JSON.parse(
        await Deno.readTextFile(`${tree}/demo/expected.json`),
      );
      const total = Object.keys(expected).length;
      let problems: string[] = ["not started"];
      for (let i = 0; i < 600 && problems.length > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        try {
          const progress = await readProgress(webUrl);
          if (
            progress.pending.length === 0 &&
            progress.finished.length >= total
          ) {
            problems = compareOutcome(progress.finished, expected);
            break;
          }
        } catch {
          // The web interface is not up yet.
        }
      }
      const logs = await Promise.all(
        started.roles.map((role) =>
          Deno.readTextFile(started.logFile(role)).then(
            (text) => `--- ${role}\n${text.slice(-1500)}`,
            () => "",
          )
        ),
      );
      assert.deepEqual(problems, [], logs.join("\n"));

      // 5. Nothing came from a registry: DENO_DIR holds no packages.
      for (const sub of ["npm", "remote"]) {
        const entries = [];
        try {
          for await (const e of Deno.readDir(`${denoDir}/${sub}`)) {
            entries.push(e.name);
          }
        } catch {
          // Absent is the expected case.
        }
        assert.deepEqual(entries, [], `${denoDir}/${sub}`);
      }
    } finally {
      await farm?.stop();
      if (!Deno.env.get("LORICA_KEEP_TEST_DIR")) {
        await Deno.remove(work, { recursive: true });
      }
    }
  },
});

Deno.test({
  name:
    "vendor.ts --archive=FILE with FILE inside the tree, as the docs run it, packs the tree but not FILE",
  ignore: !npmCached,
  async fn() {
    await using source = await copyTree("lorica-vendor-archive-");
    const vendor = await run(
      DENO,
      [
        "run",
        "-A",
        "scripts/vendor.ts",
        "--offline",
        "--archive=lorica-vendored.tar.gz",
      ],
      { cwd: source.dir, env: offlineEnv() },
    );
    assert.equal(vendor.code, 0, vendor.stdout + vendor.stderr);
    const list = await run(
      "tar",
      ["-tzf", `${source.dir}/lorica-vendored.tar.gz`],
      { cwd: source.dir, env: offlineEnv() },
    );
    assert.equal(list.code, 0, list.stderr);
    const names = list.stdout.split("\n");
    assert.ok(names.includes("./server.ts"), list.stdout.slice(0, 500));
    assert.ok(names.some((name) => name.startsWith("./node_modules/")));
    assert.ok(!names.includes("./lorica-vendored.tar.gz"));
  },
});

/** Why a command cannot run without any network here, if it cannot. */
const noNetworkMissing = (() => {
  if (Deno.uid() !== 0) return "needs root for unshare -n";
  for (const [tool, args] of [["unshare", ["--version"]], ["ip", ["-V"]]]) {
    try {
      new Deno.Command(tool as string, {
        args: args as string[],
        stdout: "null",
        stderr: "null",
      }).outputSync();
    } catch {
      return `no ${tool}`;
    }
  }
  return undefined;
})();

Deno.test({
  name:
    `deno task demo's demo.ts --vendored builds the demo from a vendored tree with no network at all${
      noNetworkMissing ? ` (skipped: ${noNetworkMissing})` : ""
    }`,
  ignore: !npmCached || noNetworkMissing !== undefined,
  async fn() {
    await using source = await copyTree("lorica-vendor-demo-src-");
    const work = await Deno.makeTempDir({ prefix: "lorica-airgap-demo-" });
    try {
      const archive = `${work}/lorica.tar.gz`;
      const vendor = await run(
        DENO,
        ["run", "-A", "scripts/vendor.ts", "--offline", `--archive=${archive}`],
        { cwd: source.dir, env: offlineEnv() },
      );
      assert.equal(vendor.code, 0, vendor.stdout + vendor.stderr);
      const tree = `${work}/lorica`;
      await Deno.mkdir(tree);
      const untar = await run("tar", ["-xzf", archive, "-C", tree], {
        cwd: work,
        env: offlineEnv(),
      });
      assert.equal(untar.code, 0, untar.stderr);
      await Deno.mkdir(`${work}/deno-dir`);
      // A network namespace of its own: loopback only, nothing else exists.
      const demo = await run(
        "timeout",
        [
          "300",
          "unshare",
          "-n",
          "sh",
          "-c",
          `ip link set lo up && exec "$0" "$@"`,
          DENO,
          "run",
          ...OFFLINE_RUN,
          "-A",
          "demo.ts",
          "--vendored",
          "--until-done",
          "--web-port=0",
        ],
        { cwd: tree, env: offlineEnv({ DENO_DIR: `${work}/deno-dir` }) },
      );
      assert.equal(demo.code, 0, demo.stdout.slice(-3000) + demo.stderr);
      assert.match(demo.stdout, /Outcome matches the scenario: 30 builds/);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
