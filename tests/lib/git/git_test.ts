import assert from "node:assert/strict";
import {
  Git,
  GitError,
  type GitOptions,
  mirrorDirectory,
} from "../../../lib/git/git.ts";
import { type Child, spawnProcess } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";
import { systemClock } from "../../../lib/clock.ts";
import { FakeClock } from "../server/_dispatch_fixture.ts";
import { git, gitWithin } from "./_git.ts";
import { within } from "../../_within.ts";

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

/**
 * A temporary directory `root` holding `repo`, a repository made by
 * makeRepository(): what nearly every test here starts from. Disposing
 * removes the directory with all a test put in it (mirrors, checkouts).
 */
async function repositoryInTempDir() {
  const root = await Deno.makeTempDir({ prefix: "lorica-git-" });
  const removeRoot = () => Deno.remove(root, { recursive: true });
  try {
    const repo = await makeRepository(root);
    return { root, repo, [Symbol.asyncDispose]: removeRoot };
  } catch (error) {
    await removeRoot();
    throw error;
  }
}

/**
 * Corrupts the loose object of `repo`'s HEAD commit in `mirror`: damage
 * git notices only when it reads the object (fsck, or a checkout).
 */
async function corruptTipObject(repo: string, mirror: string) {
  const tip = (await git(repo, "rev-parse", "HEAD")).trim();
  await overwrite(`${mirror}/objects/${tip.slice(0, 2)}/${tip.slice(2)}`, JUNK);
}

Deno.test({
  name:
    "Git fetches a branch into a mirror, follows new commits and checks out (needs git)",
  ignore: !hasGit,
  async fn() {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
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
  },
});

Deno.test({
  name: "Git reports bad URLs, branches and commits as GitError (needs git)",
  ignore: !hasGit,
  async fn(t) {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
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
  },
});

/** A Git client whose log lines are kept in `lines`. */
function loggingGit(
  options: GitOptions = {},
): { client: Git; lines: string[]; commands: string[][] } {
  const lines: string[] = [];
  const commands: string[][] = [];
  const logger = createLogger({
    level: "debug",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const client = new Git({
    logger,
    spawn: (argv, spawnOptions) => {
      commands.push(argv);
      return spawnProcess(argv, spawnOptions);
    },
    ...options,
  });
  return { client, lines, commands };
}

/** Overwrites `path` (read-only, as git leaves objects) with `bytes`. */
async function overwrite(path: string, bytes: Uint8Array, at = 0) {
  await Deno.chmod(path, 0o644);
  const file = await Deno.open(path, { write: true });
  try {
    await file.seek(at, Deno.SeekMode.Start);
    await file.write(bytes);
  } finally {
    file.close();
  }
}

/** The mirror's objects, as loose files and pack files. */
async function objectFiles(mirror: string): Promise<string[]> {
  const files: string[] = [];
  for await (const dir of Deno.readDir(`${mirror}/objects`)) {
    if (!dir.isDirectory || dir.name === "info") continue;
    for await (const file of Deno.readDir(`${mirror}/objects/${dir.name}`)) {
      files.push(`${mirror}/objects/${dir.name}/${file.name}`);
    }
  }
  return files.sort();
}

/** The level and event of a log line that names `mirror`. */
function eventOf(line: string, mirror: string): string {
  const at = line.indexOf(` mirror=${mirror} `);
  assert.ok(at > 0, `no mirror=${mirror} in ${line}`);
  return line.slice(0, at);
}

const JUNK = new TextEncoder().encode("this is no zlib stream at all\n");

/** The names in directory `dir`, sorted. */
function namesIn(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((entry) => entry.name).sort();
}

Deno.test({
  name: "Git rebuilds a mirror git finds damaged, and logs it (needs git)",
  ignore: !hasGit,
  async fn(t) {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
    const url = `file://${repo}`;
    const damages: [string, (mirror: string) => Promise<void>][] = [
      ["HEAD overwritten with junk", async (mirror) => {
        await Deno.writeTextFile(`${mirror}/HEAD`, "junk\n");
      }],
      ["the branch's commit, a loose object, corrupt", async (mirror) => {
        await corruptTipObject(repo, mirror);
      }],
      ["a pack corrupt", async (mirror) => {
        await git(mirror, "repack", "-a", "-d", "-q");
        const pack = (await objectFiles(mirror))
          .find((path) => path.endsWith(".pack"))!;
        await overwrite(pack, JUNK, 100);
      }],
    ];
    let n = 0;
    for (const [name, damage] of damages) {
      await t.step(name, async () => {
        const { client, lines } = loggingGit();
        const mirror = `${root}/cache-${n++}/mirror.git`;
        await client.fetchBranch(url, "main", mirror);
        await damage(mirror);
        const next = await commit(repo, `after ${name}`);

        assert.equal(await client.fetchBranch(url, "main", mirror), next);
        assert.deepEqual(
          lines.map((line) => eventOf(line, mirror)),
          [
            "warn git mirror damaged",
            "info git mirror rebuilt",
          ],
        );
        assert.match(lines[0], / damage="?(fatal|error): /);
        // The new mirror is whole, and nothing is left beside it but
        // the rebuild lock's file.
        await git(mirror, "fsck", "--no-progress");
        assert.deepEqual(namesIn(`${mirror}/..`), [
          "mirror.git",
          "mirror.git.lock",
        ]);
        // A commit is found in the rebuilt mirror too.
        const { client: again } = loggingGit();
        await Deno.writeTextFile(`${mirror}/HEAD`, "junk\n");
        assert.equal(await again.fetchCommit(url, next, mirror), next);
      });
    }
  },
});

Deno.test({
  name:
    "Git keeps a sound mirror when the branch or repository is missing (needs git)",
  ignore: !hasGit,
  async fn() {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
    const clock = new FakeClock();
    const { client, lines, commands } = loggingGit({
      clock: {
        ...systemClock,
        monotonic: () => clock.monotonic(),
      },
    });
    const mirror = `${root}/cache/mirror.git`;
    await client.fetchBranch(`file://${repo}`, "main", mirror);
    const before = await objectFiles(mirror);
    const marker = `${mirror}/objects/lorica-test-marker`;
    await Deno.writeTextFile(marker, "");
    for (
      const [url, branch] of [
        [`file://${repo}`, "no-such-branch"],
        [`file://${root}/no-such-repository`, "main"],
      ]
    ) {
      await assert.rejects(
        client.fetchBranch(url, branch, mirror),
        GitError,
      );
    }
    assert.deepEqual(lines, [], "no repair for a remote problem");
    await Deno.stat(marker); // the same mirror, not a new clone
    // Found sound, the mirror is not read whole again at each failure
    // (a gone branch fails every poll) until an hour has passed.
    const fscks = () => commands.filter((argv) => argv.includes("fsck")).length;
    assert.equal(fscks(), 1);
    await assert.rejects(
      client.fetchBranch(`file://${repo}`, "no-such-branch", mirror),
      GitError,
    );
    assert.equal(fscks(), 1);
    await clock.advance(60 * 60 * 1000);
    await assert.rejects(
      client.fetchBranch(`file://${repo}`, "no-such-branch", mirror),
      GitError,
    );
    assert.equal(fscks(), 2);
    assert.deepEqual(
      (await objectFiles(mirror)).filter((path) => path !== marker),
      before,
    );
  },
});

Deno.test({
  name:
    "Git keeps a damaged mirror when the fetch into its replacement fails (needs git)",
  ignore: !hasGit,
  async fn() {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
    const { client, lines } = loggingGit();
    const mirror = `${root}/cache/mirror.git`;
    await client.fetchBranch(`file://${repo}`, "main", mirror);
    await Deno.writeTextFile(`${mirror}/HEAD`, "junk\n");
    await Deno.remove(repo, { recursive: true });

    await assert.rejects(
      client.fetchBranch(`file://${repo}`, "main", mirror),
      GitError,
    );
    assert.deepEqual(
      lines.map((line) => eventOf(line, mirror)),
      [
        "warn git mirror damaged",
        "warn git mirror rebuild failed",
      ],
    );
    assert.equal(await Deno.readTextFile(`${mirror}/HEAD`), "junk\n");
    assert.deepEqual(namesIn(`${root}/cache`), [
      "mirror.git",
      "mirror.git.lock",
    ]);
  },
});

Deno.test({
  name:
    "Git: two processes' rebuilds of one damaged mirror both end with a sound mirror (needs git)",
  ignore: !hasGit,
  async fn() {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
    const url = `file://${repo}`;
    const mirror = `${root}/cache/mirror.git`;
    await new Git().fetchBranch(url, "main", mirror);
    // Damage git finds only with fsck: the branch's commit corrupt.
    await corruptTipObject(repo, mirror);
    const next = await commit(repo, "after the damage");

    // Two instances on one cache directory, as two server processes
    // have: each finds the damage before either starts its rebuild.
    const bothChecked = rendezvous(2);
    const servers = [0, 1].map(() =>
      loggingGit({
        spawn: (argv, options) => {
          const child = spawnProcess(argv, options);
          return argv.includes("fsck") ? heldBack(child, bothChecked()) : child;
        },
      })
    );
    const results = await Promise.allSettled(
      servers.map(({ client }) => client.fetchBranch(url, "main", mirror)),
    );
    assert.deepEqual(results, [
      { status: "fulfilled", value: next },
      { status: "fulfilled", value: next },
    ]);
    await git(mirror, "fsck", "--no-progress");
    assert.equal(
      (await git(mirror, "rev-parse", "refs/heads/main")).trim(),
      next,
    );
    assert.deepEqual(namesIn(`${root}/cache`), [
      "mirror.git",
      "mirror.git.lock",
    ]);
    // One rebuilt it; the other, once it had the lock, used that one.
    const events = servers.map(({ lines }) =>
      lines.map((line) => eventOf(line, mirror)).join(", ")
    ).sort();
    assert.deepEqual(events, [
      "warn git mirror damaged, info git mirror rebuilt",
      "warn git mirror damaged, info git mirror rebuilt by another process",
    ]);
  },
});

Deno.test({
  name:
    "Git removes what a rebuild cut short by a crash left beside the mirror, and nothing else (needs git)",
  ignore: !hasGit,
  async fn() {
    await using scratch = await repositoryInTempDir();
    const { root, repo } = scratch;
    const url = `file://${repo}`;
    const cache = `${root}/cache`;
    const mirror = `${cache}/mirror.git`;
    await new Git().fetchBranch(url, "main", mirror);
    // A new mirror half fetched, a damaged one set aside, and the fixed
    // names earlier versions used; and another mirror's, to be kept.
    const leftovers = [
      "mirror.git.rebuild-k3j9x2",
      "mirror.git.damaged-p0q8w1",
      "mirror.git.rebuild",
      "mirror.git.damaged",
    ];
    for (const name of leftovers) {
      await git(root, "init", "--quiet", "--bare", `${cache}/${name}`);
    }
    await Deno.mkdir(`${cache}/other.git.rebuild-a1b2c3`);

    const { client, lines } = loggingGit();
    const next = await commit(repo, "second");
    assert.equal(await client.fetchBranch(url, "main", mirror), next);
    assert.deepEqual(namesIn(cache), [
      "mirror.git",
      "mirror.git.lock",
      "other.git.rebuild-a1b2c3",
    ]);
    assert.deepEqual(
      lines.map((line) => eventOf(line, mirror)).sort(),
      leftovers.map(() => "info git mirror rebuild leftover removed"),
    );
    // Looked for once per mirror, not at every fetch.
    await Deno.mkdir(`${cache}/mirror.git.rebuild-later`);
    await client.fetchBranch(url, "main", mirror);
    assert.ok(namesIn(cache).includes("mirror.git.rebuild-later"));
  },
});

/**
 * A meeting point for `count` callers: each call returns a promise that
 * resolves once `count` calls were made (later calls resolve at once), or
 * rejects after `timeoutMs` saying how many came, so that a fixture in
 * which one never comes fails its test instead of hanging it.
 */
function rendezvous(count: number, timeoutMs = 60_000): () => Promise<void> {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((resolve) => release = resolve);
  return () => {
    if (++arrived === count) release();
    return within(
      all,
      timeoutMs,
      `meeting of ${count} callers (${arrived} came)`,
    );
  };
}

/** `child`, its exit reported only once `ready` resolves too. */
function heldBack(child: Child, ready: Promise<void>): Child {
  return {
    pid: child.pid,
    stdout: child.stdout,
    stderr: child.stderr,
    stdin: child.stdin,
    status: ready.then(() => child.status),
    kill: (signal) => child.kill(signal),
  };
}

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
    // Killed, it still takes its turn on a CPU to die.
    for (let i = 0; i < 100 && running(helper); i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
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

/** Ample for a bound of 200 ms or less: reached only by an unbounded wait. */
const GIVE_UP_MS = 20_000;

Deno.test("rendezvous() gives up, saying how many came, when one caller never comes", async () => {
  const meet = rendezvous(2, 50);
  await assert.rejects(
    within(meet(), GIVE_UP_MS, "end of the wait"),
    /^Error: no meeting of 2 callers \(1 came\) in 50 ms$/,
  );
});

Deno.test({
  name:
    "the git fixture helper kills a git that never answers, naming the command (needs git)",
  ignore: !hasGit,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lorica-git-" });
    try {
      await git(dir, "init", "--quiet");
      // Git opens a FIFO no one writes to: git itself waits, for ever.
      const mkfifo = await new Deno.Command("mkfifo", { args: [`${dir}/fifo`] })
        .output();
      assert.ok(mkfifo.success, "mkfifo failed");
      await assert.rejects(
        within(
          gitWithin(200, dir, "hash-object", "fifo"),
          GIVE_UP_MS,
          "end of git",
        ),
        /^Error: Cannot run "git hash-object fifo" in ".*": no answer in 200 ms \(killed\)$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
