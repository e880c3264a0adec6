// Runs the worker's ServerLocator from inside a lab namespace.
// Usage: locate.ts '{"interfaces":["eth0"],"instanceName":"...","connectTimeoutMs":2000}'
// Prints each chosen server as one JSON line.

import { ServerLocator } from "../../../lib/discovery/server_locator.ts";
import {
  localAddresses,
  systemInterfaces,
} from "../../../lib/discovery/network_interfaces.ts";
import { createLogger } from "../../../lib/log.ts";

const options = JSON.parse(Deno.args[0]);
const abort = new AbortController();
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => abort.abort());
}
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
const locator = new ServerLocator({
  interfaces: systemInterfaces(options.interfaces),
  ipv6: options.ipv6 ?? true,
  instanceName: options.instanceName,
  localAddresses: localAddresses(),
  connectTimeoutMs: options.connectTimeoutMs ?? 2000,
  retryMs: options.retryMs ?? 2000,
  logger: createLogger({ level: "debug" }),
});
print({ locating: true });
for await (const server of locator.servers(abort.signal)) {
  print({ server });
}
Deno.exit(0);
