import assert from "node:assert/strict";
import { UsageError } from "../../../lib/cli/args.ts";
import {
  checkDirectoryOption,
  directoryOf,
} from "../../../lib/cli/option_paths.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-option-paths-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("checkDirectoryOption() creates a missing directory and leaves no probe behind", async () => {
  await withDir(async (dir) => {
    await checkDirectoryOption("--cache", `${dir}/a/b`);
    assert.deepEqual(await entries(`${dir}/a/b`), []);
    await checkDirectoryOption("--gc-roots", `${dir}/a/b`, {
      probe: "symlink",
    });
    assert.deepEqual(await entries(`${dir}/a/b`), []);
  });
});

Deno.test("checkDirectoryOption() names the option and the path of what it cannot use", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/afile`, "");
    const rejects = (promise: Promise<void>, message: string) =>
      assert.rejects(
        promise,
        (error: unknown) =>
          error instanceof UsageError && error.message === message,
      );
    await rejects(
      checkDirectoryOption("--cache", `${dir}/afile`),
      `Cannot use --cache "${dir}/afile": not a directory`,
    );
    await rejects(
      checkDirectoryOption("--database", `${dir}/missing`, {
        create: false,
        label: `--database "${dir}/missing/x.db"`,
      }),
      `Cannot use --database "${dir}/missing/x.db": directory "${dir}/missing" does not exist`,
    );
    await rejects(
      checkDirectoryOption("--database", `${dir}/afile`, {
        create: false,
        label: `--database "${dir}/afile/x.db"`,
      }),
      `Cannot use --database "${dir}/afile/x.db": "${dir}/afile" is not a directory`,
    );
    await assert.rejects(
      checkDirectoryOption("--gc-roots", `${dir}/afile/roots`, {
        label: `the default --gc-roots "${dir}/afile/roots"`,
      }),
      new RegExp(
        `^UsageError: Cannot use the default --gc-roots "${dir}/afile/roots": Not a directory`,
      ),
    );
    assert.ok(!(await entries(dir)).includes("missing"));
  });
});

Deno.test("directoryOf() is the directory of a file name", () => {
  assert.equal(directoryOf("/var/lib/lorica/lorica.db"), "/var/lib/lorica");
  assert.equal(directoryOf("/lorica.db"), "/");
  assert.equal(directoryOf("lorica.db"), ".");
  assert.equal(directoryOf("state/lorica.db"), "state");
});
