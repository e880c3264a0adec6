import assert from "node:assert/strict";
import { Git, GitError, mirrorDirectory } from "../../../lib/git/git.ts";
import { spawnProcess } from "../../../lib/process.ts";
import { FakeClock } from "../server/_dispatch_fixture.ts";

const hasGit = await new Deno.Command("git", { args: ["--version"] })
  .output().then((r) => r.success, () => false);

/** A real repository with one commit on `main`; returns its path. */
async function makeRepository(root: string): Promise<string> {
  const dir = `${root}/channel`;
  await Deno.mkdir(dir, { recursive: true });
  await git(dir, "init", "--quiet", "--initial-branch=main");
  await commit(dir, "first");
  return dir;
}

/** Adds a commit to `dir`; returns its id. */
async function commit(dir: string, text: string): Promise<string> {
  await Deno.writeTextFile(`${dir}/file.scm`, `;; ${text}\n`);
  await git(dir, "add", "file.scm");
  await git(dir, "commit", "--quiet", "-m", text);
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

async function git(dir: string, ...args: string[]): Promise<string> {
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

Deno.test({
  name:
    "Git fetches a branch into a mirror, follows new commits and checks out (needs git)",
  ignore: !hasGit,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "lorica-git-" });
    try {
      const repo = await makeRepository(root);
      const first = (await git(repo, "rev-parse", "HEAD")).trim();
      const client = new Git();
      const mirror = mirrorDirectory(`${root}/cache`, repo);
      assert.equal(await client.fetchBranch(repo, "main", mirror), first);
      assert.equal(await client.fetchBranch(repo, "main", mirror), first);
      const second = await commit(repo, "second");
      assert.equal(
        await client.fetchBranch(`file://${repo}`, "main", mirror),
        second,
      );
      assert.equal(await client.fetchCommit(repo, first, mirror), first);
      await client.checkout(mirror, first, `${root}/work`);
      assert.equal(
        await Deno.readTextFile(`${root}/work/file.scm`),
        ";; first\n",
      );
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "Git reports bad URLs, branches and commits as GitError (needs git)",
  ignore: !hasGit,
  async fn(t) {
    const root = await Deno.makeTempDir({ prefix: "lorica-git-" });
    try {
      const repo = await makeRepository(root);
      const client = new Git();
      const mirror = `${root}/mirror.git`;
      const cases: [string, () => Promise<unknown>, RegExp][] = [
        [
          "missing repository",
          () => client.fetchBranch(`${root}/nope`, "main", mirror),
          /^Cannot run "git fetch": exit code 128: /,
        ],
        [
          "unknown branch",
          () => client.fetchBranch(repo, "nope", mirror),
          /exit code/,
        ],
        [
          "option as URL",
          () => client.fetchBranch("--upload-pack=touch x", "main", mirror),
          /not acceptable/,
        ],
        [
          "option as branch",
          () => client.fetchBranch(repo, "-x", mirror),
          /not acceptable/,
        ],
        [
          "unknown commit",
          () => client.fetchCommit(repo, "0".repeat(40), mirror),
          /exit code/,
        ],
      ];
      for (const [name, action, message] of cases) {
        await t.step(name, async () => {
          await assert.rejects(action(), (error) => {
            assert.ok(error instanceof GitError);
            assert.match(error.message, message);
            return true;
          });
        });
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("Git's timeout holds when git's children keep its pipes open", async () => {
  // A fetch whose remote helper hangs: git is killed, the helper (here a
  // `sleep`, which ends by itself) still holds stdout and stderr.
  const client = new Git({
    timeoutMs: 200,
    spawn: (_argv, options) =>
      spawnProcess(["sh", "-c", "sleep 4 & wait"], options),
  });
  const started = Date.now();
  await assert.rejects(
    client.run(["fetch", "x"]),
    (error) =>
      error instanceof GitError && error.timedOut &&
      /"git fetch": no answer after 0 s/.test(error.message),
  );
  const elapsed = Date.now() - started;
  assert.ok(elapsed < 2000, `run() took ${elapsed} ms`);
});

Deno.test("Git kills a command that exceeds its timeout", async () => {
  const client = new Git({
    timeoutMs: 200,
    // A stand-in git that never answers.
    spawn: (_argv, options) => spawnProcess(["sleep", "30"], options),
  });
  await assert.rejects(
    client.run(["ls-remote", "x"]),
    (error) => error instanceof GitError && error.timedOut,
  );
});

Deno.test("Git's timeout kills git's children with it", async () => {
  // A git whose child (here a `sleep`, as a remote helper stuck on the
  // network) writes its pid, then both wait.
  const dir = await Deno.makeTempDir({ prefix: "lorica-git-" });
  const pidFile = `${dir}/helper.pid`;
  const clock = new FakeClock();
  const client = new Git({
    timeoutMs: 60_000,
    clock,
    spawn: (_argv, options) =>
      spawnProcess([
        "sh",
        "-c",
        'sleep 30 & echo $! > "$0.tmp" && mv "$0.tmp" "$0"; wait',
        pidFile,
      ], options),
  });
  let helper = 0;
  try {
    const fetching = client.run(["fetch", "x"]);
    fetching.catch(() => {}); // Awaited below, once the clock moved.
    for (let i = 0; i < 200 && helper === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      helper = Number(await Deno.readTextFile(pidFile).catch(() => "0"));
    }
    assert.ok(helper > 0, "the helper did not start");
    await clock.advance(60_000);
    await assert.rejects(
      fetching,
      (error) => error instanceof GitError && error.timedOut,
    );
    assert.ok(!running(helper), `helper ${helper} still runs`);
  } finally {
    if (helper > 0 && running(helper)) Deno.kill(helper, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

/** Whether `pid` exists and is no zombie. */
function running(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !==
      "Z";
  } catch {
    return false;
  }
}
