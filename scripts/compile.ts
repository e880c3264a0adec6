// `deno task compile`: single-file lorica-server and lorica-worker binaries for
// x86_64 and aarch64 Linux, with the Guile evaluator and build info embedded.

import { parseArgs } from "node:util";
import { fileURLToPath as fromFileUrl } from "node:url";
import { VERSION } from "../lib/cli/args.ts";
import { gitRevision } from "../lib/cli/git_revision.ts";

const USAGE = `Usage: deno task compile [OPTIONS] [server|worker]...
Builds dist/lorica-{server,worker}-{x86_64,aarch64}-linux (and dist/lorica-server,
dist/lorica-worker linked to this machine's architecture).

  --target=TRIPLE   x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu
                    (repeatable; default both)
  --out-dir=DIR     where the binaries go (default dist/)
  --no-check        skip the type check before compiling
  --no-smoke-test   do not run the host binaries with --version afterwards
  -h, --help        show this help

deno compile needs Deno's runtime (denort ${Deno.version.deno}) for each target.
It downloads it from https://dl.deno.land unless you provide it:
  DENORT_BIN=/path/to/denort          a runtime for its own architecture
  DENORT_BIN_X86_64=…, DENORT_BIN_AARCH64=…   one per architecture
or place the release zip unchanged at
  $DENO_DIR/dl/release/v${Deno.version.deno}/denort-TRIPLE.zip

Exit status: 0 every binary built and checked, 1 a build failed, 2 bad usage.`;

// deno-lint-ignore no-console
const say = console.log;
// deno-lint-ignore no-console
const complain = console.error;

const REPO = fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "");
const TARGETS = {
  "x86_64-unknown-linux-gnu": { arch: "x86_64", short: "x86_64-linux" },
  "aarch64-unknown-linux-gnu": { arch: "aarch64", short: "aarch64-linux" },
} as const;
type Target = keyof typeof TARGETS;
type Arch = typeof TARGETS[Target]["arch"];
const PROGRAMS = ["server", "worker"] as const;
type Program = typeof PROGRAMS[number];
/** Files the programs read at run time, embedded next to their modules. */
const ASSETS = [
  "lib/guix/evaluate.scm",
  "lib/guix/build_driver.scm",
  "lib/spec/print_specs.scm",
  "dist/build_info.json",
];

/**
 * Modules loaded as worker threads, which deno compile cannot find by
 * itself (embedded transpiled, so not looked for byte for byte as ASSETS).
 */
const WORKER_MODULES = [
  "lib/store/sqlite_checkpoint_worker.ts",
  "lib/store/sqlite_scan_worker.ts",
];

/** A runtime problem that stops one target (or all). */
class RuntimeError extends Error {
  override name = "RuntimeError";
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      target: { type: "string", multiple: true },
      "out-dir": { type: "string", default: `${REPO}/dist` },
      "no-check": { type: "boolean", default: false },
      "no-smoke-test": { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }
  const targets = (values.target ?? Object.keys(TARGETS)) as Target[];
  for (const target of targets) {
    if (!(target in TARGETS)) {
      complain(
        `compile: error: Cannot build for target ${
          JSON.stringify(target)
        }: expected one of ${Object.keys(TARGETS).join(", ")}`,
      );
      return 2;
    }
  }
  const programs = (positionals.length ? positionals : PROGRAMS) as Program[];
  for (const program of programs) {
    if (!PROGRAMS.includes(program)) {
      complain(
        `compile: error: Cannot build ${
          JSON.stringify(program)
        }: expected server or worker`,
      );
      return 2;
    }
  }
  const outDir = values["out-dir"];

  let runtimes: Map<Arch, string>;
  try {
    runtimes = await providedRuntimes();
  } catch (error) {
    complain(`compile: error: ${(error as Error).message}`);
    return 1;
  }

  const revision = await gitRevision(REPO) ?? "unknown";
  await Deno.mkdir(`${REPO}/dist`, { recursive: true });
  await Deno.mkdir(outDir, { recursive: true });
  await Deno.writeTextFile(
    `${REPO}/dist/build_info.json`,
    JSON.stringify({ version: VERSION, revision, deno: Deno.version.deno }) +
      "\n",
  );
  say(`Lorica ${VERSION} (${revision}), Deno ${Deno.version.deno}`);

  if (!values["no-check"]) {
    say("Type-checking server.ts and worker.ts...");
    const check = await deno(["check", "server.ts", "worker.ts"], {});
    if (!check.success) {
      complain(check.stderr.trim());
      complain("compile: error: Cannot compile: type checking failed");
      return 1;
    }
  }

  const hostArch = Deno.build.arch as Arch;
  const failures: string[] = [];
  for (const target of targets) {
    const { arch, short } = TARGETS[target];
    const runtime = runtimes.get(arch);
    for (const program of programs) {
      const output = `${outDir}/lorica-${program}-${short}`;
      const problem = await compileOne(program, target, output, runtime);
      if (problem === null && arch === hostArch && !values["no-smoke-test"]) {
        const smoke = await smokeTest(program, output, runtime);
        if (smoke !== null) {
          await Deno.remove(output).catch(() => {});
          failures.push(smoke);
          complain(`compile: error: ${smoke}`);
          continue;
        }
      }
      if (problem !== null) {
        failures.push(problem);
        complain(`compile: error: ${problem}`);
        // The same runtime is missing for the other program: say it once.
        if (/runtime/.test(problem)) break;
        continue;
      }
      say(`  built ${output}`);
      if (arch === hostArch) {
        const link = `${outDir}/lorica-${program}`;
        await Deno.remove(link).catch(() => {});
        await Deno.symlink(`lorica-${program}-${short}`, link);
      }
    }
  }
  if (failures.length > 0) {
    complain(
      `compile: ${failures.length} build(s) failed; nothing was pretended: only the files listed as built exist.`,
    );
    return 1;
  }
  return 0;
}

/** DENORT_BIN, DENORT_BIN_X86_64 and DENORT_BIN_AARCH64, checked. */
async function providedRuntimes(): Promise<Map<Arch, string>> {
  const runtimes = new Map<Arch, string>();
  const generic = Deno.env.get("DENORT_BIN");
  if (generic) runtimes.set(await elfArch("DENORT_BIN", generic), generic);
  for (const arch of ["x86_64", "aarch64"] as const) {
    const name = `DENORT_BIN_${arch.toUpperCase()}`;
    const path = Deno.env.get(name);
    if (!path) continue;
    const found = await elfArch(name, path);
    if (found !== arch) {
      throw new RuntimeError(
        `Cannot use ${name}=${JSON.stringify(path)}: it is an ${found} program`,
      );
    }
    runtimes.set(arch, path);
  }
  return runtimes;
}

/** The architecture of an ELF executable. */
async function elfArch(variable: string, path: string): Promise<Arch> {
  let head: Uint8Array;
  try {
    const file = await Deno.open(path);
    head = new Uint8Array(20);
    await file.read(head);
    file.close();
  } catch (error) {
    throw new RuntimeError(
      `Cannot use ${variable}=${JSON.stringify(path)}: ${
        error instanceof Deno.errors.NotFound
          ? "no such file"
          : (error as Error).message
      }. Point it at the denort executable unzipped from denort-TRIPLE.zip of Deno ${Deno.version.deno}.`,
    );
  }
  const machine = head[18] | (head[19] << 8);
  const isElf = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c &&
    head[3] === 0x46;
  if (isElf && machine === 0x3e) return "x86_64";
  if (isElf && machine === 0xb7) return "aarch64";
  throw new RuntimeError(
    `Cannot use ${variable}=${
      JSON.stringify(path)
    }: not an x86_64 or aarch64 Linux executable`,
  );
}

/** Runs deno compile for one program and target; returns a problem or null. */
async function compileOne(
  program: Program,
  target: Target,
  output: string,
  runtime: string | undefined,
): Promise<string | null> {
  const zip = `denort-${target}.zip`;
  const result = await deno([
    "compile",
    "--allow-all",
    "--no-check",
    "--exclude-unused-npm",
    "--target",
    target,
    ...[...ASSETS, ...WORKER_MODULES].flatMap((file) => ["--include", file]),
    "--output",
    output,
    `${program}.ts`,
  ], runtime ? { DENORT_BIN: runtime } : {});
  if (result.success) return await checkAssets(output);
  const detail = lastCause(result.stderr);
  if (runtime !== undefined) {
    return `Cannot build ${output}: deno compile could not use the runtime ${
      JSON.stringify(runtime)
    } for ${target}: ${detail}`;
  }
  if (/base binary|dl\.deno\.land|denort/i.test(result.stderr)) {
    return `Cannot build ${output}: Deno could not download its compile runtime for ${target} (${detail}).
  deno compile copies a prebuilt runtime, denort, into every binary and downloads it on first use from
  https://dl.deno.land/release/v${Deno.version.deno}/${zip}
  This machine could not fetch it. On a machine with internet access, download that zip and either
    - unzip it and run: DENORT_BIN_${
      TARGETS[target].arch.toUpperCase()
    }=/path/to/denort deno task compile
      (DENORT_BIN=/path/to/denort also works: it is used for the runtime's own architecture), or
    - copy the zip unchanged to ${denoDir()}/dl/release/v${Deno.version.deno}/${zip}
  Until then, run the programs from source: deno run -A server.ts / worker.ts (see docs/deployment.md).`;
  }
  return `Cannot build ${output}: deno compile failed: ${detail}`;
}

/** Every asset's bytes must be inside the binary (deno embeds them raw). */
async function checkAssets(output: string): Promise<string | null> {
  const binary = await Deno.readFile(output);
  for (const asset of ASSETS) {
    const needle = (await Deno.readFile(`${REPO}/${asset}`)).subarray(0, 256);
    if (!contains(binary, needle)) {
      await Deno.remove(output).catch(() => {});
      return `Cannot find ${asset} embedded in ${output}; the file was removed`;
    }
  }
  return null;
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  let at = haystack.indexOf(needle[0]);
  while (at >= 0 && at + needle.length <= haystack.length) {
    let i = 1;
    while (i < needle.length && haystack[at + i] === needle[i]) i++;
    if (i === needle.length) return true;
    at = haystack.indexOf(needle[0], at + 1);
  }
  return false;
}

/** Runs the fresh binary with --version: it must answer as Lorica. */
async function smokeTest(
  program: Program,
  output: string,
  runtime: string | undefined,
): Promise<string | null> {
  let text = "";
  try {
    const child = new Deno.Command(output, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const result = await child.output();
    clearTimeout(timer);
    text = new TextDecoder().decode(result.stdout).trim();
  } catch (error) {
    text = (error as Error).message;
  }
  if (text.startsWith(`lorica-${program} `)) return null;
  return `Cannot use ${output}: it does not run as lorica-${program} (\`--version\` printed ${
    JSON.stringify(text.slice(0, 120))
  })${
    runtime
      ? `; is ${
        JSON.stringify(runtime)
      } really denort of Deno ${Deno.version.deno}, not deno itself?`
      : ""
  } The file was removed.`;
}

function denoDir(): string {
  return Deno.env.get("DENO_DIR") ??
    `${
      Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME")}/.cache`
    }/deno`;
}

/** The last "N: cause" line of an anyhow-style error, or the last line. */
function lastCause(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter(Boolean)
    .filter((l) => !/^Stack backtrace|^\d+: <unknown>$/.test(l));
  const causes = lines.filter((l) => /^\d+: /.test(l));
  const line = causes.length
    ? causes[causes.length - 1].replace(/^\d+: /, "")
    : lines[lines.length - 1] ?? "no output";
  return line.slice(0, 300);
}

async function deno(
  args: string[],
  env: Record<string, string>,
): Promise<{ success: boolean; stdout: string; stderr: string }> {
  const childEnv: Record<string, string> = {
    ...Deno.env.toObject(),
    NO_COLOR: "1",
    ...env,
  };
  if (!env.DENORT_BIN) delete childEnv.DENORT_BIN;
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: childEnv,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    success: result.success,
    stdout: decoder.decode(result.stdout),
    stderr: decoder.decode(result.stderr),
  };
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    complain(`compile: error: ${(error as Error).message}`);
    Deno.exit(
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? 2 : 1,
    );
  }
}
