// lorica-worker: builds what a Lorica or Cuirass server hands out.

import { createLogger } from "./lib/log.ts";
import { Guix } from "./lib/guix/guix_command.ts";
import { startWorker } from "./lib/worker/worker.ts";
import { ServerLocator } from "./lib/discovery/server_locator.ts";
import {
  localAddresses,
  systemInterfaces,
} from "./lib/discovery/network_interfaces.ts";
import { parseWorkerKeys } from "./lib/protocol/worker_auth.ts";
import { PING_INTERVAL_SECONDS } from "./lib/protocol/messages.ts";
import { versionLine } from "./lib/cli/version.ts";
import {
  logLevelFromEnvironment,
  type OptionSpec,
  parseHostPort,
  parseListenAddress,
  parseNatural,
  parsePort,
  parsePositive,
  parseSubstituteUrls,
  parseSystems,
  readOptions,
  readSecretFile,
  refuseConflicts,
  runMain,
  UsageError,
} from "./lib/cli/args.ts";
import { continueAsUser } from "./lib/cli/run_as.ts";
import { startNativeMemoryTrimmer } from "./lib/native_memory.ts";
import { hostSystem } from "./lib/guix/system_name.ts";
import { systemClock } from "./lib/clock.ts";

const USAGE = `Usage: lorica-worker [--server=HOST:PORT] [OPTIONS]
Build derivations for a Lorica or Cuirass server. Without --server, the
server is found on the local network with DNS-SD (_remote-server._tcp).

  -s, --server=HOST:PORT      the server's backend (e.g. 10.0.0.1:5555, [::1]:5555)
      --server-name=NAME      with DNS-SD, only the server of this instance name
      --discovery-interface=IF[,IF]  browse only on these interfaces
  -w, --workers=N             concurrent builds (default 1)
  -S, --systems=S1,S2         systems to build for (default this machine's,
                              ${hostSystem()}, as with Cuirass)
  -p, --publish-port=PORT     this machine's guix publish port (default 5558)
      --publish-listen=ADDR   publish address (default 0.0.0.0)
      --substitute-urls=URLS  more substitute URLs after the server's, space separated
      --minimum-disk-space=GIB  ask for no work below this much free space (default 5)
      --worker-key-file=FILE  key for a server that authenticates workers
                              ("KEY-ID SECRET", or a bare secret)
      --no-extensions         speak plain Cuirass (no request ids, no cancellation)
      --reply-timeout=SECS    reconnect when the server is silent this long (default 60)
      --ping-interval=SECS    time between pings (default ${PING_INTERVAL_SECONDS})
      --drain-timeout=SECS    on SIGTERM, time given to builds under way to
                              finish and be reported, and their results
                              confirmed (default 240); a second signal stops
                              at once
      --drain-grace=SECS      past the drain timeout, time given to the
                              server to confirm the results reported and
                              fetch their outputs, guix publish kept up
                              (default 30; 0 for none)
      --public-key=FILE       publish signing key (default: guix's own)
      --private-key=FILE
  -u, --user=USER             run as USER; started as root, the worker starts
                              again through setpriv(1) as USER before it
                              opens anything (prefer systemd's User=)
  -h, --help                  show this help
  -V, --version               show the version

Every option can also come from the environment (--workers from
LORICA_WORKERS, --public-key from LORICA_PUBLIC_KEY, --no-extensions from
LORICA_NO_EXTENSIONS=1, ...; switches take 1, true, yes or on, and 0,
false, no or off). The command line wins over the environment, and the
environment over the defaults above, so that an option may replace the
variable a service sets (the systemd unit sets its keys so). An option
given twice on the command line is refused, as is an empty value, and so
are --server-name and --discovery-interface with --server. REQUEST_PERIOD
(seconds, default 30) is the pause after the server had no work, as in
Cuirass; LORICA_LOG sets the log level.
Exit status: 0 after SIGTERM or SIGINT, 1 on a fatal error, 2 on bad usage.`;

const OPTIONS: Record<string, OptionSpec> = {
  server: { type: "string", short: "s" },
  "server-name": { type: "string" },
  "discovery-interface": { type: "string" },
  workers: { type: "string", short: "w", default: "1" },
  // This machine's, as Cuirass's default: an aarch64 worker must not
  // take x86_64 builds it was never told to build.
  systems: { type: "string", short: "S", default: hostSystem() },
  "publish-port": { type: "string", short: "p", default: "5558" },
  "publish-listen": { type: "string", default: "0.0.0.0" },
  "substitute-urls": { type: "string", default: "" },
  "minimum-disk-space": { type: "string", default: "5" },
  "worker-key-file": { type: "string" },
  "no-extensions": { type: "boolean", default: false },
  "reply-timeout": { type: "string", default: "60" },
  "ping-interval": {
    type: "string",
    default: String(PING_INTERVAL_SECONDS),
  },
  "drain-timeout": { type: "string", default: "240" },
  "drain-grace": { type: "string", default: "30" },
  "public-key": { type: "string" },
  "private-key": { type: "string" },
  // -u as in Cuirass, whose units and scripts say `-u cuirass`.
  user: { type: "string", short: "u" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
};

// deno-lint-ignore no-console
const say = console.log;

/** How often an idle worker's freed native memory is handed back. */
const NATIVE_TRIM_INTERVAL_MS = 10_000;

async function main(args: string[]): Promise<number> {
  const options = readOptions(OPTIONS, args);
  const { text, flag } = options;
  if (flag("help")) {
    say(USAGE);
    return 0;
  }
  if (flag("version")) {
    say(await versionLine("lorica-worker"));
    return 0;
  }
  refuseConflicts(options, {
    server: {
      with: ["server-name", "discovery-interface"],
      because: "a server named by --server is not looked for with DNS-SD",
    },
  });
  const switched = await continueAsUser(text("user"));
  if (switched !== null) return switched;
  const systems = parseSystems("--systems", text("systems")!);
  // Digits only: Number() would also take "0x10", "1e3" or "Infinity",
  // the last one a worker that never asks for work.
  const diskGiB = Number(text("minimum-disk-space"));
  if (!/^\d+(\.\d+)?$/.test(text("minimum-disk-space")!)) {
    throw new UsageError(
      `Cannot use --minimum-disk-space ${
        JSON.stringify(text("minimum-disk-space"))
      }: not a number of GiB`,
    );
  }
  // Read now, not at the SIGTERM that needs it: a bad value must stop the
  // start, not the drain (which would leave builds and guix publish behind).
  const substituteUrls = parseSubstituteUrls(
    "--substitute-urls",
    text("substitute-urls")!,
  );
  const drainMs = parsePositive("--drain-timeout", text("drain-timeout")!) *
    1000;
  const graceMs = parseNatural("--drain-grace", text("drain-grace")!) * 1000;
  const period = parsePositive(
    "REQUEST_PERIOD",
    Deno.env.get("REQUEST_PERIOD") ?? "30",
  );
  const keyFile = text("worker-key-file");
  const authKey = keyFile
    ? {
      ...firstKey(await readSecretFile("--worker-key-file", keyFile)),
      file: keyFile,
    }
    : undefined;
  const logger = createLogger({
    level: logLevelFromEnvironment(),
  });
  const server = text("server") === undefined
    ? undefined
    : parseHostPort("--server", text("server")!);
  const servers = server === undefined
    ? new ServerLocator({
      interfaces: systemInterfaces(text("discovery-interface")?.split(",")),
      localAddresses: localAddresses(),
      instanceName: text("server-name"),
      logger: logger.with({ part: "discovery" }),
    })
    : undefined;

  const worker = await startWorker({
    server,
    workers: parsePositive("--workers", text("workers")!),
    systems,
    machine: Deno.hostname(),
    publishPort: parsePort("--publish-port", text("publish-port")!),
    publishListen: parseListenAddress(
      "--publish-listen",
      text("publish-listen")!,
    ),
    substituteUrls,
    requestPeriodMs: period * 1000,
    pingIntervalMs: parsePositive("--ping-interval", text("ping-interval")!) *
      1000,
    replyTimeoutMs: parsePositive("--reply-timeout", text("reply-timeout")!) *
      1000,
    extensions: !flag("no-extensions"),
    authKey,
    minimumDiskSpace: diskGiB * 1024 ** 3,
    publishArgs: [
      ...(text("public-key") ? [`--public-key=${text("public-key")}`] : []),
      ...(text("private-key") ? [`--private-key=${text("private-key")}`] : []),
    ],
  }, {
    guix: new Guix({ logger: logger.with({ part: "guix" }) }),
    logger,
    servers,
  });
  logger.info("worker started", {
    server: text("server") ?? "discovery",
    sessions: worker.names.join(","),
    systems: systems.join(","),
  });
  // A worker waits for work most of its life: what its native side freed
  // is given back rather than held (lib/native_memory.ts).
  const trimmer = startNativeMemoryTrimmer({
    clock: systemClock,
    logger,
    intervalMs: NATIVE_TRIM_INTERVAL_MS,
  });
  // The first SIGTERM or SIGINT drains: no more work is requested and the
  // builds under way finish and are reported. A second one stops at once.
  const stopped = Promise.withResolvers<void>();
  const forced = Promise.withResolvers<string>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      if (draining) forced.resolve(signal);
      stopped.resolve();
    });
  }
  let draining = false;
  // A dead guix publish stops the worker as SIGTERM does, but with an
  // error, so that systemd restarts it (see lib/worker/worker.ts); so does
  // a server whose store directory is not this worker's.
  const failure = await Promise.race([
    stopped.promise,
    worker.done,
    worker.failed,
  ]);
  draining = true;
  await Promise.race([
    worker.stop({ drain: true, drainMs, graceMs }),
    forced.promise.then((signal) => worker.stop({ signal })),
  ]);
  await trimmer.stop();
  if (failure instanceof Error) throw failure;
  return 0;
}

/** The worker's key: the first entry of a worker keys file. */
function firstKey(text: string): { id: string; secret: string } {
  const [id, secret] = parseWorkerKeys(text).entries().next().value!;
  return { id, secret };
}

if (import.meta.main) await runMain("lorica-worker", main, OPTIONS);
