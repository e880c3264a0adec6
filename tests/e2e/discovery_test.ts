// Discovery end to end: a worker given no server, in one network namespace,
// finds the server advertised in another and builds the demo specification's
// x86_64-linux jobs. Both processes run the real code with the fake guix.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  labAvailable,
  type LabProcess,
  type Namespace,
  type NetnsLab,
  twoHosts,
  withLab,
} from "../netns/netns_lab.ts";
import { type ApiBuild, compareOutcome } from "../../demo/report.ts";

const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(/\/$/, "");
const PROGRAMS = `${REPO}/tests/netns/programs`;
const SYSTEM = "x86_64-linux";
const lab = await labAvailable();

/** True once worker.ts and server.ts offer the discovery options (issue 5). */
async function cliWired(): Promise<boolean> {
  const help = async (script: string) =>
    new TextDecoder().decode(
      (await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${REPO}/${script}`, "--help"],
        stdout: "piped",
        stderr: "null",
      }).output()).stdout,
    );
  return (await help("worker.ts")).includes("--server-name") &&
    (await help("server.ts")).includes("--advertise-interface");
}
const wired = lab.ok && await cliWired();

interface Farm {
  root: string;
  env(role: string): Record<string, string>;
}

/** Keys for both roles, trusted both ways, as demo/farm.ts sets them up. */
async function prepareFarm(lab: NetnsLab): Promise<Farm> {
  const root = `${lab.dir}/farm`;
  const store = `${root}/store`;
  await Deno.mkdir(store, { recursive: true });
  const env = (role: string) => ({
    PATH: `${REPO}/tests/fake-guix:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`,
    FAKE_GUIX_DENO: Deno.execPath(),
    NIX_STORE_DIR: store,
    FAKE_GUIX_STATE: `${root}/${role}/daemon`,
    GUIX_CONFIGURATION_DIRECTORY: `${root}/${role}/etc`,
    FAKE_GUIX_SCENARIO: `${REPO}/demo/scenario.json`,
    FAKE_GUIX_SYSTEMS: SYSTEM,
    REQUEST_PERIOD: "1",
    LORICA_LOG: "info",
  });
  const guix = async (role: string, args: string[], stdin?: string) => {
    const child = new Deno.Command(`${REPO}/tests/fake-guix/guix`, {
      args,
      env: env(role),
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const result = await child.output();
    assert.ok(result.success, new TextDecoder().decode(result.stderr));
  };
  for (const role of ["server", "worker"]) {
    await Deno.mkdir(`${root}/${role}/etc`, { recursive: true });
    await guix(role, ["archive", "--generate-key"]);
  }
  const key = (role: string) =>
    Deno.readTextFile(`${root}/${role}/etc/signing-key.pub`);
  await guix("worker", ["archive", "--authorize"], await key("server"));
  await guix("server", ["archive", "--authorize"], await key("worker"));
  return { root, env };
}

/** Reads the server's JSON API from inside its namespace. */
async function api<T>(lab: NetnsLab, ns: Namespace, path: string): Promise<T> {
  const result = await lab.exec(ns, Deno.execPath(), [
    "eval",
    `const r = await fetch(${
      JSON.stringify(`http://127.0.0.1:8080${path}`)
    });` +
    "console.log(await r.text());",
  ]);
  assert.ok(result.ok, result.out);
  return JSON.parse(result.out);
}

/** Waits until every x86_64 job of the demo has finished, then compares. */
async function checkBuilds(
  lab: NetnsLab,
  ns: Namespace,
  processes: LabProcess[],
) {
  const expected: Record<string, string> = Object.fromEntries(
    Object.entries(
      JSON.parse(
        await Deno.readTextFile(`${REPO}/demo/expected.json`),
      ) as Record<string, string>,
    ).filter(([job]) => job.endsWith(`.${SYSTEM}`)),
  );
  let builds: ApiBuild[] = [];
  for (let i = 0; i < 150; i++) {
    for (const p of processes) {
      assert.ok(!p.exited, `${p.name} exited: ${p.log().slice(-1500)}`);
    }
    try {
      builds = (await api<ApiBuild[]>(lab, ns, "/api/latestbuilds?nr=1000"))
        .filter((b) => b.system === SYSTEM);
    } catch {
      builds = [];
    }
    if (builds.length >= Object.keys(expected).length) break;
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  assert.deepEqual(compareOutcome(builds, expected), []);
}

async function run(
  start: (
    lab: NetnsLab,
    hosts: Awaited<ReturnType<typeof twoHosts>>,
    farm: Farm,
  ) => LabProcess[],
) {
  await withLab(async (lab) => {
    const hosts = await twoHosts(lab);
    const farm = await prepareFarm(lab);
    const processes = start(lab, hosts, farm);
    try {
      await checkBuilds(lab, hosts.server, processes);
      assert.match(processes[1].log(), /server chosen .*198\.51\.100\.1:5555/);
    } finally {
      // Worker first, so that it does not report to a vanished server.
      await processes[1].stop(10_000);
      await processes[0].stop(10_000);
    }
  });
}

Deno.test({
  name:
    `a worker started with no --server finds the server in another namespace and builds the demo's ${SYSTEM} jobs${
      wired
        ? ""
        : ` (skipped: ${
          lab.ok
            ? "worker.ts/server.ts not wired for discovery yet"
            : lab.reason
        })`
    }`,
  ignore: !wired,
  async fn() {
    await run((lab, hosts, farm) => {
      const server = lab.spawn(hosts.server, Deno.execPath(), [
        "run",
        "-A",
        `${REPO}/server.ts`,
        `--specifications=${REPO}/demo/demo-spec.scm`,
        `--database=${farm.root}/server/lorica.db`,
        `--cache=${farm.root}/server/logs`,
        `--gc-roots=${farm.root}/server/gcroots`,
        "--build-remote",
        // The demo specification names the Internet's Guix channel.
        "--no-poll",
        "--listen=0.0.0.0",
        `--advertise-interface=${hosts.serverIf}`,
      ], { env: farm.env("server"), label: "server" });
      const worker = lab.spawn(hosts.worker, Deno.execPath(), [
        "run",
        "-A",
        `${REPO}/worker.ts`,
        "--workers=1",
        `--systems=${SYSTEM}`,
        "--publish-listen=0.0.0.0",
      ], { env: farm.env("worker"), label: "worker" });
      return [server, worker];
    });
  },
});

Deno.test({
  name:
    `lib/discovery composed with lib/server and lib/worker: the worker finds the server in another namespace and builds the demo's ${SYSTEM} jobs${
      lab.ok ? "" : ` (skipped: ${lab.reason})`
    }`,
  ignore: !lab.ok,
  async fn() {
    await run((lab, hosts, farm) => {
      const server = lab.spawn(hosts.server, Deno.execPath(), [
        "run",
        "-A",
        `${PROGRAMS}/discovery_server.ts`,
        JSON.stringify({
          specFile: `${REPO}/demo/demo-spec.scm`,
          root: `${farm.root}/server`,
          interface: hosts.serverIf,
          backendPort: 5555,
          logPort: 5556,
          publishPort: 5557,
          webPort: 8080,
        }),
      ], { env: farm.env("server"), label: "server" });
      const worker = lab.spawn(hosts.worker, Deno.execPath(), [
        "run",
        "-A",
        `${PROGRAMS}/discovery_worker.ts`,
        JSON.stringify({ systems: [SYSTEM], publishPort: 5558 }),
      ], { env: farm.env("worker"), label: "worker" });
      return [server, worker];
    });
  },
});
