// mDNS sockets on the interfaces the caller chose, through npm:multicast-dns.
//
// Each interface and family gets its own socket bound to the wildcard
// address, joined to the mDNS group on that interface only, and sending
// through that interface only. (Binding to the interface address instead
// would receive no multicast at all.) Nothing here picks interfaces by
// itself: an empty list opens nothing.

import multicastDns from "multicast-dns";
import type { Logger } from "../log.ts";
import { DiscoveryError } from "./service.ts";

/** The standard mDNS port. */
export const MDNS_PORT = 5353;

/** An interface to speak mDNS on, with the addresses that belong to it. */
export interface MdnsInterface {
  /** Interface name, e.g. "eth0"; used as the IPv6 zone. */
  name: string;
  /** Its IPv4 and IPv6 addresses, without zone or prefix length. */
  addresses: string[];
}

/** A DNS record as npm:dns-packet encodes and decodes it. */
export interface DnsRecord {
  name: string;
  type: string;
  ttl?: number;
  class?: string;
  flush?: boolean;
  // deno-lint-ignore no-explicit-any
  data?: any;
}

/** A DNS question as npm:dns-packet decodes it. */
export interface DnsQuestion {
  name: string;
  type: string;
  class?: string | number;
}

/** A decoded mDNS message. */
export interface DnsPacket {
  type: "query" | "response";
  id?: number;
  flags?: number;
  questions?: DnsQuestion[];
  answers?: DnsRecord[];
  authorities?: DnsRecord[];
  additionals?: DnsRecord[];
}

/** Where a packet came from, and through which of our sockets. */
export interface PacketSource {
  address: string;
  port: number;
  family: "IPv4" | "IPv6";
  /** The interface whose socket received it. */
  interface: string;
}

/** One socket: an interface and an address family. */
export interface MdnsLink {
  readonly interface: MdnsInterface;
  readonly family: "IPv4" | "IPv6";
  /** Sends to the mDNS group on this link, or to `to` (unicast). */
  send(
    packet: DnsPacket,
    to?: { address: string; port: number },
  ): Promise<void>;
}

/** The open sockets; `close()` leaves the groups and closes them. */
export interface MdnsTransport {
  readonly links: readonly MdnsLink[];
  close(): Promise<void>;
}

export interface MdnsTransportOptions {
  interfaces: readonly MdnsInterface[];
  /** Open IPv6 sockets for interfaces with IPv6 addresses; default true. */
  ipv6?: boolean;
  /** Default 5353; tests never need another. */
  port?: number;
  logger: Logger;
  onPacket: (packet: DnsPacket, source: PacketSource, link: MdnsLink) => void;
}

/**
 * Closes `old` and opens sockets on the interfaces' new addresses with
 * `open`; when that fails, left without sockets until the addresses change
 * again (logged). Returns the new transport and whether it has sockets.
 */
export async function reopenMdnsTransport(
  old: MdnsTransport,
  open: () => Promise<MdnsTransport>,
  context: { interfaces: string; logger: Logger },
): Promise<{ transport: MdnsTransport; reopened: boolean }> {
  await old.close();
  try {
    return { transport: await open(), reopened: true };
  } catch (error) {
    context.logger.warn("mdns sockets not reopened", {
      interfaces: context.interfaces,
      error,
    });
    return {
      transport: { links: [], close: () => Promise.resolve() },
      reopened: false,
    };
  }
}

interface MulticastDnsInstance {
  on(event: string, listener: (...args: never[]) => void): void;
  once(event: string, listener: (...args: never[]) => void): void;
  send(
    packet: DnsPacket,
    to: { address: string; port: number } | null,
    callback: (error?: Error | null) => void,
  ): void;
  destroy(callback?: () => void): void;
}

type MulticastDnsFactory = (
  options: Record<string, unknown>,
) => MulticastDnsInstance;

const IPV4_GROUP = "224.0.0.251";
const IPV6_GROUP = "ff02::fb";

/**
 * Opens one mDNS socket per chosen interface and family and waits until
 * each is bound.
 * @throws {DiscoveryError} when no interface is given or a socket cannot bind.
 */
export async function openMdnsTransport(
  options: MdnsTransportOptions,
): Promise<MdnsTransport> {
  const { interfaces, ipv6 = true, port = MDNS_PORT, logger } = options;
  if (interfaces.length === 0) {
    throw new DiscoveryError(
      "Cannot open mDNS sockets: no interface given",
      "interfaces",
    );
  }
  const instances: MulticastDnsInstance[] = [];
  const links: MdnsLink[] = [];
  try {
    for (const iface of interfaces) {
      const v4 = iface.addresses.find((a) => !a.includes(":"));
      if (v4 !== undefined) {
        const instance = await openOne(
          {
            type: "udp4",
            ip: IPV4_GROUP,
            interface: v4,
            bind: "0.0.0.0",
            port,
          },
          iface,
          logger,
        );
        instances.push(instance);
        links.push(makeLink(instance, iface, "IPv4", options));
      }
      if (ipv6 && iface.addresses.some((a) => a.includes(":"))) {
        const instance = await openOne(
          {
            type: "udp6",
            ip: IPV6_GROUP,
            interface: `::%${iface.name}`,
            bind: "::",
            port,
          },
          iface,
          logger,
        );
        instances.push(instance);
        links.push(makeLink(instance, iface, "IPv6", options));
      }
    }
  } catch (error) {
    await Promise.all(instances.map(destroy));
    throw error;
  }
  return {
    links,
    async close() {
      await Promise.all(instances.map(destroy));
    },
  };
}

async function openOne(
  settings: Record<string, unknown>,
  iface: MdnsInterface,
  logger: Logger,
): Promise<MulticastDnsInstance> {
  const factory = multicastDns as unknown as MulticastDnsFactory;
  const instance = factory({
    ...settings,
    reuseAddr: true,
    // Loopback on, so that a server and a worker on one host see each
    // other; each side ignores the kind of packet it sends itself.
    loopback: true,
    ttl: 255,
  });
  const ready = Promise.withResolvers<void>();
  instance.once("ready", () => ready.resolve());
  instance.on("error", (error: Error) => {
    ready.reject(
      new DiscoveryError(
        `Cannot open an mDNS socket on ${
          JSON.stringify(iface.name)
        }: ${error.message}`,
        "interfaces",
        { cause: error },
      ),
    );
    logger.warn("mdns socket error", { interface: iface.name, error });
  });
  instance.on("warning", (error: Error) => {
    logger.debug("mdns warning", { interface: iface.name, error });
  });
  try {
    await ready.promise;
  } catch (error) {
    await destroy(instance);
    throw error;
  }
  return instance;
}

function makeLink(
  instance: MulticastDnsInstance,
  iface: MdnsInterface,
  family: "IPv4" | "IPv6",
  options: MdnsTransportOptions,
): MdnsLink {
  const group = family === "IPv4" ? IPV4_GROUP : IPV6_GROUP;
  const port = options.port ?? MDNS_PORT;
  const link: MdnsLink = {
    interface: iface,
    family,
    send(packet, to) {
      // The socket's multicast interface is this link's, so the bare
      // group address goes out here only.
      const target = to ?? { address: group, port };
      return new Promise((resolve, reject) =>
        instance.send(
          packet,
          { ...target },
          (error) => error ? reject(error) : resolve(),
        )
      );
    },
  };
  instance.on(
    "packet",
    ((packet: DnsPacket, rinfo: { address: string; port: number }) => {
      options.onPacket(packet, {
        address: rinfo.address,
        port: rinfo.port,
        family,
        interface: iface.name,
      }, link);
    }) as (...args: never[]) => void,
  );
  return link;
}

function destroy(instance: MulticastDnsInstance): Promise<void> {
  return new Promise((resolve) => {
    try {
      instance.destroy(() => resolve());
    } catch {
      resolve();
    }
  });
}
