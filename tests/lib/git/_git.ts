// The real git command line, for tests that build the repositories and
// mirrors lib/git works on: one helper, so every test commits as the same
// author without depending on the machine's git configuration, and a
// fixture whose git never answers fails its test instead of hanging it.

/** Longer than any fixture's git command takes: past it, git is stuck. */
export const FIXTURE_GIT_TIMEOUT_MS = 60_000;

/**
 * Runs `git -C dir ...args` with a fixed author and committer; its stdout.
 * @throws {Error} with git's stderr when git exits non-zero, or naming the
 * command when it does not end within FIXTURE_GIT_TIMEOUT_MS
 */
export function git(dir: string, ...args: string[]): Promise<string> {
  return gitWithin(FIXTURE_GIT_TIMEOUT_MS, dir, ...args);
}

/** {@linkcode git}, killed past `timeoutMs`. */
export async function gitWithin(
  timeoutMs: number,
  dir: string,
  ...args: string[]
): Promise<string> {
  const killer = new AbortController();
  const timer = setTimeout(() => killer.abort(), timeoutMs);
  try {
    const output = await new Deno.Command("git", {
      args: ["-C", dir, ...args],
      env: {
        GIT_AUTHOR_NAME: "t",
        GIT_AUTHOR_EMAIL: "t@example.org",
        GIT_COMMITTER_NAME: "t",
        GIT_COMMITTER_EMAIL: "t@example.org",
        // Never wait for a password.
        GIT_TERMINAL_PROMPT: "0",
      },
      stdin: "null",
      signal: killer.signal,
    }).output();
    if (killer.signal.aborted) {
      throw new Error(
        `Cannot run ${JSON.stringify(`git ${args.join(" ")}`)} in ${
          JSON.stringify(dir)
        }: no answer in ${timeoutMs} ms (killed)`,
      );
    }
    if (!output.success) {
      throw new Error(new TextDecoder().decode(output.stderr));
    }
    return new TextDecoder().decode(output.stdout);
  } finally {
    clearTimeout(timer);
  }
}
