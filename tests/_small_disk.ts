// A small file system that a test can fill up: a tmpfs mounted inside a
// private mount namespace held by a `sleep` process, reached from the test
// through /proc/PID/root. (SQLite resolves that link to "/" and so opens
// the host's file beneath: a database test runs its body inside the
// namespace instead, with runOnSmallDisk().) Killing that process (by pid) drops the namespace
// and its mount with it, so nothing is left mounted on the host, even when
// the test dies half-way.

/** Root, `unshare` and `mount` are there: a small disk can be made. */
export function smallDiskAvailability(): { ok: boolean; reason: string } {
  if (Deno.build.os !== "linux") return { ok: false, reason: "not Linux" };
  if (Deno.uid() !== 0) return { ok: false, reason: "not root" };
  for (const tool of ["unshare", "mount"]) {
    const found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].some((dir) => {
      try {
        return Deno.statSync(`${dir}/${tool}`).isFile;
      } catch {
        return false;
      }
    });
    if (!found) return { ok: false, reason: `no ${tool}` };
  }
  return { ok: true, reason: "" };
}

/** A mounted tmpfs of a few MiB; fill it, free it, drop it. */
export interface SmallDisk extends AsyncDisposable {
  /** The mounted directory, as this process reaches it. */
  readonly path: string;
  /** Writes a filler file until the file system has no byte left. */
  fill(): Promise<void>;
  /** Removes the filler file, or only its last `bytes` when given. */
  free(bytes?: number): Promise<void>;
}

/**
 * Mounts a tmpfs of `sizeBytes` in a namespace of its own.
 * @throws {Error} naming the command when the mount cannot be made.
 */
export async function mountSmallDisk(sizeBytes: number): Promise<SmallDisk> {
  const holder = await Deno.makeTempDir({ prefix: "lorica-small-disk-" });
  const mountPoint = `${holder}/disk`;
  await Deno.mkdir(mountPoint);
  const script = `mount -t tmpfs -o size=${sizeBytes} lorica-test ` +
    `'${mountPoint}' && echo mounted && exec sleep 600`;
  const child = new Deno.Command("unshare", {
    args: ["--mount", "--propagation", "private", "sh", "-c", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  reader.releaseLock();
  void child.stdout.cancel().catch(() => {});
  const stderr = child.stderr;
  if (!new TextDecoder().decode(first.value ?? new Uint8Array()).trim()) {
    const message = await new Response(stderr).text();
    await child.status;
    await Deno.remove(holder, { recursive: true }).catch(() => {});
    throw new Error(
      `Cannot mount a tmpfs at ${JSON.stringify(mountPoint)}: ${message}`,
    );
  }
  void stderr.cancel().catch(() => {});
  const path = `/proc/${child.pid}/root${mountPoint}`;
  return {
    path,
    fill: () => fillDisk(path),
    free: (bytes) => freeDisk(path, bytes),
    async [Symbol.asyncDispose]() {
      try {
        Deno.kill(child.pid, "SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(holder, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes `<dir>/filler` until the file system has no byte left. */
export async function fillDisk(dir: string): Promise<void> {
  using file = await Deno.open(`${dir}/filler`, { write: true, create: true });
  const block = new Uint8Array(64 * 1024);
  try {
    while (true) await file.write(block);
  } catch (error) {
    if (!(error instanceof Error) || !/os error 28/.test(error.message)) {
      throw error;
    }
  }
  // The last blocks may be half used: fill them byte by byte.
  try {
    while (true) await file.write(block.subarray(0, 1));
  } catch { /* full */ }
}

/** Removes `<dir>/filler`, or only its last `bytes` when given. */
export async function freeDisk(dir: string, bytes?: number): Promise<void> {
  const filler = `${dir}/filler`;
  if (bytes === undefined) {
    await Deno.remove(filler).catch(() => {});
    return;
  }
  const { size } = await Deno.stat(filler);
  await Deno.truncate(filler, Math.max(0, size - bytes));
}

/**
 * Runs `script` with `deno run -A` in a mount namespace of its own, with
 * a tmpfs of `sizeBytes` (and at most `inodes` files) mounted for it,
 * whose path is its first argument;
 * resolves with what it printed on stdout. The namespace, and the mount,
 * end with the script.
 * @throws {Error} with its stderr when the script fails.
 */
export async function runOnSmallDisk(
  script: string,
  sizeBytes: number,
  { inodes }: { inodes?: number } = {},
): Promise<string> {
  const options = `size=${sizeBytes}` +
    (inodes === undefined ? "" : `,nr_inodes=${inodes}`);
  const holder = await Deno.makeTempDir({ prefix: "lorica-small-disk-" });
  const mountPoint = `${holder}/disk`;
  try {
    await Deno.mkdir(mountPoint);
    const result = await new Deno.Command("unshare", {
      args: [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        `mount -t tmpfs -o ${options} lorica-test "$1" && ` +
        `exec "$2" run -A "$3" "$1"`,
        "sh",
        mountPoint,
        Deno.execPath(),
        script,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    if (!result.success) {
      throw new Error(
        `Cannot run ${JSON.stringify(script)} on a small disk: ${
          decoder.decode(result.stderr)
        }`,
      );
    }
    return decoder.decode(result.stdout);
  } finally {
    await Deno.remove(holder, { recursive: true }).catch(() => {});
  }
}

/** Creates empty files in `<dir>/fillers` until no inode is left. */
export async function fillInodes(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/fillers`);
  for (let i = 0; i < 100_000; i++) {
    try {
      await Deno.writeFile(`${dir}/fillers/${i}`, new Uint8Array());
    } catch (error) {
      if (/os error 28/.test((error as Error).message)) return;
      throw error;
    }
  }
  throw new Error(`Cannot use up the inodes of ${JSON.stringify(dir)}`);
}
