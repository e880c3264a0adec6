// Realistic farm data for browser tests and screenshots: the demo's coreutils graph mid-run.

import { gzipSync } from "node:zlib";
import { NIX_BASE32_ALPHABET } from "../../lib/guix/store_path.ts";
import type { Build, NewJob, Store } from "../../lib/store/types.ts";

export const STORE_DIR = "/gnu/store";

interface ScenarioPackage {
  name: string;
  version: string;
  systems: string[];
  inputs: string[];
  outputs: string[];
  behaviour: { exit: number };
}

/** A 32-character nix-base32 hash, distinct for each `n` and `salt`. */
export function fakeHash(n: number, salt: string): string {
  // FNV-1a over the salt, then one mixing step per character.
  let state = 2166136261;
  for (const char of `${salt}/${n}`) {
    state = Math.imul(state ^ char.charCodeAt(0), 16777619) >>> 0;
  }
  let out = "";
  for (let i = 0; i < 28; i++) {
    state = Math.imul(state ^ (state >>> 15), 2246822507) >>> 0;
    state = (state + 0x9e3779b9) >>> 0;
    out += NIX_BASE32_ALPHABET[state % 32];
  }
  // The last characters carry `n` so that hashes never collide.
  const prefix = n.toString(32).padStart(4, "0").split("").map((d) =>
    NIX_BASE32_ALPHABET[parseInt(d, 32)]
  ).join("");
  return out + prefix;
}

/** What `populateFarm` created, for assertions. */
export interface FarmData {
  spec: string;
  /** A build left started, whose log the caller may grow. */
  running: Build;
  builds: Build[];
}

/**
 * Fills `store` with the demo specification, two evaluations and the demo's
 * packages in every state: succeeded, one failure with failed dependents,
 * running, submitted and waiting (behind dependencies or for lack of a
 * worker), plus two workers. Logs of finished builds go to `logDir`.
 */
export async function populateFarm(
  store: Store,
  options: { logDir: string; now: number },
): Promise<FarmData> {
  const { now } = options;
  const scenario = JSON.parse(
    await Deno.readTextFile(
      new URL("../../demo/scenario.json", import.meta.url),
    ),
  ) as { packages: ScenarioPackage[] };
  for (const [name, priority] of [["demo", 2], ["guix-master", 5]] as const) {
    await store.upsertSpecification({
      name,
      build: name === "demo"
        ? { type: "all", params: [] }
        : { type: "packages", params: ["hello", "coreutils"] },
      channels: [{
        name: "guix",
        url: "https://git.guix.gnu.org/guix.git",
        branch: "master",
        commit: null,
        introduction: null,
      }],
      buildOutputs: [],
      notifications: [],
      period: 300,
      priority,
      systems: ["x86_64-linux", "i686-linux", "aarch64-linux"],
      isActive: true,
    });
  }
  const old = await store.addEvaluation("guix-master", [
    {
      channel: "guix",
      revision: "9edb3f66fd807b096b48283debdcddccfea34bad",
      directory: "",
    },
  ], now - 86400);
  await store.registerBuilds(old, [
    packageJob(
      {
        name: "hello",
        version: "2.12.1",
        systems: [],
        inputs: [],
        outputs: ["out"],
        behaviour: { exit: 0 },
      },
      "x86_64-linux",
      900,
    ),
  ], { priority: 5, now: now - 86000 });
  await store.setEvaluationStatus(old, 0, now - 85000);
  const helloBuild =
    (await store.popBuild("x86-64-a", ["x86_64-linux"], now - 84000))!;
  await store.markStarted(helloBuild.derivation, "x86-64-a", "", now - 83990);
  await store.completeBuild(helloBuild.derivation, 0, {
    worker: "x86-64-a",
    now: now - 83900,
  });

  const evaluation = await store.addEvaluation("demo", [
    {
      channel: "guix",
      revision: "3a1f0c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
      directory: "/var/cache/lorica/guix",
    },
    {
      channel: "nonguix",
      revision: "77c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9",
      directory: "/var/cache/lorica/nonguix",
    },
  ], now - 3600);
  const jobs: NewJob[] = [];
  for (const pkg of scenario.packages) {
    for (const system of pkg.systems) {
      jobs.push(packageJob(pkg, system, jobs.length));
    }
  }
  // Inputs as derivations of the same system.
  const bySystemName = new Map(
    jobs.map((j) => [`${j.system}/${j.name.split(".")[0]}`, j]),
  );
  for (const pkg of scenario.packages) {
    for (const system of pkg.systems) {
      const j = bySystemName.get(`${system}/${pkg.name}`)!;
      j.inputs = pkg.inputs.map((input) =>
        bySystemName.get(`${system}/${input}`)?.derivation
      )
        .filter((d): d is string => d !== undefined);
    }
  }
  await store.registerBuilds(evaluation, jobs, {
    priority: 2,
    now: now - 3500,
  });
  await store.setEvaluationStatus(evaluation, 0, now - 3400);

  await store.upsertWorker({
    name: "x86-64-a",
    address: "10.0.0.11",
    machine: "build-a.example.org",
    systems: ["x86_64-linux"],
    lastSeen: now - 2,
    timeoutSeconds: 120,
  });
  await store.upsertWorker({
    name: "x86-64-b",
    address: "10.0.0.12",
    machine: "build-b.example.org",
    systems: ["x86_64-linux", "i686-linux"],
    lastSeen: now - 4,
    timeoutSeconds: 120,
  });

  // Run builds in dispatch order: sixteen finish (openssl fails), one starts.
  // openssl fails here (the demo's own failure, attr, comes later), so
  // that python-minimal and its dependents show failed-dependency.
  const failing = new Set(["openssl"]);
  let t = now - 3000;
  let running: Build | null = null;
  for (let i = 0; i < 17; i++) {
    const worker = i % 2 === 0 ? "x86-64-a" : "x86-64-b";
    const build = await store.popBuild(
      worker,
      ["x86_64-linux", "i686-linux"],
      t,
    );
    if (build === null) break;
    await store.markStarted(build.derivation, worker, "", t + 5);
    if (i === 16) {
      running = build;
      break;
    }
    const status = failing.has(build.jobName.split(".")[0]) ? 1 : 0;
    await store.completeBuild(build.derivation, status, {
      worker,
      now: t + 60 + i * 17,
    });
    await writeLog(options.logDir, build.derivation, buildLog(build, status));
    t += 120;
  }
  if (running === null) {
    throw new Error("Cannot populate farm: nothing left to run");
  }
  // One more handed to the second worker, not started yet.
  await store.popBuild("x86-64-b", ["i686-linux"], now - 10);
  const builds = [
    ...await store.latestBuilds({}, 1000),
    ...await store.queue({}, 1000),
  ];
  return { spec: "demo", running: (await store.getBuild(running.id))!, builds };
}

function packageJob(pkg: ScenarioPackage, system: string, n: number): NewJob {
  const base = `${pkg.name}-${pkg.version}`;
  return {
    name: `${pkg.name}.${system}`,
    derivation: `${STORE_DIR}/${fakeHash(n, `drv${system}`)}-${base}.drv`,
    system,
    nixName: base,
    outputs: pkg.outputs.map((output) => ({
      name: output,
      path: `${STORE_DIR}/${fakeHash(n, `out${system}${output}`)}-${base}${
        output === "out" ? "" : `-${output}`
      }`,
    })),
    inputs: [],
    timeout: 3600,
    maxSilent: 600,
  };
}

/** A plausible build log. */
export function buildLog(build: Build, status: number): Uint8Array {
  const lines = [
    `building path(s) \`${build.outputs[0]?.path ?? build.derivation}'`,
    "starting phase `set-SOURCE-DATE-EPOCH'",
    "phase `set-SOURCE-DATE-EPOCH' succeeded after 0.0 seconds",
    "starting phase `unpack'",
    `${build.nixName}/configure`,
    "starting phase `configure'",
    "checking for a BSD-compatible install... /gnu/store/…-coreutils-9.1/bin/install -c",
    "checking whether build environment is sane... yes",
    "checking for gcc... gcc",
    "config.status: creating Makefile",
    "starting phase `build'",
    ...Array.from({ length: 12 }, (_, i) => `  CC       lib/file${i}.o`),
    ...(status === 0
      ? [
        "starting phase `check'",
        "PASS: tests/basic.sh",
        "phase `check' succeeded after 4.2 seconds",
      ]
      : [
        "starting phase `check'",
        "FAIL: tests/acl-permissions.sh",
        "\x1b[31merror: in phase 'check': uncaught exception:\x1b[0m",
        "builder for `" + build.derivation + "' failed with exit code 1",
      ]),
  ];
  return new TextEncoder().encode(lines.join("\n") + "\n");
}

/** Writes `<logDir>/<hash>.log.gz` for a derivation in one piece. */
export async function writeLog(
  logDir: string,
  derivation: string,
  bytes: Uint8Array,
): Promise<void> {
  const hash = derivation.slice(STORE_DIR.length + 1, STORE_DIR.length + 33);
  await Deno.writeFile(
    `${logDir}/${hash}.log.gz`,
    new Uint8Array(gzipSync(bytes)),
  );
}
