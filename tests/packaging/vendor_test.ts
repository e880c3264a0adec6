// Air-gapped install, end to end: vendor a copy of the tree, pack it, unpack
// it elsewhere, then run a server and two workers from the unpacked tree with
// an empty DENO_DIR, --cached-only and every HTTP(S) request sent to a closed
// loopback port, until the demo specification is built as its scenario says.

import assert from "node:assert/strict";
import { compareOutcome, readProgress } from "../../demo/report.ts";
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
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using source = await copyTree("lorica-vendor-src-");
    const work = await Deno.makeTempDir({ prefix: "lorica-airgap-" });
    const children: Deno.ChildProcess[] = [];
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

      // 3. The farm: keys, trust, server, two workers.
      const root = `${work}/farm`;
      const store = `${root}/store`;
      await Deno.mkdir(store, { recursive: true });
      const fakeGuixDir = `${tree}/tests/fake-guix`;
      const guixEnv = (role: string) =>
        offlineEnv({
          DENO_DIR: denoDir,
          PATH: `${fakeGuixDir}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
          FAKE_GUIX_DENO: DENO,
          NIX_STORE_DIR: store,
          FAKE_GUIX_STATE: `${root}/${role}/daemon`,
          GUIX_CONFIGURATION_DIRECTORY: `${root}/${role}/etc`,
          FAKE_GUIX_SCENARIO: `${tree}/demo/scenario.json`,
          LORICA_LOG: "info",
        });
      const guix = async (role: string, args: string[], input?: string) => {
        const child = new Deno.Command(`${fakeGuixDir}/guix`, {
          args,
          env: guixEnv(role),
          clearEnv: true,
          stdin: input === undefined ? "null" : "piped",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        if (input !== undefined) {
          const writer = child.stdin.getWriter();
          await writer.write(new TextEncoder().encode(input));
          await writer.close();
        }
        const out = await child.output();
        assert.ok(
          out.success,
          `guix ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`,
        );
      };
      const roles = ["server", "worker1", "worker2"];
      for (const role of roles) {
        await Deno.mkdir(`${root}/${role}/etc`, { recursive: true });
        await guix(role, ["archive", "--generate-key"]);
      }
      const serverKey = await Deno.readTextFile(
        `${root}/server/etc/signing-key.pub`,
      );
      for (const role of roles.slice(1)) {
        await guix(role, ["archive", "--authorize"], serverKey);
        await guix(
          "server",
          ["archive", "--authorize"],
          await Deno.readTextFile(`${root}/${role}/etc/signing-key.pub`),
        );
      }

      const ports = await freePorts(6);
      const start = (
        role: string,
        script: string,
        args: string[],
        env: Record<string, string> = {},
      ) => {
        const log = Deno.openSync(`${root}/${role}.log`, {
          create: true,
          append: true,
        });
        const spawned = new Deno.Command(DENO, {
          args: ["run", ...OFFLINE_RUN, "--allow-all", script, ...args],
          cwd: tree,
          env: { ...guixEnv(role), ...env },
          clearEnv: true,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const sink = () =>
          new WritableStream<Uint8Array>({
            write: (chunk) => log.write(chunk).then(() => {}),
          });
        void Promise.all([
          spawned.stdout.pipeTo(sink()),
          spawned.stderr.pipeTo(sink()),
        ]).finally(() => log.close());
        children.push(spawned);
        return spawned;
      };
      start("server", "server.ts", [
        `--specifications=${tree}/demo/demo-spec.scm`,
        `--database=${root}/server/lorica.db`,
        `--cache=${root}/server/logs`,
        `--gc-roots=${root}/server/gcroots`,
        "--build-remote",
        // The demo specification names the Internet's Guix channel, and
        // this machine's interfaces get no DNS-SD announcements.
        "--no-poll",
        "--no-advertise",
        `--backend-port=${ports[0]}`,
        `--log-port=${ports[1]}`,
        `--publish-port=${ports[2]}`,
        "--listen=127.0.0.1",
        `--web-port=${ports[3]}`,
      ]);
      const webUrl = `http://127.0.0.1:${ports[3]}`;
      [["x86_64-linux"], ["i686-linux"]].forEach((systems, i) => {
        start(`worker${i + 1}`, "worker.ts", [
          `--server=127.0.0.1:${ports[0]}`,
          "--workers=2",
          `--systems=${systems.join(",")}`,
          `--publish-port=${ports[4 + i]}`,
          "--publish-listen=127.0.0.1",
        ], { REQUEST_PERIOD: "1", FAKE_GUIX_SYSTEMS: systems.join(",") });
      });

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
        roles.map((role) =>
          Deno.readTextFile(`${root}/${role}.log`).then(
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
      for (const child of children.reverse()) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already gone.
        }
        const timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // Already gone.
          }
        }, 10_000);
        await child.status;
        clearTimeout(timer);
      }
      if (!Deno.env.get("LORICA_KEEP_TEST_DIR")) {
        await Deno.remove(work, { recursive: true });
      }
    }
  },
});

async function freePorts(count: number): Promise<number[]> {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  await Promise.resolve();
  return ports;
}
