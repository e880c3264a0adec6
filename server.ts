// lorica-server: evaluates specifications and builds them, with the local
// Guix daemon (default) or with remote workers (--build-remote).

import { createLogger } from "./lib/log.ts";
import { MAX_TIMER_MS, systemClock } from "./lib/clock.ts";
import { Guix } from "./lib/guix/guix_command.ts";
import { storeDirFromEnv } from "./lib/guix/store_path.ts";
import {
  daemonRootDirectories,
  defaultGcRootDirectory,
  guixStateDirectory,
  networkDaemon,
  parseDuration,
  underDaemonRoots,
} from "./lib/guix/gc_roots.ts";
import {
  databaseFault,
  DatabaseNameError,
  DEFAULT_QUERY_TIMEOUT_SECONDS,
  openStore,
  PostgresTargetError,
  redactDatabase,
  storeBackend,
  waitForDatabase,
} from "./lib/store/open_store.ts";
import { claimDatabase } from "./lib/store/sqlite_owner.ts";
import type { Specification } from "./lib/store/types.ts";
import { readSpecificationFileOrGuix } from "./lib/spec/read_spec.ts";
import {
  DEFAULT_EVALUATION_TIMEOUT_SECONDS,
  type ServerConfig,
  startServer,
} from "./lib/server/server.ts";
import {
  HOLDER_RENEWAL_SECONDS,
  MAX_WORKER_TIMEOUT_SECONDS,
  MIN_WORKER_TIMEOUT_SECONDS,
} from "./lib/server/local_holder.ts";
import { SpecError } from "./lib/spec/spec_error.ts";
import { parseWorkerKeys } from "./lib/protocol/worker_auth.ts";
import { PING_INTERVAL_SECONDS } from "./lib/protocol/messages.ts";
import { advertiseServer } from "./lib/discovery/advertise_server.ts";
import { systemInterfaces } from "./lib/discovery/network_interfaces.ts";
import { hostLabel } from "./lib/discovery/service.ts";
import { startNotificationSender } from "./lib/notify/notification_sender.ts";
import { versionLine } from "./lib/cli/version.ts";
import {
  cacheHome,
  type GivenOptions,
  logLevelFromEnvironment,
  type OptionSpec,
  parseListenAddress,
  parseNatural,
  parsePort,
  parsePositive,
  readOptions,
  readSecretFile,
  refuseConflicts,
  runMain,
  stateHome,
  UsageError,
} from "./lib/cli/args.ts";
import { continueAsUser } from "./lib/cli/run_as.ts";
import {
  checkDatabaseFileOption,
  checkDirectoryOption,
  directoryOf,
} from "./lib/cli/option_paths.ts";

const USAGE = `Usage: lorica-server [OPTIONS]
Evaluate Guix specifications and build them with the local Guix daemon, or
with remote workers when --build-remote is given.

Specifications and evaluation:
  -S, --specifications=FILE   Cuirass specification file (Scheme, or .json)
  -I, --interval=SECONDS      channel polling period (default 600)
      --no-poll               evaluate each specification once, as given, and
                              never fetch its channels
      --threads=N             systems evaluated at once (default 2)
      --evaluation-timeout=SECONDS  kill an evaluator (one system) still
                              running after this long: the evaluation fails,
                              and its commits are evaluated again at the
                              next poll (default 10800, i.e. 3 hours, a few
                              times a full Guix evaluation with the build of
                              its Guix; 0: no limit)
      --git-cache=DIR         channel mirrors (default $XDG_CACHE_HOME/lorica/git)
      --ttl=DURATION          GC roots lifetime, e.g. 30d, 2w (default 30d)
      --gc-roots=DIR          GC roots directory
                              (default /var/guix/gcroots/profiles/per-user/$USER/lorica)
Storage:
  -D, --database=DB           SQLite file, postgres:// URL or "dbname=... host=..."
                              (default $XDG_STATE_HOME/lorica/lorica.db; the
                              directory of a file given must exist); a
                              PostgreSQL server not up yet is waited for
      --database-timeout=SECONDS  PostgreSQL: cancel a query unanswered
                              after this long; it fails as with the database
                              down, its connection closed if the cancel is
                              unanswered 5 s more (default ${DEFAULT_QUERY_TIMEOUT_SECONDS}; 0: no limit;
                              at most 2147483, about 24 days)
  -c, --cache=DIR             build logs (default $XDG_CACHE_HOME/lorica)
      --log-expiry=DURATION   remove build logs older than this (default 6m,
                              i.e. 180 days; units s, h, d, w, m = 30 days)
      --state-directory=DIR   evaluation logs and work directories, admin token
                              (default: the database's directory)
Local mode (the default):
      --max-jobs=N            builds the daemon runs at once (default 1)
      --batch-size=N          derivations handed to the daemon at once (default 200)
Remote mode:
      --build-remote          hand builds to remote workers
  -b, --backend-port=PORT     ZeroMQ port for workers (default 5555)
  -l, --log-port=PORT         build log port (default 5556)
      --listen=ADDRESS        address of the worker ports and, in either
                              mode, of guix publish (default 0.0.0.0)
      --worker-timeout=SECS   forget workers silent this long, requeueing
                              their builds (default 120, at least ${MIN_WORKER_TIMEOUT_SECONDS}, at most
                              a year; keep it
                              above the workers' ${PING_INTERVAL_SECONDS} s ping interval); in local
                              mode, how long a server sharing the database
                              may be silent before its builds are requeued.
                              Recorded with each contact: every server
                              sharing the database applies it to the
                              workers this one hears
      --worker-keys=FILE      accept only workers proving one of these keys
      --max-build-wait=SECS   fail builds no worker could take for this long (default: never)
      --max-log-size=BYTES    cut build logs beyond this size (default 268435456)
      --max-worker-connections=N  ZeroMQ connections from workers held at
                              once, two per worker session (default 1024)
      --max-worker-connections-per-address=N  of those, from one address
                              (default 256; more for workers behind one NAT)
      --no-advertise          do not announce the server with DNS-SD
      --advertise-interface=IF[,IF]  announce only on these interfaces
      --advertise-name=NAME   DNS-SD instance name (default "Lorica remote server on HOST")
Publishing:
  -p, --publish-port=PORT     guix publish port (default 5557)
  -T, --trigger-substitute-url=URL  after a build, ask this caching publish
                              server for its outputs' narinfos (bake them early)
  -s, --no-publish            run no publish server
      --public-key=FILE       publish signing key (default: guix's own)
      --private-key=FILE
Web interface:
      --web-port=PORT         (default 8080)
      --web-listen=ADDRESS    (default 127.0.0.1)
      --base-url=URL          public URL of the web interface, for the links
                              of notifications and of the RSS feed
                              (default: http://WEB-LISTEN:WEB-PORT, the host
                              name for 0.0.0.0 or ::; never the request's Host)
      --admin-token-file=FILE secret of the admin actions (default: generated
                              into the state directory)
Notifications:
      --mastodon-url=URL      Mastodon instance for mastodon notifications
      --mastodon-token-file=FILE  its access token (or LORICA_MASTODON_TOKEN)
      --notification-interval=SECS  pause after each round of deliveries;
                              a round sends up to 10 queued notifications
                              and the retries due (default 60)

  -u, --user=USER             run as USER; started as root, the server starts
                              again through setpriv(1) as USER before it
                              opens anything (prefer systemd's User=)
  -h, --help                  show this help
  -V, --version               show the version

Every option can also come from the environment: --log-port from
LORICA_LOG_PORT, --gc-roots from LORICA_GC_ROOTS, --build-remote from
LORICA_BUILD_REMOTE=1, and so on (switches take 1, true, yes or on, and 0,
false, no or off). The command line wins over the environment, and the
environment over the defaults above, so that an option may replace the
variable a service sets (the systemd unit sets its paths and keys so). An
option given twice on the command line is refused, as is an empty value,
and so are --publish-port with --no-publish, --advertise-* with
--no-advertise, and the options of one mode in the other (--backend-port
without --build-remote, --max-jobs with it; --listen and --worker-timeout
serve both).
LORICA_LOG=debug|info|warn|error sets the log level; NIX_STORE_DIR the store;
GUIX_STATE_DIRECTORY the Guix daemon's state directory (default /var/guix),
which the default --gc-roots is in, and whose gcroots and profiles a
--gc-roots must be in for the daemon to see its roots (else a warning).
The directories of --cache, --git-cache, --gc-roots and --state-directory
are created if missing and checked writable before anything is written.
Exit status: 0 after SIGTERM or SIGINT, 1 on a fatal error (a database
that refuses the server, a schema newer than this program's), 2 on bad
usage (an option, file or directory that cannot be used).`;

const OPTIONS: Record<string, OptionSpec> = {
  specifications: { type: "string", short: "S" },
  interval: { type: "string", short: "I", default: "600" },
  "no-poll": { type: "boolean", default: false },
  threads: { type: "string", default: "2" },
  "evaluation-timeout": {
    type: "string",
    default: String(DEFAULT_EVALUATION_TIMEOUT_SECONDS),
  },
  "git-cache": { type: "string" },
  ttl: { type: "string", default: "30d" },
  "gc-roots": { type: "string" },
  database: { type: "string", short: "D" },
  "database-timeout": {
    type: "string",
    default: String(DEFAULT_QUERY_TIMEOUT_SECONDS),
  },
  cache: { type: "string", short: "c" },
  "log-expiry": { type: "string", default: "6m" },
  "state-directory": { type: "string" },
  "max-jobs": { type: "string", default: "1" },
  "batch-size": { type: "string", default: "200" },
  "build-remote": { type: "boolean", default: false },
  "backend-port": { type: "string", short: "b", default: "5555" },
  "log-port": { type: "string", short: "l", default: "5556" },
  listen: { type: "string", default: "0.0.0.0" },
  "worker-timeout": { type: "string", default: "120" },
  "worker-keys": { type: "string" },
  "max-build-wait": { type: "string" },
  "max-log-size": { type: "string" },
  "max-worker-connections": { type: "string" },
  "max-worker-connections-per-address": { type: "string" },
  "no-advertise": { type: "boolean", default: false },
  "advertise-interface": { type: "string" },
  "advertise-name": { type: "string" },
  "publish-port": { type: "string", short: "p", default: "5557" },
  "trigger-substitute-url": { type: "string", short: "T" },
  "no-publish": { type: "boolean", short: "s", default: false },
  "public-key": { type: "string" },
  "private-key": { type: "string" },
  "web-port": { type: "string", default: "8080" },
  "web-listen": { type: "string", default: "127.0.0.1" },
  "base-url": { type: "string" },
  "admin-token-file": { type: "string" },
  "mastodon-url": { type: "string" },
  "mastodon-token-file": { type: "string" },
  "notification-interval": { type: "string", default: "60" },
  // -u as in Cuirass, whose units and scripts say `-u cuirass`.
  user: { type: "string", short: "u" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
};

// deno-lint-ignore no-console
const say = console.log;

async function main(args: string[]): Promise<number> {
  const options = readOptions(OPTIONS, args);
  const { text, flag } = options;
  if (flag("help")) {
    say(USAGE);
    return 0;
  }
  if (flag("version")) {
    say(await versionLine("lorica-server"));
    return 0;
  }
  refuseConflicts(options, {
    "no-publish": {
      with: ["publish-port"],
      because: "no guix publish runs to listen on it",
    },
    "no-advertise": {
      with: ["advertise-name", "advertise-interface"],
      because: "the server is not announced with DNS-SD",
    },
  });
  refuseOtherModeOptions(options);
  const switched = await continueAsUser(text("user"));
  if (switched !== null) return switched;

  const logger = createLogger({
    level: logLevelFromEnvironment(),
  });
  const database = databaseOption(text("database"));
  // npm:postgres arms one timer with the deadline, and a timer longer than
  // it can wait fires at once: every query would time out on the spot.
  const databaseTimeout = parseNatural(
    "--database-timeout",
    text("database-timeout")!,
    {
      max: Math.floor(MAX_TIMER_MS / 1000),
      why: "the longest deadline a timer holds, about 24 days; 0 for no limit",
    },
  );
  const stateDir = text("state-directory") ??
    (database.sqlite ? directoryOf(database.value) : `${stateHome()}/lorica`);
  const cacheDir = text("cache") ?? `${cacheHome()}/lorica`;
  const remote = flag("build-remote");
  const positive = (name: string) => parsePositive(`--${name}`, text(name)!);

  // Every option is checked before anything is written anywhere.
  const config: ServerConfig = {
    mode: remote ? "remote" : "local",
    listen: parseListenAddress("--listen", text("listen")!),
    backendPort: parsePort("--backend-port", text("backend-port")!),
    logPort: parsePort("--log-port", text("log-port")!),
    publishPort: flag("no-publish")
      ? null
      : parsePort("--publish-port", text("publish-port")!),
    publishArgs: [
      ...(text("public-key") ? [`--public-key=${text("public-key")}`] : []),
      ...(text("private-key") ? [`--private-key=${text("private-key")}`] : []),
    ],
    webListen: parseListenAddress("--web-listen", text("web-listen")!),
    webPort: parsePort("--web-port", text("web-port")!),
    cacheDir,
    stateDir,
    storeDir: storeDirFromEnv(),
    // Every server's sweep expires the holder rows of the servers in local
    // mode sharing the database, renewed at a fixed pace: a shorter
    // timeout would take live ones for dead and requeue what they build.
    workerTimeoutSeconds: parsePositive(
      "--worker-timeout",
      text("worker-timeout")!,
      {
        min: MIN_WORKER_TIMEOUT_SECONDS,
        max: MAX_WORKER_TIMEOUT_SECONDS,
        why:
          `servers in local mode sharing the database renew their rows every ${HOLDER_RENEWAL_SECONDS} s; a worker silent a year is gone`,
      },
    ),
    workerKeys: text("worker-keys")
      ? parseWorkerKeys(
        await readSecretFile("--worker-keys", text("worker-keys")!),
      )
      : null,
    maxBuildWaitSeconds: text("max-build-wait")
      ? positive("max-build-wait")
      : null,
    maxLogBytes: text("max-log-size") ? positive("max-log-size") : undefined,
    maxWorkerConnections: text("max-worker-connections")
      ? positive("max-worker-connections")
      : undefined,
    maxWorkerConnectionsPerAddress: text("max-worker-connections-per-address")
      ? positive("max-worker-connections-per-address")
      : undefined,
    pollChannels: !flag("no-poll"),
    pollIntervalSeconds: positive("interval"),
    gitCacheDir: text("git-cache") ?? `${cacheDir}/git`,
    gcRootDir: text("gc-roots") ?? defaultGcRootDirectory(),
    gcRootTtlSeconds: durationOption("--ttl", text("ttl")!),
    evaluationParallelism: positive("threads"),
    evaluationTimeoutSeconds: parseNatural(
      "--evaluation-timeout",
      text("evaluation-timeout")!,
    ),
    localMaxJobs: positive("max-jobs"),
    localBatchSize: positive("batch-size"),
    // Links in notifications and feeds are built from it: a value that
    // is not a URL would put broken links in every mail.
    publicUrl: httpUrlOption("--base-url", text("base-url")),
    logExpirySeconds: durationOption("--log-expiry", text("log-expiry")!),
    triggerSubstituteUrl: httpUrlOption(
      "--trigger-substitute-url",
      text("trigger-substitute-url"),
    ),
  };
  if (
    config.mode === "remote" &&
    config.workerTimeoutSeconds <= PING_INTERVAL_SECONDS
  ) {
    // Legal (Lorica workers can ping more often), but a worker pinging at
    // Cuirass's pace would be forgotten between two pings, its build
    // handed out again and again. In local mode no worker pings: the
    // timeout is that of the servers' holder names, renewed every
    // HOLDER_RENEWAL_SECONDS, for which any timeout accepted will do.
    logger.warn("worker timeout shorter than the ping interval", {
      timeout: config.workerTimeoutSeconds,
      ping: PING_INTERVAL_SECONDS,
      hint: "workers must ping more often, or their builds are requeued",
    });
  }
  const notificationMs = positive("notification-interval") * 1000;
  // Checked now rather than at the first notification, hours later.
  const mastodonUrl = httpUrlOption("--mastodon-url", text("mastodon-url"));
  const guix = new Guix({ logger: logger.with({ part: "guix" }) });
  const specs = text("specifications")
    ? await specificationsOption(text("specifications")!, guix)
    : [];

  // The directories, then the database; the admin token is written last,
  // so that a failed start leaves none behind.
  const given = (name: string) => text(name) !== undefined;
  if (database.sqlite && given("database")) {
    // An explicit file must be in a directory that exists: a typo must
    // not start a new, empty farm.
    await checkDirectoryOption("--database", directoryOf(database.value), {
      create: false,
      label: `--database ${database.shown}`,
    });
    await checkDatabaseFileOption(
      `--database ${database.shown}`,
      database.value,
    );
  }
  await checkDirectoryOption("--state-directory", stateDir, {
    label: given("state-directory")
      ? undefined
      : database.sqlite && given("database")
      ? `--database ${database.shown}`
      : defaultLabel("--state-directory", stateDir),
  });
  for (
    const [name, dir] of [
      ["cache", cacheDir],
      ["git-cache", config.gitCacheDir!],
      ["gc-roots", config.gcRootDir!],
    ]
  ) {
    await checkDirectoryOption(`--${name}`, dir, {
      label: given(name) ? undefined : defaultLabel(`--${name}`, dir),
      probe: name === "gc-roots" ? "symlink" : "file",
    });
  }
  // Roots the daemon never walks protect nothing: pending derivations
  // would be collected (case C14). The daemon follows no link to a
  // directory elsewhere (only a link to a link into the store), so
  // linking this directory from its tree does not help. Only a warning:
  // the daemon's state directory is assumed (the warning says which, and
  // why), and a bind mount may show the directory in its tree.
  const state = guixStateDirectory();
  const daemonRoots = daemonRootDirectories();
  const gcRootDir = config.gcRootDir!.startsWith("/")
    ? config.gcRootDir!
    : `${Deno.cwd()}/${config.gcRootDir}`;
  const daemon = networkDaemon();
  if (daemon !== undefined) {
    // Where this machine's state directory is makes no difference then.
    logger.warn("gc roots unseen by a daemon over the network", {
      dir: gcRootDir,
      daemon,
      hint:
        "GUIX_DAEMON_SOCKET names a daemon reached over the network: if it runs on another machine, it walks that machine's file system, where the roots made here do not exist; run lorica-server on the daemon's machine to keep what it evaluated and built",
    });
  } else if (!underDaemonRoots(gcRootDir, daemonRoots)) {
    logger.warn("gc roots outside the daemon's", {
      dir: gcRootDir,
      daemonRoots: daemonRoots.join(" "),
      stateDirectory: state.path,
      stateSource: state.source,
      hint: `the daemon walks only ${
        daemonRoots.join(" and ")
      } if its state directory is ${state.path} (${
        state.source === "default"
          ? "the default, GUIX_STATE_DIRECTORY being unset"
          : "from GUIX_STATE_DIRECTORY"
      }): give a --gc-roots under one of them (the daemon follows no link to a directory elsewhere), or give lorica-server the daemon's own state directory as GUIX_STATE_DIRECTORY`,
    });
  }
  // Read before anything starts: a bad file is a bad command line.
  const mastodonToken = text("mastodon-token-file")
    ? await readSecretFile(
      "--mastodon-token-file",
      text("mastodon-token-file")!,
    )
    : Deno.env.get("LORICA_MASTODON_TOKEN");
  const adminToken = await adminTokenOf(text("admin-token-file"), stateDir);
  config.adminToken = adminToken.token;
  // Listened for before anything starts: a stop asked for while the
  // server starts (systemd's, say) is a clean stop once it has started,
  // not the default end that would leave guix publish and the database
  // behind.
  const stopped = Promise.withResolvers<void>();
  const stopping = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      stopped.resolve();
      stopping.abort();
    });
  }
  const open = () =>
    openStore(database.value, {
      logger,
      queryTimeoutSeconds: databaseTimeout,
    });
  // PostgreSQL may start after the server, or be restarting: it is waited
  // for. SQLite is opened once: what keeps a file from opening (its path,
  // its permissions) does not go away by waiting.
  // One server per SQLite file (sqlite_owner.ts): claimed before it is
  // opened, for as long as this process lives.
  const claim = database.sqlite
    ? await claimDatabase(database.value, { clock: systemClock })
    : null;
  const store = await (database.sqlite ? open() : waitForDatabase(open, {
    clock: systemClock,
    logger,
    // Unquoted: the log quotes what needs it.
    shown: JSON.parse(database.shown),
    signal: stopping.signal,
  })).catch((error) => {
    // A string that names no database is a bad command line (exit 2); a
    // database that refuses the server is not.
    const Failure = error instanceof PostgresTargetError ? UsageError : Error;
    throw new Failure(
      `Cannot use --database ${database.shown}: ${
        databaseFault((error as Error).message, database.value)
      }`,
      { cause: error },
    );
  });
  if (store === null) {
    logger.info("server stopping", { while: "waiting for the database" });
    return 0;
  }
  const server = await startServer(config, { store, guix, logger }).catch(
    async (error) => {
      await store.close();
      throw error;
    },
  );
  await adminToken.save?.().catch(async (error) => {
    // Nothing may be left running: the server's guix publish included.
    await server.stop();
    await store.close();
    throw error;
  });

  for (const spec of specs) await store.upsertSpecification(spec);
  // The jobset monitor polls every active specification right away.
  await server.refreshSpecifications();

  // Any failure to advertise, finding no interface to use included (only
  // loopback up at boot), leaves a server that workers reach by --server.
  const advertisement = remote && !flag("no-advertise")
    ? await Promise.resolve().then(() =>
      advertiseServer({
        interfaces: systemInterfaces(text("advertise-interface")?.split(",")),
        instanceName: text("advertise-name") ??
          `Lorica remote server on ${hostLabel(Deno.hostname())}`,
        hostName: `lorica-${hostLabel(Deno.hostname())}`,
        port: server.backendPort,
        logPort: server.logPort,
        publishPort: server.publishPort,
        logger: logger.with({ part: "discovery" }),
      })
    ).catch((error) => {
      logger.warn("advertising failed", { error });
      return null;
    })
    : null;

  const notifications = startNotificationSender({
    source: store,
    clock: systemClock,
    logger: logger.with({ part: "notify" }),
    // Absolute links: a mail or a post is read far from this server.
    baseUrl: server.webUrl,
    mastodon: mastodonUrl && mastodonToken
      ? { instanceUrl: mastodonUrl, token: mastodonToken }
      : undefined,
    intervalMs: notificationMs,
    hostname: Deno.hostname(),
  });

  // A dead guix publish stops the server as SIGTERM does, but with an
  // error, so that systemd restarts it (see lib/server/server.ts).
  const failure = await Promise.race([stopped.promise, server.failed]);
  if (!(failure instanceof Error)) logger.info("server stopping");
  await advertisement?.close();
  await server.stop();
  await notifications.stop();
  await store.close();
  claim?.release();
  if (failure instanceof Error) throw failure;
  return 0;
}

/** A `--database` value: what it names, and how to show it. */
function databaseOption(value: string | undefined): {
  value: string;
  sqlite: boolean;
  shown: string;
} {
  const name = value ?? `${stateHome()}/lorica/lorica.db`;
  try {
    return {
      value: name,
      sqlite: storeBackend(name) === "sqlite",
      shown: redactDatabase(name),
    };
  } catch (error) {
    if (!(error instanceof DatabaseNameError)) throw error;
    throw new UsageError(
      `Cannot use --database ${redactDatabase(name)}: ${
        databaseFault(error.message, name)
      }`,
      { cause: error },
    );
  }
}

/** Options that only remote mode uses: it alone has workers. */
const REMOTE_ONLY = [
  "backend-port",
  "log-port",
  "worker-keys",
  "max-build-wait",
  "max-worker-connections",
  "max-worker-connections-per-address",
  "advertise-name",
  "advertise-interface",
];
/** Options that only local mode uses: it alone builds with the daemon. */
const LOCAL_ONLY = ["max-jobs", "batch-size"];

/**
 * Refuses an option of the other mode: `--backend-port` without
 * `--build-remote` (remote mode forgotten, as when Cuirass's
 * remote-server options are moved over without register's
 * --build-remote), or `--max-jobs` with it.
 * @throws {UsageError} naming the option and its value.
 */
function refuseOtherModeOptions(options: GivenOptions): void {
  const remote = options.flag("build-remote");
  for (const name of remote ? LOCAL_ONLY : REMOTE_ONLY) {
    if (!options.given(name)) continue;
    throw new UsageError(
      `Cannot use --${name} ${JSON.stringify(options.text(name))} ${
        remote
          ? "with --build-remote: the workers build, not the local daemon"
          : "without --build-remote: only remote mode has workers"
      }`,
    );
  }
}

/** How a directory left to its default is named in messages. */
function defaultLabel(option: string, path: string): string {
  return `the default ${option} ${JSON.stringify(path)}`;
}

/**
 * The specifications of the `--specifications` file.
 * @throws {UsageError} when it cannot be read or holds an invalid one.
 */
async function specificationsOption(
  file: string,
  guix: Guix,
): Promise<Specification[]> {
  try {
    return await readSpecificationFileOrGuix(file, guix);
  } catch (error) {
    throw new UsageError(
      error instanceof SpecError
        ? error.message
        : `Cannot read --specifications ${JSON.stringify(file)}: ${
          (error as Error).message
        }`,
      { cause: error },
    );
  }
}

/**
 * The admin token: from its file, or the one generated into the state
 * directory at the first start. A new token is only kept in memory here;
 * `save` writes it once the server has started.
 */
async function adminTokenOf(
  file: string | undefined,
  stateDir: string,
): Promise<{ token: string; save?: () => Promise<void> }> {
  if (file) return { token: await readSecretFile("--admin-token-file", file) };
  const path = `${stateDir}/admin-token`;
  try {
    return { token: (await Deno.readTextFile(path)).trim() };
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new Error(
        `Cannot read the admin token ${JSON.stringify(path)}: ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
  }
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  const token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0"))
    .join("");
  return {
    token,
    async save() {
      await Deno.writeTextFile(path, token + "\n", { mode: 0o600 });
      say(`lorica-server: admin token written to ${path}`);
    },
  };
}

function httpUrlOption(option: string, value: string | undefined) {
  if (value === undefined) return null;
  if (!/^https?:\/\/[^\s]+$/.test(value)) {
    throw new UsageError(
      `Cannot use ${option} ${JSON.stringify(value)}: not an http(s) URL`,
    );
  }
  return value;
}

function durationOption(option: string, value: string): number {
  try {
    return parseDuration(value);
  } catch (error) {
    throw new UsageError(
      `Cannot use ${option} ${
        JSON.stringify(value)
      }: not a duration (a number, then s, h, d, w, or m for months of 30 days)`,
      { cause: error },
    );
  }
}

if (import.meta.main) await runMain("lorica-server", main, OPTIONS);
