// Browses for servers with lib/discovery from inside a lab namespace.
// Usage: browse.ts '{"interfaces":["eth0"],"ipv6":true}'
// Prints each browse event as one JSON line.

import { browseServers } from "../../../lib/discovery/browse_servers.ts";
import { systemInterfaces } from "../../../lib/discovery/network_interfaces.ts";
import { createLogger } from "../../../lib/log.ts";

const options = JSON.parse(Deno.args[0]);
const abort = new AbortController();
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => abort.abort());
}
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
print({ browsing: true });
for await (
  const event of browseServers({
    interfaces: systemInterfaces(options.interfaces),
    ipv6: options.ipv6 ?? true,
    recheckMs: options.recheckMs,
    logger: createLogger({ level: "debug" }),
  }, abort.signal)
) {
  print(event);
}
Deno.exit(0);
