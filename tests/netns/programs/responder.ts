// A scripted, possibly hostile mDNS responder for lab tests: to every
// query it answers with the given packets, as they are; with `flood`, it
// also sends unsolicited responses full of other hosts' address records.
// Usage: responder.ts '{"interfaces":["eth-x"],"packets":[...],
//   "flood":{"packets":50,"records":200,"intervalMs":20}}'
// The argument may also be "@FILE", a file holding that JSON (hundreds of
// records do not fit in a command line).
// Prints {"responding":true}, then {"flooded":N} when the flood is over.

import {
  type DnsPacket,
  openMdnsTransport,
} from "../../../lib/discovery/mdns_transport.ts";
import { systemInterfaces } from "../../../lib/discovery/network_interfaces.ts";
import { createLogger } from "../../../lib/log.ts";

const argument = Deno.args[0];
const options = JSON.parse(
  argument.startsWith("@")
    ? Deno.readTextFileSync(argument.slice(1))
    : argument,
);
const packets: DnsPacket[] = options.packets ?? [];
const print = (value: unknown) =>
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
const transport = await openMdnsTransport({
  interfaces: systemInterfaces(options.interfaces),
  ipv6: false,
  logger: createLogger({ level: "info" }),
  onPacket(packet, _source, link) {
    if (packet.type !== "query") return;
    for (const reply of packets) link.send(reply).catch(() => {});
  },
});
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, async () => {
    await transport.close();
    Deno.exit(0);
  });
}
print({ responding: true });
const flood = options.flood;
if (flood !== undefined) {
  let sent = 0;
  for (let i = 0; i < flood.packets; i++) {
    const answers = Array.from({ length: flood.records }, (_, j) => ({
      name: `other-${i}-${j}.local`,
      type: "A",
      ttl: 120,
      data: `198.51.100.${(j % 200) + 20}`,
    }));
    for (const link of transport.links) {
      await link.send({ type: "response", answers }).catch(() => {});
    }
    sent++;
    await new Promise((resolve) => setTimeout(resolve, flood.intervalMs));
  }
  print({ flooded: sent });
}
