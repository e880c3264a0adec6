// A throw-away network lab for tests: network namespaces joined by veth
// pairs with addresses from 198.51.100.0/24 (TEST-NET-2), processes run
// inside them, and dbus-daemon + avahi-daemon where a test needs Avahi.
// Everything is undone by `close()`: processes stopped by pid, namespaces
// deleted, files removed. Nothing touches the host's own interfaces.

const TEST_NET = "198.51.100.";
const decoder = new TextDecoder();

/** Whether this machine can run lab tests, and if not why. */
export interface Availability {
  ok: boolean;
  reason: string;
}

async function run(
  command: string,
  args: string[],
  env?: Record<string, string>,
): Promise<{ ok: boolean; out: string }> {
  try {
    const result = await new Deno.Command(command, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return {
      ok: result.success,
      out: decoder.decode(result.stdout) + decoder.decode(result.stderr),
    };
  } catch (error) {
    return { ok: false, out: (error as Error).message };
  }
}

async function must(command: string, args: string[]): Promise<string> {
  const result = await run(command, args);
  if (!result.ok) {
    throw new Error(
      `Cannot run ${JSON.stringify([command, ...args].join(" "))}: ${
        result.out.trim().slice(0, 400)
      }`,
    );
  }
  return result.out;
}

function which(name: string): string | null {
  for (
    const dir of (Deno.env.get("PATH") ?? "").split(":").concat([
      "/usr/sbin",
      "/sbin",
      "/usr/bin",
    ])
  ) {
    try {
      const path = `${dir}/${name}`;
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** Root, `ip netns` and `unshare` are there: network namespaces can be made. */
export async function labAvailable(): Promise<Availability> {
  if (Deno.build.os !== "linux") return { ok: false, reason: "not Linux" };
  if (Deno.uid() !== 0) return { ok: false, reason: "not root" };
  for (const tool of ["ip", "unshare", "mount"]) {
    if (which(tool) === null) {
      return { ok: false, reason: `${tool} not installed` };
    }
  }
  const name = `lorica-probe-${Deno.pid}`;
  const made = await run("ip", ["netns", "add", name]);
  if (!made.ok) {
    return {
      ok: false,
      reason: `ip netns unavailable: ${made.out.trim().slice(0, 200)}`,
    };
  }
  await run("ip", ["netns", "delete", name]);
  return { ok: true, reason: "" };
}

/** The lab works and avahi-daemon, avahi-browse, avahi-publish and dbus-daemon exist. */
export async function avahiAvailable(): Promise<Availability> {
  const lab = await labAvailable();
  if (!lab.ok) return lab;
  for (
    const tool of [
      "avahi-daemon",
      "avahi-browse",
      "avahi-publish",
      "dbus-daemon",
    ]
  ) {
    if (which(tool) === null) {
      return { ok: false, reason: `${tool} not installed` };
    }
  }
  return { ok: true, reason: "" };
}

/** A process started in a namespace; its stdout is kept as lines. */
export class LabProcess {
  readonly pid: number;
  readonly name: string;
  readonly lines: string[] = [];
  #child: Deno.ChildProcess;
  #waiters = new Set<() => void>();
  #exited = false;
  #logFile: string;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(name: string, child: Deno.ChildProcess, logFile: string) {
    this.name = name;
    this.#child = child;
    this.pid = child.pid;
    this.#logFile = logFile;
    const log = Deno.openSync(logFile, { create: true, append: true });
    const collect = async (
      stream: ReadableStream<Uint8Array>,
      keep: boolean,
    ) => {
      let rest = "";
      for await (const chunk of stream) {
        log.writeSync(chunk);
        if (!keep) continue;
        rest += decoder.decode(chunk, { stream: true });
        const parts = rest.split("\n");
        rest = parts.pop()!;
        this.lines.push(...parts);
        this.#notify();
      }
      if (keep && rest !== "") this.lines.push(rest);
    };
    const reading = Promise.all([
      collect(child.stdout, true),
      collect(child.stderr, false),
    ]).catch(() => {}).finally(() => log.close());
    this.status = child.status.then(async (status) => {
      await reading;
      this.#exited = true;
      this.#notify();
      return status;
    });
  }

  #notify() {
    for (const waiter of this.#waiters) waiter();
  }

  /** True once the process has ended. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The process's standard error (and output) so far, from its log file. */
  log(): string {
    try {
      return Deno.readTextFileSync(this.#logFile);
    } catch {
      return "";
    }
  }

  /**
   * Resolves with the first stdout line (from `from` on) that matches.
   * @throws {Error} when the process exits or `timeoutMs` passes first.
   */
  async waitForLine(
    match: (line: string) => boolean,
    timeoutMs: number,
    from = 0,
  ): Promise<{ line: string; index: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.lines.length; i++) {
        if (match(this.lines[i])) return { line: this.lines[i], index: i };
      }
      from = this.lines.length;
      if (this.#exited || Date.now() >= deadline) {
        throw new Error(
          `Cannot see the expected line from ${this.name} (${
            this.#exited ? "exited" : `${timeoutMs} ms passed`
          }); its log ends with: ${this.log().slice(-1500)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const waiters = this.#waiters;
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
        waiters.add(done);
        function done() {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
      });
    }
  }

  /** Sends a signal to the process, by pid; ignores a process already gone. */
  signal(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 5000): Promise<void> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    await this.status;
    clearTimeout(timer);
  }
}

/** A network namespace of the lab. */
export interface Namespace {
  /** The real namespace name (`ip netns exec NAME ...`). */
  readonly name: string;
  /** The short role name the test gave it. */
  readonly role: string;
}

/** A running Avahi inside a namespace. */
export interface Avahi {
  /** Environment that points Avahi's clients at this daemon's bus. */
  readonly env: Record<string, string>;
  readonly daemon: LabProcess;
  stop(): Promise<void>;
}

export interface LinkOptions {
  /** Interface name in `a` and in `b` (at most 15 characters). */
  names: [string, string];
  /** IPv4 addresses with prefix length, inside 198.51.100.0/24. */
  addresses: [string, string];
}

function checkTestNet(address: string) {
  if (!address.startsWith(TEST_NET)) {
    throw new Error(
      `Cannot use address ${
        JSON.stringify(address)
      }: the lab uses 198.51.100.0/24 only`,
    );
  }
}

/** The lab: create namespaces, links and processes; `close()` undoes all. */
export class NetnsLab {
  readonly dir: string;
  #namespaces: Namespace[] = [];
  #processes: LabProcess[] = [];
  #prefix: string;
  #count = 0;

  private constructor(dir: string) {
    this.dir = dir;
    const random = crypto.getRandomValues(new Uint16Array(1))[0].toString(36);
    this.#prefix = `lorica-${Deno.pid}-${random}`;
  }

  /** Makes an empty lab with its own temporary directory. */
  static async create(): Promise<NetnsLab> {
    return new NetnsLab(await Deno.makeTempDir({ prefix: "lorica-netns-" }));
  }

  /** Adds a namespace with loopback up and IPv6 duplicate detection off. */
  async namespace(role: string): Promise<Namespace> {
    const ns = { name: `${this.#prefix}-${role}`, role };
    await must("ip", ["netns", "add", ns.name]);
    this.#namespaces.push(ns);
    await must("ip", ["-n", ns.name, "link", "set", "lo", "up"]);
    for (const key of ["all", "default"]) {
      await run("ip", [
        "netns",
        "exec",
        ns.name,
        "sysctl",
        "-qw",
        `net.ipv6.conf.${key}.accept_dad=0`,
      ]);
    }
    return ns;
  }

  /** Joins two namespaces with a veth pair and brings both ends up. */
  async link(a: Namespace, b: Namespace, options: LinkOptions): Promise<void> {
    options.addresses.forEach(checkTestNet);
    const [nameA, nameB] = options.names;
    await must("ip", [
      "-n",
      a.name,
      "link",
      "add",
      nameA,
      "type",
      "veth",
      "peer",
      "name",
      nameB,
      "netns",
      b.name,
    ]);
    await must("ip", [
      "-n",
      a.name,
      "addr",
      "add",
      options.addresses[0],
      "dev",
      nameA,
    ]);
    await must("ip", [
      "-n",
      b.name,
      "addr",
      "add",
      options.addresses[1],
      "dev",
      nameB,
    ]);
    await must("ip", ["-n", a.name, "link", "set", nameA, "up"]);
    await must("ip", ["-n", b.name, "link", "set", nameB, "up"]);
  }

  /**
   * Adds an interface that leads nowhere the other namespaces can reach:
   * a veth pair whose peer sits alone in a namespace of its own (the
   * kernel here may lack the dummy driver), like a host's docker0.
   */
  async dummy(ns: Namespace, name: string, address: string): Promise<void> {
    checkTestNet(address);
    const island = await this.namespace(`${ns.role}-${name}`.slice(0, 20));
    await must("ip", [
      "-n",
      ns.name,
      "link",
      "add",
      name,
      "type",
      "veth",
      "peer",
      "name",
      "island",
      "netns",
      island.name,
    ]);
    await must("ip", ["-n", ns.name, "addr", "add", address, "dev", name]);
    await must("ip", ["-n", ns.name, "link", "set", name, "up"]);
    await must("ip", ["-n", island.name, "link", "set", "island", "up"]);
  }

  /** Runs a command inside `ns` via `ip netns exec` (same pid as the command). */
  spawn(
    ns: Namespace,
    command: string,
    args: string[],
    options: { env?: Record<string, string>; label?: string } = {},
  ): LabProcess {
    const label = `${ns.role}-${
      options.label ?? command.split("/").pop()
    }-${++this.#count}`;
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, command, ...args],
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const process = new LabProcess(label, child, `${this.dir}/${label}.log`);
    this.#processes.push(process);
    return process;
  }

  /** Runs a Deno script inside `ns` with all permissions. */
  deno(
    ns: Namespace,
    script: string,
    args: string[],
    env: Record<string, string> = {},
  ): LabProcess {
    return this.spawn(ns, Deno.execPath(), ["run", "-A", script, ...args], {
      env,
      label: script.split("/").pop()!.replace(/\.ts$/, ""),
    });
  }

  /** Runs a command inside `ns` to completion. */
  async exec(
    ns: Namespace,
    command: string,
    args: string[],
    env?: Record<string, string>,
  ): Promise<{ ok: boolean; out: string }> {
    return await run("ip", ["netns", "exec", ns.name, command, ...args], env);
  }

  /**
   * Starts a private dbus-daemon and avahi-daemon inside `ns`, limited to
   * the given interfaces; resolves once Avahi reports it is up.
   */
  async avahi(
    ns: Namespace,
    options: { interfaces: string[]; hostName: string },
  ): Promise<Avahi> {
    const dir = `${this.dir}/avahi-${ns.role}`;
    await Deno.mkdir(dir, { recursive: true });
    const socket = `${dir}/bus`;
    await Deno.writeTextFile(`${dir}/bus.conf`, busConfig(socket));
    await Deno.writeTextFile(
      `${dir}/avahi.conf`,
      avahiConfig(options.hostName, options.interfaces),
    );
    const bus = this.spawn(ns, "dbus-daemon", [
      `--config-file=${dir}/bus.conf`,
      "--nofork",
      "--nopidfile",
      "--print-address",
    ]);
    await bus.waitForLine((line) => line.startsWith("unix:"), 10_000);
    const env = { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${socket}` };
    // A private mount namespace with its own /run keeps Avahi's pid file
    // and runtime directory apart from the host's and other labs'.
    const daemon = this.spawn(ns, "unshare", [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      `mount -t tmpfs lorica-run /run && exec avahi-daemon --no-drop-root --no-chroot --no-rlimits --no-proc-title -f ${dir}/avahi.conf`,
    ], { env, label: "avahi-daemon" });
    const deadline = Date.now() + 15_000;
    while (!daemon.log().includes("Server startup complete")) {
      if (daemon.exited || Date.now() > deadline) {
        throw new Error(
          `Cannot start avahi-daemon in ${ns.role}: ${
            daemon.log().slice(-800)
          }`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return {
      env,
      daemon,
      async stop() {
        await daemon.stop();
        await bus.stop();
      },
    };
  }

  /** Stops every process by pid, deletes the namespaces and the directory. */
  async close(): Promise<void> {
    for (const process of this.#processes.reverse()) {
      await process.stop().catch(() => {});
    }
    for (const ns of this.#namespaces.reverse()) {
      await run("ip", ["netns", "delete", ns.name]);
    }
    this.#processes = [];
    this.#namespaces = [];
    if (Deno.env.get("LORICA_KEEP_LAB") === undefined) {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
  }
}

/** Runs `body` with a fresh lab that is always closed afterwards. */
export async function withLab<T>(
  body: (lab: NetnsLab) => Promise<T>,
): Promise<T> {
  const lab = await NetnsLab.create();
  try {
    return await body(lab);
  } finally {
    await lab.close();
  }
}

/**
 * A test run in a lab of its own (see {@link withLab}) when `availability`
 * says namespaces (and whatever else it checked) can be had; otherwise
 * skipped, the reason in its name. The lab ends the processes and closes
 * the sockets the test leaves to it before the test ends, so that Deno's
 * sanitizers still find what escapes the lab.
 */
export function labTest(
  availability: Availability,
  name: string,
  body: (lab: NetnsLab) => Promise<void>,
): void {
  Deno.test({
    name: availability.ok ? name : `${name} (skipped: ${availability.reason})`,
    ignore: !availability.ok,
    fn: () => withLab(body),
  });
}

function busConfig(socket: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
`;
}

function avahiConfig(hostName: string, interfaces: string[]): string {
  return `[server]
host-name=${hostName}
use-ipv4=yes
use-ipv6=yes
allow-interfaces=${interfaces.join(",")}
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000

[wide-area]
enable-wide-area=no

[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=yes

[reflector]

[rlimits]
`;
}

/** The usual pair: a server host and a worker host on one link. */
export interface TwoHosts {
  server: Namespace;
  worker: Namespace;
  /** Link interface names: `eth-s` in the server, `eth-w` in the worker. */
  serverIf: string;
  workerIf: string;
  serverAddress: string;
  workerAddress: string;
}

/** Makes a server namespace (198.51.100.1) and a worker namespace (198.51.100.2) joined by a veth pair. */
export async function twoHosts(lab: NetnsLab): Promise<TwoHosts> {
  const server = await lab.namespace("srv");
  const worker = await lab.namespace("wrk");
  await lab.link(server, worker, {
    names: ["eth-s", "eth-w"],
    addresses: ["198.51.100.1/24", "198.51.100.2/24"],
  });
  return {
    server,
    worker,
    serverIf: "eth-s",
    workerIf: "eth-w",
    serverAddress: "198.51.100.1",
    workerAddress: "198.51.100.2",
  };
}

/** The IPv6 link-local address of an interface in a namespace. */
export async function linkLocalAddress(
  lab: NetnsLab,
  ns: Namespace,
  iface: string,
): Promise<string> {
  const result = await lab.exec(ns, "ip", [
    "-6",
    "-o",
    "addr",
    "show",
    "dev",
    iface,
    "scope",
    "link",
  ]);
  const match = /inet6 (fe80::[0-9a-f:]+)\//.exec(result.out);
  if (!match) {
    throw new Error(
      `Cannot find a link-local address on ${iface}: ${
        result.out.slice(0, 300)
      }`,
    );
  }
  return match[1];
}
