// Test helpers: a temporary store/state/config per daemon, and a runner for
// the `guix` launcher.

/** One fake daemon's environment inside a shared temporary directory. */
export interface DaemonEnv {
  root: string;
  storeDir: string;
  stateDir: string;
  configDir: string;
  env: Record<string, string>;
}

/** What one `guix` run printed and how it exited. */
export interface GuixRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The launcher under test. */
export const GUIX = new URL("./guix", import.meta.url).pathname;

/** Creates a temporary root with a store shared by the daemons made from it. */
export async function makeRoot(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "fake-guix-test-" });
  await Deno.mkdir(`${root}/store`);
  return root;
}

/** A daemon called `name` whose store is `<root>/store`. */
export async function makeDaemon(
  root: string,
  name: string,
  extra: Record<string, string> = {},
): Promise<DaemonEnv> {
  const storeDir = `${root}/store`;
  const stateDir = `${root}/${name}/state`;
  const configDir = `${root}/${name}/etc`;
  await Deno.mkdir(configDir, { recursive: true });
  const env = {
    NIX_STORE_DIR: storeDir,
    FAKE_GUIX_STATE: stateDir,
    GUIX_CONFIGURATION_DIRECTORY: configDir,
    FAKE_GUIX_DENO: Deno.execPath(),
    ...extra,
  };
  return { root, storeDir, stateDir, configDir, env };
}

/**
 * A daemon called `name` (see {@link makeDaemon}) with a signing key, as
 * `guix publish` needs one.
 */
export async function makeSigningDaemon(
  root: string,
  name: string,
  extra: Record<string, string> = {},
): Promise<DaemonEnv> {
  const daemon = await makeDaemon(root, name, extra);
  const keys = await guix(daemon, ["archive", "--generate-key"]);
  if (keys.code !== 0) {
    throw new Error(`guix archive --generate-key failed: ${keys.stderr}`);
  }
  return daemon;
}

/** Runs `guix ARGS` for `daemon`, feeding `stdin` when given. */
export async function guix(
  daemon: DaemonEnv,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<GuixRun> {
  const child = new Deno.Command(GUIX, {
    args,
    env: { ...daemon.env, ...options.env },
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

/** A running `guix publish` and its base URL. */
export interface PublishServer {
  url: string;
  stop: () => Promise<void>;
}

/** Starts `guix publish` on 127.0.0.1 with a free port for `daemon`. */
export async function startPublish(
  daemon: DaemonEnv,
  args: string[] = ["-C0"],
): Promise<PublishServer> {
  const child = new Deno.Command(GUIX, {
    args: ["publish", "--listen=127.0.0.1", "--port=0", ...args],
    env: daemon.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/port (\d+)\n/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`guix publish exited early: ${text}`);
    text += value;
  }
  const port = text.match(/port (\d+)\n/)![1];
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await drain;
    },
  };
}

/** Writes a scenario file under `root` and returns its path. */
export async function writeScenario(
  root: string,
  scenario: unknown,
  name = "scenario.json",
): Promise<string> {
  const file = `${root}/${name}`;
  await Deno.writeTextFile(file, JSON.stringify(scenario));
  return file;
}

/** Writes a one-channel channels file under `root`. */
export async function writeChannels(root: string): Promise<string> {
  const file = `${root}/channels.scm`;
  await Deno.writeTextFile(
    file,
    `(list (channel (name 'guix) (url "https://git.example.org/guix.git") (branch "master") (commit "0123456789abcdef0123456789abcdef01234567")))\n`,
  );
  return file;
}

/** Evaluates `build` for `system`; returns the job data and the raw run. */
export async function evaluate(
  daemon: DaemonEnv,
  channels: string,
  build: string,
  system: string,
): Promise<GuixRun> {
  return await guix(daemon, [
    "time-machine",
    "-C",
    channels,
    "--",
    "repl",
    "--",
    "/nonexistent/evaluate.scm",
    build,
    system,
  ]);
}

/**
 * Evaluates the scenario of `daemon` for x86_64-linux; returns each
 * package's derivation by package name.
 */
export async function evaluatedDerivations(
  daemon: DaemonEnv,
): Promise<Map<string, string>> {
  const run = await evaluate(
    daemon,
    await writeChannels(daemon.root),
    "all",
    "x86_64-linux",
  );
  if (run.code !== 0) {
    throw new Error(`Cannot evaluate: exit code ${run.code}: ${run.stderr}`);
  }
  const drvs = new Map<string, string>();
  for (const line of run.stdout.split("\n")) {
    const match = /\(name "([^"]+)\.x86_64-linux"\) \(derivation "([^"]+)"/
      .exec(line);
    if (match) drvs.set(match[1], match[2]);
  }
  return drvs;
}
