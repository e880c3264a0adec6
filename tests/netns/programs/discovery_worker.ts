// A Lorica worker that finds its server by DNS-SD, composed from lib/ the
// way worker.ts will be once discovery is wired in (issue 5).
// Usage: discovery_worker.ts '{"systems":["x86_64-linux"],"publishPort":5558}'
// SIGTERM stops it.

import { createLogger } from "../../../lib/log.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { startWorker } from "../../../lib/worker/worker.ts";
import {
  followServer,
  ServerLocator,
} from "../../../lib/discovery/server_locator.ts";
import {
  localAddresses,
  systemInterfaces,
} from "../../../lib/discovery/network_interfaces.ts";

const options = JSON.parse(Deno.args[0]);
const logger = createLogger({ level: "info" });
const guix = new Guix({ logger: logger.with({ part: "guix" }) });
const abort = new AbortController();
Deno.addSignalListener("SIGTERM", () => abort.abort());
const locator = new ServerLocator({
  interfaces: systemInterfaces(),
  localAddresses: localAddresses(),
  instanceName: options.serverName,
  logger: logger.with({ part: "discovery" }),
});
await followServer(locator, async (server, signal) => {
  // Until lib/worker/worker.ts takes a ServerSource, a whole worker is
  // started per server and stopped when the server moves.
  const worker = await startWorker({
    server,
    workers: 1,
    systems: options.systems,
    machine: Deno.hostname(),
    publishPort: options.publishPort,
    publishListen: "0.0.0.0",
    substituteUrls: [],
    requestPeriodMs: 1000,
    pingIntervalMs: 60_000,
    publishArgs: [],
  }, { guix, logger });
  await new Promise((resolve) =>
    signal.addEventListener("abort", resolve, { once: true })
  );
  await worker.stop();
}, abort.signal);
Deno.exit(0);
