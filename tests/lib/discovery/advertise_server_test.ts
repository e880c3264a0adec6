// advertiseServer() against a real Avahi: avahi-browse in another network
// namespace must resolve our advertisement with the exact TXT values, and
// see it go when we send our goodbye.

import assert from "node:assert/strict";
import {
  avahiAvailable,
  labAvailable,
  labTest,
  linkLocalAddress,
  type Namespace,
  type NetnsLab,
  twoHosts,
} from "../../netns/netns_lab.ts";

const PROGRAMS = new URL("../../netns/programs/", import.meta.url).pathname;
const avahi = await avahiAvailable();
const namespaces = await labAvailable();

interface Resolved {
  iface: string;
  protocol: string;
  name: string;
  host: string;
  address: string;
  port: number;
  txt: string[];
}

/** Runs `avahi-browse -rpt` and parses the resolved (`=`) lines. */
async function avahiBrowse(
  lab: NetnsLab,
  ns: Namespace,
  env: Record<string, string>,
): Promise<Resolved[]> {
  const result = await lab.exec(
    ns,
    "avahi-browse",
    ["--resolve", "--parsable", "--terminate", "_remote-server._tcp"],
    env,
  );
  return result.out.split("\n").filter((l) => l.startsWith("=;")).map((l) => {
    const f = l.split(";");
    return {
      iface: f[1],
      protocol: f[2],
      name: f[3].replace(
        /\\(\d{3})/g,
        (_, d) => String.fromCharCode(Number(d)),
      ),
      host: f[6],
      address: f[7],
      port: Number(f[8]),
      txt: [...(f.slice(9).join(";").matchAll(/"([^"]*)"/g))].map((m) => m[1]),
    };
  });
}

/** Polls avahi-browse until `done` holds for its answer (at most ~20 tries). */
async function browseUntil(
  lab: NetnsLab,
  ns: Namespace,
  env: Record<string, string>,
  done: (found: Resolved[]) => boolean,
): Promise<Resolved[]> {
  let found: Resolved[] = [];
  for (let i = 0; i < 20; i++) {
    found = await avahiBrowse(lab, ns, env);
    if (done(found)) return found;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return found;
}

labTest(
  avahi,
  `advertiseServer() is resolved by avahi-browse with exact TXT values, then withdrawn`,
  async (lab) => {
    const hosts = await twoHosts(lab);
    // An extra interface the server must not advertise (C15: docker0).
    await lab.dummy(hosts.server, "docker0", "198.51.100.130/32");
    const daemon = await lab.avahi(hosts.worker, {
      interfaces: [hosts.workerIf],
      hostName: "lorica-wrk",
    });
    const serverLinkLocal = await linkLocalAddress(
      lab,
      hosts.server,
      hosts.serverIf,
    );

    const first = lab.deno(hosts.server, `${PROGRAMS}advertise.ts`, [
      JSON.stringify({
        interfaces: [hosts.serverIf],
        instanceName: "Lorica test server",
        hostName: "lorica-srv",
        port: 5555,
        logPort: 5556,
        publishPort: 5557,
      }),
    ]);
    await first.waitForLine((l) => l.includes('"advertised"'), 20_000);
    const found = await browseUntil(
      lab,
      hosts.worker,
      daemon.env,
      (f) =>
        f.some((r) => r.protocol === "IPv4") &&
        f.some((r) => r.protocol === "IPv6"),
    );
    const v4 = found.filter((r) => r.protocol === "IPv4");
    assert.deepEqual(v4, [{
      iface: hosts.workerIf,
      protocol: "IPv4",
      name: "Lorica test server",
      host: "lorica-srv.local",
      address: hosts.serverAddress,
      port: 5555,
      // avahi-browse prints the TXT strings last-first; on the wire they
      // are log-port, publish-port.
      txt: ["publish-port=5557", "log-port=5556"],
    }]);
    const v6 = found.filter((r) => r.protocol === "IPv6");
    assert.equal(v6.length, 1);
    assert.equal(v6[0].port, 5555);
    assert.ok([hosts.serverAddress, serverLinkLocal].includes(v6[0].address));
    // Our AAAA record, as Avahi resolves the host name over IPv6.
    const aaaa = await lab.exec(
      hosts.worker,
      "avahi-resolve",
      ["--name", "-6", "lorica-srv.local"],
      daemon.env,
    );
    assert.equal(aaaa.out.trim(), `lorica-srv.local\t${serverLinkLocal}`);
    assert.ok(!found.some((r) => r.address === "198.51.100.130"));

    await first.stop();
    assert.ok(
      first.lines.some((l) => l.includes('"closed"')),
      "goodbye sent",
    );
    const after = await browseUntil(
      lab,
      hosts.worker,
      daemon.env,
      (f) => f.length === 0,
    );
    assert.deepEqual(after, [], "the goodbye withdrew the service");

    // Without a publish server the publish-port key is left out.
    const second = lab.deno(hosts.server, `${PROGRAMS}advertise.ts`, [
      JSON.stringify({
        interfaces: [hosts.serverIf],
        instanceName: "Lorica test server 2",
        hostName: "lorica-srv",
        port: 6555,
        logPort: 6556,
        publishPort: null,
        ipv6: false,
      }),
    ]);
    await second.waitForLine((l) => l.includes('"advertised"'), 20_000);
    const again = await browseUntil(
      lab,
      hosts.worker,
      daemon.env,
      (f) => f.length > 0,
    );
    assert.deepEqual(
      again.map((r) => [r.protocol, r.name, r.port, r.txt]),
      [["IPv4", "Lorica test server 2", 6555, ["log-port=6556"]]],
    );
  },
);

labTest(
  namespaces,
  `advertiseServer() follows its interface to a new address: the old one stops working, the new one is announced`,
  async (lab) => {
    const hosts = await twoHosts(lab);
    lab.deno(hosts.server, `${PROGRAMS}advertise.ts`, [
      JSON.stringify({
        interfaces: [hosts.serverIf],
        instanceName: "Lorica test server",
        hostName: "lorica-srv",
        port: 5555,
        logPort: 5556,
        ipv6: false,
        recheckMs: 1000,
      }),
    ]);
    const browser = lab.deno(hosts.worker, `${PROGRAMS}browse.ts`, [
      JSON.stringify({ interfaces: [hosts.workerIf], ipv6: false }),
    ]);
    const addressesFound = (address: string) => (line: string) =>
      line.includes('"found"') && line.includes(`"addresses":["${address}"]`);
    const { index } = await browser.waitForLine(
      addressesFound(hosts.serverAddress),
      20_000,
    );
    // DHCP hands the server another address: the sockets joined the
    // group through the old one, which is no more.
    await lab.exec(hosts.server, "ip", [
      "addr",
      "del",
      `${hosts.serverAddress}/24`,
      "dev",
      hosts.serverIf,
    ]);
    await lab.exec(hosts.server, "ip", [
      "addr",
      "add",
      "198.51.100.3/24",
      "dev",
      hosts.serverIf,
    ]);
    await browser.waitForLine(addressesFound("198.51.100.3"), 20_000, index);
  },
);
