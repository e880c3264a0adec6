// Starts a real farm on this machine: one server and its workers as separate
// processes, each with its own (fake) Guix daemon state and signing key.

import { fileURLToPath as fromFileUrl } from "node:url";
import { readSpecificationFile } from "../lib/spec/read_spec.ts";
import { specificationToJson } from "../lib/web/json_shapes.ts";

export interface WorkerPlan {
  systems: string[];
  /** Concurrent builds of this worker process. */
  sessions: number;
  /**
   * Not started with the farm, only by `restart(role)`: a test sets the
   * stage (the queue, the store) before any worker asks for work.
   */
  held?: boolean;
}

export interface FarmOptions {
  /** Cuirass specification file the server loads. */
  specFile: string;
  /** Scenario of the fake guix: the packages and their behaviour. */
  scenarioFile: string;
  workers: WorkerPlan[];
  /** Web port; 0 picks a free one. */
  webPort: number;
  /** Seconds between work requests after `no-build`. */
  requestPeriod: number;
  /** Directory for stores, logs and databases; default a new temp dir. */
  root?: string;
  /** LORICA_LOG level of the processes. */
  logLevel?: string;
  /** The server's `--worker-timeout` in seconds; default its own (120). */
  workerTimeout?: number;
  /** The Lorica tree whose programs and fake guix run; default this one. */
  tree?: string;
  /** `deno run` flags besides --allow-all, e.g. --cached-only. */
  denoFlags?: string[];
  /**
   * The environment every process starts from instead of this process's;
   * the farm adds its own variables to it.
   */
  baseEnv?: Record<string, string>;
}

export interface Farm {
  readonly root: string;
  readonly webUrl: string;
  /** "server", "worker1", "worker2", ... */
  readonly roles: string[];
  /** The server's SQLite database. */
  readonly database: string;
  /** Environment under which `guix` acts as the given role's daemon. */
  guixEnv(role: string): Record<string, string>;
  /** Where a role's process output goes (appended across restarts). */
  logFile(role: string): string;
  /** Sends `signal` (default SIGKILL) to a role's process; resolves when it exited. */
  kill(role: string, signal?: Deno.Signal): Promise<void>;
  /**
   * Starts a role's process again with the same arguments (after `kill`),
   * or for the first time (a held worker).
   */
  restart(role: string): Promise<void>;
  /** Whether the role's process is running. */
  running(role: string): boolean;
  /** The process id of the role's running process, if any. */
  pid(role: string): number | undefined;
  /** Stops every process started, by pid. */
  stop(): Promise<void>;
}

const REPO = fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "");
/**
 * Free space (GiB) the farm's workers ask for before taking work. The
 * workers' default (5 GiB, Cuirass's) made the farm wait for good, saying
 * so only in the workers' logs, on a machine with less free in TMPDIR; its
 * builds write a few MiB.
 */
export const FARM_MINIMUM_DISK_GIB = 0.1;
/**
 * setsid(1), when the machine has it: a child started through it leads a
 * process group of its own, which can then be signalled or killed whole.
 */
export const SETSID = ["/usr/bin/setsid", "/bin/setsid"].find((path) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
});

/** Starts the server and workers; resolves once the web interface answers. */
export async function startFarm(options: FarmOptions): Promise<Farm> {
  const root = options.root ??
    await Deno.makeTempDir({ prefix: "lorica-farm-" });
  const store = `${root}/store`;
  await Deno.mkdir(store, { recursive: true });
  const children = new Map<string, Deno.ChildProcess>();
  const exited = new Set<string>();
  const plans = new Map<
    string,
    { script: string; args: string[]; env: Record<string, string> }
  >();

  const tree = options.tree ?? REPO;
  const fakeGuixDir = `${tree}/tests/fake-guix`;
  const base = options.baseEnv;

  function guixEnv(role: string): Record<string, string> {
    const path = (base ?? Deno.env.toObject()).PATH ?? "/usr/bin:/bin";
    return {
      ...base,
      PATH: `${fakeGuixDir}:${path}`,
      FAKE_GUIX_DENO: Deno.execPath(),
      NIX_STORE_DIR: store,
      FAKE_GUIX_STATE: `${root}/${role}/daemon`,
      // The same for Lorica, which finds the daemon's roots from it.
      GUIX_STATE_DIRECTORY: `${root}/${role}/daemon`,
      GUIX_CONFIGURATION_DIRECTORY: `${root}/${role}/etc`,
      FAKE_GUIX_SCENARIO: options.scenarioFile,
      LORICA_LOG: options.logLevel ?? "info",
    };
  }

  async function guix(role: string, args: string[], stdin?: string) {
    const child = new Deno.Command(`${fakeGuixDir}/guix`, {
      args,
      env: guixEnv(role),
      clearEnv: base !== undefined,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(stdin));
      await writer.close();
    }
    const result = await child.output();
    if (!result.success) {
      // A guix killed by a signal says nothing on its standard error.
      const stderr = new TextDecoder().decode(result.stderr).trim();
      const why = stderr !== ""
        ? stderr
        : result.signal !== null
        ? `killed by ${result.signal}`
        : `exit code ${result.code}`;
      throw new Error(
        `Cannot run "guix ${args.join(" ")}" for ${role}: ${why}`,
      );
    }
  }

  function start(
    role: string,
    script: string,
    args: string[],
    env: Record<string, string> = {},
  ) {
    plans.set(role, { script, args, env });
    exited.delete(role);
    const logFile = Deno.openSync(`${root}/${role}.log`, {
      create: true,
      append: true,
    });
    // Each role leads its own process group (setsid), so that killing it
    // takes its `guix publish` and builds along, like a machine crash.
    const argv = [
      Deno.execPath(),
      "run",
      ...options.denoFlags ?? [],
      "--allow-all",
      `${tree}/${script}`,
      ...args,
    ];
    const child = new Deno.Command(SETSID ?? argv[0], {
      args: SETSID ? argv : argv.slice(1),
      // The tree's own deno.json (and vendor directory) apply.
      cwd: tree,
      env: { ...guixEnv(role), ...env },
      clearEnv: base !== undefined,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const sink = logFile.writable;
    // Both streams go to the role's log file.
    void Promise.all([
      child.stdout.pipeTo(
        new WritableStream({ write: (c) => writeAll(logFile, c) }),
      ),
      child.stderr.pipeTo(
        new WritableStream({ write: (c) => writeAll(logFile, c) }),
      ),
    ]).finally(() => {
      void sink;
      logFile.close();
    });
    children.set(role, child);
    child.status.then(() => {
      if (children.get(role) === child) exited.add(role);
    });
    return child;
  }

  const roles = ["server", ...options.workers.map((_, i) => `worker${i + 1}`)];
  let ports: number[];
  let webUrl: string;
  try {
    for (const role of roles) {
      await Deno.mkdir(`${root}/${role}/etc`, { recursive: true });
      await guix(role, ["archive", "--generate-key"]);
    }
    // Trust runs both ways: workers substitute derivations and inputs from
    // the server, the server substitutes results from the workers.
    const serverKey = await Deno.readTextFile(
      `${root}/server/etc/signing-key.pub`,
    );
    for (const role of roles.slice(1)) {
      await guix(role, ["archive", "--authorize"], serverKey);
      await guix(
        "server",
        ["archive", "--authorize"],
        await Deno.readTextFile(
          `${root}/${role}/etc/signing-key.pub`,
        ),
      );
    }

    // All in one call: ports picked by separate calls may coincide.
    ports = await freePorts(4 + options.workers.length);
    const webPort = options.webPort === 0 ? ports.at(-1)! : options.webPort;
    const specFile = await withLocalChannel(options.specFile, root);
    const server = start("server", "server.ts", [
      `--specifications=${specFile}`,
      "--build-remote",
      // Never announce on this machine's real interfaces.
      "--no-advertise",
      // Within the daemon's roots, so that it keeps what they name.
      `--gc-roots=${root}/server/daemon/gcroots/lorica`,
      `--database=${root}/server/lorica.db`,
      `--cache=${root}/server/logs`,
      `--backend-port=${ports[0]}`,
      `--log-port=${ports[1]}`,
      `--publish-port=${ports[2]}`,
      "--listen=127.0.0.1",
      `--web-port=${webPort}`,
      ...(options.workerTimeout === undefined
        ? []
        : [`--worker-timeout=${options.workerTimeout}`]),
    ]);
    webUrl = `http://127.0.0.1:${webPort}`;
    await waitForServer(webUrl, root, server);
  } catch (error) {
    // Leave nothing behind, whichever step failed: processes by pid, and
    // the farm's directory. Ctrl-C reaches the whole process group, so the
    // guix commands of the first steps die of it too.
    for (const role of children.keys()) await kill(role);
    const log = await Deno.readTextFile(`${root}/server.log`).catch(() => "");
    const last = log.trim().split("\n").slice(-2).join("\n");
    if (options.root === undefined) {
      await Deno.remove(root, { recursive: true }).catch(() => {});
    }
    if (last === "") throw error;
    throw new Error(`${(error as Error).message}\n${last}`, { cause: error });
  }

  options.workers.forEach((plan, i) => {
    const worker = {
      script: "worker.ts",
      args: [
        `--server=127.0.0.1:${ports[0]}`,
        `--workers=${plan.sessions}`,
        `--systems=${plan.systems.join(",")}`,
        `--publish-port=${ports[3 + i]}`,
        "--publish-listen=127.0.0.1",
        `--minimum-disk-space=${FARM_MINIMUM_DISK_GIB}`,
      ],
      env: {
        REQUEST_PERIOD: String(options.requestPeriod),
        FAKE_GUIX_SYSTEMS: plan.systems.join(","),
      },
    };
    if (plan.held) plans.set(`worker${i + 1}`, worker);
    else start(`worker${i + 1}`, worker.script, worker.args, worker.env);
  });

  async function kill(role: string, signal: Deno.Signal = "SIGKILL") {
    const child = children.get(role);
    if (child === undefined) return;
    try {
      // The whole group when it has one (see start), else the process.
      if (SETSID) Deno.kill(-child.pid, signal);
      else child.kill(signal);
    } catch {
      // Already gone.
    }
    await child.status;
  }

  return {
    root,
    webUrl,
    roles,
    database: `${root}/server/lorica.db`,
    guixEnv,
    logFile: (role) => `${root}/${role}.log`,
    kill,
    async restart(role) {
      const plan = plans.get(role);
      if (plan === undefined) {
        throw new Error(`Cannot restart ${JSON.stringify(role)}: no such role`);
      }
      await kill(role);
      const child = start(role, plan.script, plan.args, plan.env);
      if (role === "server") {
        await waitForServer(webUrl, root, child);
      }
    },
    running: (role) => children.has(role) && !exited.has(role),
    pid: (role) => exited.has(role) ? undefined : children.get(role)?.pid,
    async stop() {
      // Workers first, so that they do not report to a vanished server.
      const all = [...children.values()];
      for (const child of all.slice(1).concat(all.slice(0, 1))) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already gone.
        }
        const timer = setTimeout(() => {
          try {
            if (SETSID) Deno.kill(-child.pid, "SIGKILL");
            else child.kill("SIGKILL");
          } catch {
            // Already gone.
          }
        }, 10_000);
        await child.status;
        clearTimeout(timer);
      }
    },
  };
}

/**
 * The specifications of `specFile` with their channels replaced by one
 * local Git repository made here, written as JSON: the server polls its
 * channels, and the demo must never fetch from the Internet.
 */
async function withLocalChannel(specFile: string, root: string) {
  const repo = `${root}/channel`;
  await Deno.mkdir(repo, { recursive: true });
  for (
    const args of [
      ["init", "-q", "-b", "main"],
      [
        "-c",
        "user.name=Lorica demo",
        "-c",
        "user.email=demo@localhost",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Demo channel",
      ],
    ]
  ) {
    const result = await new Deno.Command("git", {
      args,
      cwd: repo,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!result.success) {
      throw new Error(
        `Cannot make the demo channel with "git ${args.join(" ")}": ${
          new TextDecoder().decode(result.stderr).trim()
        }`,
      );
    }
  }
  const specs = (await readSpecificationFile(specFile)).map((spec) => ({
    ...spec,
    channels: [{
      name: "guix",
      url: `file://${repo}`,
      branch: "main",
      commit: null,
      introduction: null,
    }],
  }));
  const file = `${root}/specifications.json`;
  await Deno.writeTextFile(
    file,
    JSON.stringify(specs.map(specificationToJson), null, 2),
  );
  return file;
}

async function writeAll(file: Deno.FsFile, chunk: Uint8Array) {
  let written = 0;
  while (written < chunk.length) {
    written += await file.write(chunk.subarray(written));
  }
}

/** Ports that were free a moment ago, from the kernel's ephemeral range. */
async function freePorts(count: number): Promise<number[]> {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((l) => (l.addr as Deno.NetAddr).port);
  for (const listener of listeners) listener.close();
  await Promise.resolve();
  return ports;
}

/**
 * Waits until the farm's own server answers on `webUrl`: one whose
 * specifications name the channel made in `root`. Another server already
 * answering on that port (a demo still running) is not taken for it; the
 * farm's own then exits on the port in use, and that is the error.
 */
async function waitForServer(
  webUrl: string,
  root: string,
  process: Deno.ChildProcess,
) {
  const url = `${webUrl}/specifications`;
  const channel = `file://${root}/channel`;
  let exited = false;
  process.status.then(() => (exited = true));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited) {
      throw new Error(`Cannot start the server: it exited (see its log)`);
    }
    try {
      // Bounded: whatever holds the port may accept and never answer.
      const response = await fetch(url, { signal: AbortSignal.timeout(1000) });
      const specs = response.ok ? await response.json() : [];
      await response.body?.cancel().catch(() => {});
      if (servesChannel(specs, channel)) return;
    } catch {
      // Not listening yet, or not answering, or not with JSON.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Cannot reach ${JSON.stringify(url)}: no answer after 60 s`);
}

/** Whether the `/specifications` answer `specs` has a channel at `url`. */
function servesChannel(specs: unknown, url: string): boolean {
  return Array.isArray(specs) &&
    specs.some((spec) =>
      Array.isArray(spec?.channels) &&
      spec.channels.some((channel: { url?: unknown }) => channel?.url === url)
    );
}
