// A peer host that vanishes without a FIN (power loss, a cable pulled, a
// firewall dropping its packets: case C07 b) must not hold its place in
// the ROUTER for good. Run in network namespaces (root only), whose TCP
// keepalive timings are made short.

import {
  labAvailable,
  type LabProcess,
  labTest,
} from "../../netns/netns_lab.ts";

const PROGRAMS = new URL("../../netns/programs/", import.meta.url).pathname;
const lab = await labAvailable();

/** The JSON value of the first line of `process` that has `key`. */
async function field(process: LabProcess, key: string, from = 0) {
  const { line, index } = await process.waitForLine(
    (l) => l.startsWith(`{"${key}"`),
    30_000,
    from,
  );
  return { value: JSON.parse(line)[key], index };
}

labTest(
  lab,
  "a peer host gone without a FIN is dropped, and the same address connects again past the per-address limit (C07)",
  async (lab) => {
    const server = await lab.namespace("srv");
    const first = await lab.namespace("wrk");
    await lab.link(server, first, {
      names: ["eth-s", "eth-w"],
      addresses: ["198.51.100.1/24", "198.51.100.2/24"],
    });
    // Probes after 2 s of silence, 1 s apart, 2 unanswered ones fatal:
    // the kernel's default (2 hours) scaled down for a test.
    await lab.exec(server, "sysctl", [
      "-qw",
      "net.ipv4.tcp_keepalive_time=2",
      "net.ipv4.tcp_keepalive_intvl=1",
      "net.ipv4.tcp_keepalive_probes=2",
    ]);
    // The host's ports before and after it came back differ, as after a
    // reboot: a SYN reusing the dead connection's ports would reset it.
    await lab.exec(first, "sysctl", [
      "-qw",
      "net.ipv4.ip_local_port_range=40000 40999",
    ]);
    const router = lab.deno(server, `${PROGRAMS}router_peers.ts`, [
      JSON.stringify({ maxConnectionsPerAddress: 1 }),
    ]);
    const { value: port } = await field(router, "port");
    const before = lab.deno(first, `${PROGRAMS}dealer_peer.ts`, [
      "198.51.100.1",
      String(port),
    ]);
    const { index } = await field(router, "connected");
    await field(before, "connected");
    // Its answer to the probe came: no segment of either side is left to
    // send again, which would reach the host that takes its address.
    await field(router, "message");

    // The host vanishes: its link goes down before its process ends, so
    // no FIN (nor anything else) reaches the server; and what the server
    // sends on that connection (a late ACK) is dropped, not answered with
    // a reset by the host that takes the address next.
    await lab.exec(first, "ip", ["link", "set", "eth-w", "down"]);
    await lab.exec(server, "ip", ["link", "set", "eth-s", "down"]);
    await lab.exec(server, "ip", [
      "rule",
      "add",
      "from",
      "198.51.100.1",
      "table",
      "100",
    ]);
    await lab.exec(server, "ip", [
      "route",
      "add",
      "blackhole",
      "default",
      "table",
      "100",
    ]);
    await before.stop();

    // It comes back (a new namespace, the same address), and connects.
    const again = await lab.namespace("wrk2");
    await lab.link(server, again, {
      names: ["eth-s2", "eth-w2"],
      addresses: ["198.51.100.3/24", "198.51.100.2/24"],
    });
    await lab.exec(again, "sysctl", [
      "-qw",
      "net.ipv4.ip_local_port_range=50000 50999",
    ]);
    const after = lab.deno(again, `${PROGRAMS}dealer_peer.ts`, [
      "198.51.100.3",
      String(port),
    ]);
    // Without keepalive the dead connection held the address's one place
    // for good: "zmtp connection refused", again and again.
    await field(router, "disconnected", index);
    await field(after, "connected");
  },
);
