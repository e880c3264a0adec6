// The real git command line, for tests that build the repositories and
// mirrors lib/git works on: one helper, so every test commits as the same
// author without depending on the machine's git configuration.

/**
 * Runs `git -C dir ...args` with a fixed author and committer; its stdout.
 * @throws {Error} with git's stderr when git exits non-zero
 */
export async function git(dir: string, ...args: string[]): Promise<string> {
  const output = await new Deno.Command("git", {
    args: ["-C", dir, ...args],
    env: {
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.org",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.org",
    },
  }).output();
  if (!output.success) throw new Error(new TextDecoder().decode(output.stderr));
  return new TextDecoder().decode(output.stdout);
}
