// A scripted, possibly hostile mDNS responder for lab tests: to every
// query it answers with the given packets, as they are; with `flood`, it
// also sends unsolicited responses full of other hosts' address records.
// Usage: responder.ts '{"interfaces":["eth-x"],"packets":[...],
//   "flood":{"packets":50,"records":200,"intervalMs":20,"instances":false}}'
// A flood sends address records of other hosts, or with "instances", whole
// instances of our service type (PTR, SRV, TXT, A) that lead nowhere.
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
    const answers = Array.from(
      { length: flood.records },
      (_, j) =>
        flood.instances
          ? instanceRecords(`${i}-${j}`)
          : [otherHost(`${i}-${j}`)],
    ).flat();
    for (const link of transport.links) {
      await link.send({ type: "response", answers }).catch(() => {});
    }
    sent++;
    await new Promise((resolve) => setTimeout(resolve, flood.intervalMs));
  }
  print({ flooded: sent });
}

function otherHost(id: string) {
  return {
    name: `other-${id}.local`,
    type: "A",
    ttl: 120,
    data: "198.51.100.250",
  };
}

function instanceRecords(id: string) {
  const fullName = `Flood ${id}._remote-server._tcp.local`;
  return [
    {
      name: "_remote-server._tcp.local",
      type: "PTR",
      ttl: 4500,
      data: fullName,
    },
    {
      name: fullName,
      type: "SRV",
      ttl: 120,
      data: { priority: 0, weight: 0, port: 5555, target: `flood-${id}.local` },
    },
    { name: fullName, type: "TXT", ttl: 120, data: ["log-port=5556"] },
    otherHost(id),
  ].map((record, k) =>
    k === 3 ? { ...record, name: `flood-${id}.local` } : record
  );
}
