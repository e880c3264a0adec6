// lorica-worker: builds what a Lorica or Cuirass server hands out.

import { parseArgs } from "node:util";
import { createLogger, parseLogLevel } from "./lib/log.ts";
import { Guix } from "./lib/guix/guix_command.ts";
import { startWorker } from "./lib/worker/worker.ts";
import {
  parseHostPort,
  parsePort,
  parsePositive,
  UsageError,
  VERSION,
} from "./lib/cli/args.ts";

const USAGE = `Usage: lorica-worker --server=HOST:PORT [OPTIONS]
Build derivations for a Lorica or Cuirass server.

  -s, --server=HOST:PORT     the server's backend (e.g. 10.0.0.1:5555, [::1]:5555)
  -w, --workers=N            concurrent builds (default 1)
  -S, --systems=S1,S2        systems to build for (default x86_64-linux)
  -p, --publish-port=PORT    this machine's guix publish port (default 5558)
      --publish-listen=ADDR  publish address (default 0.0.0.0)
      --substitute-urls=URLS extra substitute URLs, space separated
      --public-key=FILE      publish signing key (default: guix's own)
      --private-key=FILE
  -h, --help                 show this help
  -V, --version              show the version

Environment: REQUEST_PERIOD (seconds, default 30), LORICA_LOG, NIX_STORE_DIR.`;

// deno-lint-ignore no-console
const say = console.log;

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      server: { type: "string", short: "s" },
      workers: { type: "string", short: "w", default: "1" },
      systems: { type: "string", short: "S", default: "x86_64-linux" },
      "publish-port": { type: "string", short: "p", default: "5558" },
      "publish-listen": { type: "string", default: "0.0.0.0" },
      "substitute-urls": { type: "string", default: "" },
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
    say(`lorica-worker ${VERSION}`);
    return 0;
  }
  if (values.server === undefined) {
    throw new UsageError(
      "Cannot find a server: give --server=HOST:PORT (discovery is issue #5)",
    );
  }
  const systems = values.systems.split(",").map((s) => s.trim()).filter(
    Boolean,
  );
  if (systems.length === 0) {
    throw new UsageError(`Cannot use --systems "${values.systems}": empty`);
  }
  const period = parsePositive(
    "REQUEST_PERIOD",
    Deno.env.get("REQUEST_PERIOD") ?? "30",
  );
  const logger = createLogger({
    level: parseLogLevel(Deno.env.get("LORICA_LOG")),
  });
  const worker = startWorker({
    server: parseHostPort("--server", values.server),
    workers: parsePositive("--workers", values.workers),
    systems,
    machine: Deno.hostname(),
    publishPort: parsePort("--publish-port", values["publish-port"]),
    publishListen: values["publish-listen"],
    substituteUrls: values["substitute-urls"].split(/\s+/).filter(Boolean),
    requestPeriodMs: period * 1000,
    pingIntervalMs: 60_000,
    publishArgs: [
      ...(values["public-key"] ? [`--public-key=${values["public-key"]}`] : []),
      ...(values["private-key"]
        ? [`--private-key=${values["private-key"]}`]
        : []),
    ],
  }, { guix: new Guix({ logger: logger.with({ part: "guix" }) }), logger });
  logger.info("worker started", {
    server: values.server,
    sessions: worker.names.join(","),
    systems: systems.join(","),
  });
  const stopped = Promise.withResolvers<void>();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stopped.resolve());
  }
  await Promise.race([stopped.promise, worker.done]);
  await worker.stop();
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (error) {
    const usage = error instanceof UsageError ||
      (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    // deno-lint-ignore no-console
    console.error(`lorica-worker: error: ${(error as Error).message}`);
    Deno.exit(usage ? 2 : 1);
  }
}
