// lorica-server: evaluates specifications and hands builds to remote workers.

import { parseArgs } from "node:util";
import { createLogger, parseLogLevel } from "./lib/log.ts";
import { Guix } from "./lib/guix/guix_command.ts";
import { storeDirFromEnv } from "./lib/guix/store_path.ts";
import { openSqliteStore } from "./lib/store/sqlite.ts";
import { readSpecificationFile } from "./lib/spec/read_spec.ts";
import { startServer } from "./lib/server/server.ts";
import {
  cacheHome,
  parsePort,
  parsePositive,
  stateHome,
  UsageError,
  VERSION,
} from "./lib/cli/args.ts";

const USAGE = `Usage: lorica-server [OPTIONS]
Evaluate Guix specifications and build them on remote workers.

  -S, --specifications=FILE  Cuirass specification file to load and evaluate
  -D, --database=FILE        SQLite database (default: $XDG_STATE_HOME/lorica/lorica.db)
  -b, --backend-port=PORT    ZeroMQ port for workers (default 5555)
  -l, --log-port=PORT        build log port (default 5556)
  -p, --publish-port=PORT    guix publish port (default 5557)
      --no-publish           run no publish server
      --listen=ADDRESS       address of the worker-facing ports (default 0.0.0.0)
      --web-port=PORT        web interface port (default 8080)
      --web-listen=ADDRESS   web interface address (default 127.0.0.1)
  -c, --cache=DIR            build log directory (default: $XDG_CACHE_HOME/lorica)
      --state-directory=DIR  evaluation logs (default: next to the database)
      --worker-timeout=SECS  forget workers silent this long (default 120)
      --public-key=FILE      publish signing key (default: guix's own)
      --private-key=FILE
  -h, --help                 show this help
  -V, --version              show the version

Environment: LORICA_LOG=debug|info|warn|error; NIX_STORE_DIR.`;

// deno-lint-ignore no-console
const say = console.log;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      specifications: { type: "string", short: "S" },
      database: { type: "string", short: "D" },
      "backend-port": { type: "string", short: "b", default: "5555" },
      "log-port": { type: "string", short: "l", default: "5556" },
      "publish-port": { type: "string", short: "p", default: "5557" },
      "no-publish": { type: "boolean", default: false },
      listen: { type: "string", default: "0.0.0.0" },
      "web-port": { type: "string", default: "8080" },
      "web-listen": { type: "string", default: "127.0.0.1" },
      cache: { type: "string", short: "c" },
      "state-directory": { type: "string" },
      "worker-timeout": { type: "string", default: "120" },
      "public-key": { type: "string" },
      "private-key": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "V" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    say(USAGE);
    return 0;
  }
  if (values.version) {
    say(`lorica-server ${VERSION}`);
    return 0;
  }
  const logger = createLogger({
    level: parseLogLevel(Deno.env.get("LORICA_LOG")),
  });
  const database = values.database ?? `${stateHome()}/lorica/lorica.db`;
  const stateDir = values["state-directory"] ??
    database.replace(/\/[^/]*$/, "") ?? ".";
  await Deno.mkdir(stateDir, { recursive: true });
  const publishArgs = [
    ...(values["public-key"] ? [`--public-key=${values["public-key"]}`] : []),
    ...(values["private-key"]
      ? [`--private-key=${values["private-key"]}`]
      : []),
  ];
  const specs = values.specifications
    ? await readSpecificationFile(values.specifications)
    : [];

  const store = openSqliteStore(database);
  const guix = new Guix({ logger: logger.with({ part: "guix" }) });
  const server = await startServer({
    listen: values.listen,
    backendPort: parsePort("--backend-port", values["backend-port"]),
    logPort: parsePort("--log-port", values["log-port"]),
    publishPort: values["no-publish"]
      ? null
      : parsePort("--publish-port", values["publish-port"]),
    webListen: values["web-listen"],
    webPort: parsePort("--web-port", values["web-port"]),
    cacheDir: values.cache ?? `${cacheHome()}/lorica`,
    stateDir,
    storeDir: storeDirFromEnv(),
    workerTimeoutSeconds: parsePositive(
      "--worker-timeout",
      values["worker-timeout"],
    ),
    publishArgs,
  }, { store, guix, logger });

  const stopped = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stopped.resolve());
  }
  for (const spec of specs) {
    await store.upsertSpecification(spec);
    if (spec.isActive) void server.evaluate(spec);
  }
  await stopped.promise;
  await server.stop();
  await store.close();
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const usage = error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    // deno-lint-ignore no-console
    console.error(`lorica-server: error: ${(error as Error).message}`);
    Deno.exit(usage ? 2 : 1);
  }
}
