// `deno run -A scripts/vendor.ts`: copies every dependency into the tree
// (npm packages into node_modules/, remote modules into vendor/) and proves
// that the programs then start with an empty DENO_DIR and no registry.

import { parseArgs } from "node:util";
import { fileURLToPath as fromFileUrl } from "node:url";
import { isAbsolute, relative, resolve } from "node:path";

const USAGE =
  `Usage: deno run -A scripts/vendor.ts [--offline] [--archive=FILE.tar.gz]
Vendors every dependency of deno.json (npm packages included) into this tree,
then checks, with an empty DENO_DIR and --cached-only, that each npm import
loads and that server.ts and worker.ts start.

  --offline             take packages from DENO_DIR only (no registry access)
  --archive=FILE        then pack the tree (without .git and dist/) into FILE
  -h, --help            show this help

Run the vendored tree with:
  deno run ${"--cached-only --vendor --node-modules-dir=manual"} -A server.ts ...

Exit status: 0 vendored and verified, 1 a step failed, 2 bad usage.`;

/** Flags for running a vendored tree without any registry. */
export const OFFLINE_RUN_FLAGS = [
  "--cached-only",
  "--vendor",
  "--node-modules-dir=manual",
];

// deno-lint-ignore no-console
const say = console.log;
// deno-lint-ignore no-console
const complain = console.error;

const REPO = fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "");

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      offline: { type: "boolean", default: false },
      archive: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }

  say("Installing dependencies into node_modules/ and vendor/...");
  const install = await deno([
    "install",
    "--vendor",
    "--node-modules-dir=auto",
    "--frozen",
    ...(values.offline ? ["--cached-only"] : []),
  ]);
  if (install.code !== 0) {
    complain(install.stderr.trim());
    complain(
      `vendor: error: Cannot install the dependencies${
        values.offline
          ? " from DENO_DIR alone (drop --offline to download)"
          : ""
      }`,
    );
    return 1;
  }

  const emptyDir = await Deno.makeTempDir({ prefix: "lorica-empty-deno-dir-" });
  try {
    const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
    const npmNames = Object.entries(config.imports ?? {})
      .filter(([, target]) => String(target).startsWith("npm:"))
      .map(([name]) => name);
    const probe = npmNames.map((name) =>
      `await import(${JSON.stringify(name)});`
    ).join("\n") + "\nconsole.log('ok');";
    const checks: [string, string[]][] = [
      [`npm imports (${npmNames.join(", ")})`, [
        "eval",
        ...OFFLINE_RUN_FLAGS,
        probe,
      ]],
      ["server.ts", ["run", ...OFFLINE_RUN_FLAGS, "-A", "server.ts", "--help"]],
      ["worker.ts", ["run", ...OFFLINE_RUN_FLAGS, "-A", "worker.ts", "--help"]],
    ];
    for (const [what, check] of checks) {
      const result = await deno(check, { DENO_DIR: emptyDir });
      if (result.code !== 0) {
        complain(result.stderr.trim());
        complain(
          `vendor: error: Cannot load ${what} from the vendored tree with an empty DENO_DIR`,
        );
        return 1;
      }
      say(`  ${what}: loads with an empty DENO_DIR and --cached-only`);
    }
  } finally {
    await Deno.remove(emptyDir, { recursive: true });
  }

  if (values.archive) {
    // Written elsewhere, then moved into place: tar fails ("file changed as
    // we read it") when the tree changes under it, as it does when the
    // archive grows inside the tree (the documented
    // `--archive=lorica-vendored.tar.gz`, run from the tree). An older
    // archive there is left out of the new one.
    const archive = resolve(values.archive);
    const inTree = relative(REPO, archive);
    const staging = await Deno.makeTempFile({
      prefix: "lorica-vendored-",
      suffix: ".tar.gz",
    });
    const tar = await new Deno.Command("tar", {
      args: [
        "--exclude=./.git",
        "--exclude=./dist",
        ...(inTree === ".." || inTree.startsWith("../") || isAbsolute(inTree)
          ? []
          : ["--no-wildcards", `--exclude=./${inTree}`]),
        "-czf",
        staging,
        "-C",
        REPO,
        ".",
      ],
      stderr: "piped",
    }).output();
    // A temporary file is private (0600); the archive is not.
    if (tar.success) await Deno.chmod(staging, 0o644);
    const moved = tar.success && await moveFile(staging, archive).then(
      () => true,
      (error) => {
        complain(`vendor: ${error.message}`);
        return false;
      },
    );
    if (!moved) {
      if (!tar.success) complain(new TextDecoder().decode(tar.stderr).trim());
      await Deno.remove(staging).catch(() => {});
      complain(
        `vendor: error: Cannot write the archive ${
          JSON.stringify(values.archive)
        }`,
      );
      return 1;
    }
    say(`Wrote ${values.archive}`);
  }
  say(
    `Vendored. Run without any registry: deno run ${
      OFFLINE_RUN_FLAGS.join(" ")
    } -A server.ts (or worker.ts)`,
  );
  return 0;
}

async function deno(args: string[], env: Record<string, string> = {}) {
  const result = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: result.code,
    stderr: new TextDecoder().decode(result.stderr),
  };
}
/** Moves `from` to `to`, copying when they are on different filesystems. */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await Deno.rename(from, to);
  } catch {
    await Deno.copyFile(from, to);
    await Deno.remove(from);
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    complain(`vendor: error: ${(error as Error).message}`);
    Deno.exit(
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS") ? 2 : 1,
    );
  }
}
