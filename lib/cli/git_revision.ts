// The Git revision of a checkout, for `--version` and the compiled binaries.

/**
 * Returns the commit of `dir` (12 hex digits, "-dirty" when tracked files
 * changed), `LORICA_REVISION` when set (package builds without .git), or
 * null when neither is known.
 */
export async function gitRevision(dir: string): Promise<string | null> {
  const fromEnv = Deno.env.get("LORICA_REVISION");
  if (fromEnv) return fromEnv;
  const head = await git(dir, ["rev-parse", "--short=12", "HEAD"]);
  if (head === null || !/^[0-9a-f]{7,40}$/.test(head)) return null;
  const changes = await git(dir, [
    "status",
    "--porcelain",
    "--untracked-files=no",
  ]);
  return changes ? `${head}-dirty` : head;
}

async function git(dir: string, args: string[]): Promise<string | null> {
  try {
    const result = await new Deno.Command("git", {
      args: ["-C", dir, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return result.success
      ? new TextDecoder().decode(result.stdout).trim()
      : null;
  } catch {
    return null;
  }
}
