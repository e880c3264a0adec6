// A Lorica server that advertises itself, composed from lib/ the way
// server.ts will be once discovery is wired in (issue 5).
// Usage: discovery_server.ts '{"specFile":...,"root":...,"interface":"eth-s",
//   "backendPort":5555,"logPort":5556,"publishPort":5557,"webPort":8080}'
// Prints {"advertised":true} once advertised; SIGTERM withdraws and stops.

import { createLogger } from "../../../lib/log.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { storeDirFromEnv } from "../../../lib/guix/store_path.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { readSpecificationFile } from "../../../lib/spec/read_spec.ts";
import { startServer } from "../../../lib/server/server.ts";
import { advertiseServer } from "../../../lib/discovery/advertise_server.ts";
import { hostLabel } from "../../../lib/discovery/service.ts";
import { systemInterfaces } from "../../../lib/discovery/network_interfaces.ts";

const options = JSON.parse(Deno.args[0]);
const logger = createLogger({ level: "info" });
const store = openSqliteStore(`${options.root}/lorica.db`);
const guix = new Guix({ logger: logger.with({ part: "guix" }) });
const server = await startServer({
  mode: "remote",
  // The demo specification names the Internet's Guix channel: never fetch.
  pollChannels: false,
  listen: "0.0.0.0",
  backendPort: options.backendPort,
  logPort: options.logPort,
  publishPort: options.publishPort,
  webListen: "0.0.0.0",
  webPort: options.webPort,
  cacheDir: `${options.root}/logs`,
  stateDir: options.root,
  storeDir: storeDirFromEnv(),
  workerTimeoutSeconds: 120,
  publishArgs: [],
}, { store, guix, logger });
const advertisement = await advertiseServer({
  interfaces: systemInterfaces([options.interface]),
  instanceName: `Lorica remote server on ${hostLabel(Deno.hostname())}`,
  hostName: `lorica-${hostLabel(Deno.hostname())}`,
  port: server.backendPort,
  logPort: server.logPort,
  publishPort: server.publishPort,
  logger: logger.with({ part: "discovery" }),
});
Deno.stdout.writeSync(new TextEncoder().encode('{"advertised":true}\n'));
for (const spec of await readSpecificationFile(options.specFile)) {
  await store.upsertSpecification(spec);
  if (spec.isActive) void server.evaluate(spec);
}
const stopped = Promise.withResolvers<void>();
Deno.addSignalListener("SIGTERM", () => stopped.resolve());
await stopped.promise;
await advertisement.close();
await server.stop();
await store.close();
Deno.exit(0);
