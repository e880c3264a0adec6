// Advertises a server with lib/discovery from inside a lab namespace.
// Usage: advertise.ts '{"interfaces":["eth0"],"instanceName":"...",
//   "hostName":"srv","port":5555,"logPort":5556,"publishPort":5557,
//   "extraAddresses":{"eth0":["198.51.100.200"]},"ipv6":true}'
// Prints {"advertised":true}; on SIGTERM sends goodbyes, prints {"closed":true}.

import { advertiseServer } from "../../../lib/discovery/advertise_server.ts";
import { systemInterfaces } from "../../../lib/discovery/network_interfaces.ts";
import { createLogger } from "../../../lib/log.ts";

const options = JSON.parse(Deno.args[0]);
const extra: Record<string, string[]> | undefined = options.extraAddresses;
const interfaces = systemInterfaces(options.interfaces);
// Extra addresses go first, as a careless responder might list them. Only
// then are the published addresses fixed; otherwise they follow the
// interfaces' own.
const published = extra === undefined ? undefined : Object.fromEntries(
  interfaces.map((i) => [i.name, [...(extra[i.name] ?? []), ...i.addresses]]),
);
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
const advertisement = await advertiseServer({
  interfaces,
  instanceName: options.instanceName,
  hostName: options.hostName,
  port: options.port,
  logPort: options.logPort,
  publishPort: options.publishPort ?? null,
  publishedAddresses: published,
  ipv6: options.ipv6 ?? true,
  recheckMs: options.recheckMs,
  hostTtlSeconds: options.hostTtlSeconds,
  logger: createLogger({ level: "debug" }),
});
print({ advertised: true, interfaces });
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await advertisement.close();
    print({ closed: true });
    Deno.exit(0);
  });
}
