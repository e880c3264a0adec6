// Advertises a remote server with DNS-SD over mDNS, the way Cuirass's
// server does through Avahi: PTR, SRV, TXT and the host's addresses.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  type DnsPacket,
  type DnsRecord,
  type MdnsInterface,
  type MdnsLink,
  type MdnsTransport,
  openMdnsTransport,
  type PacketSource,
  reopenMdnsTransport,
} from "./mdns_transport.ts";
import {
  checkNames,
  DiscoveryError,
  instanceFullName,
  serverTxt,
  SERVICE_TYPE,
  SERVICES_META,
} from "./service.ts";
import { describeInterfaces, watchAddresses } from "./network_interfaces.ts";

export interface AdvertiseOptions {
  /** Interfaces to advertise on; only their addresses are published. */
  interfaces: readonly MdnsInterface[];
  /** Instance label, e.g. "Lorica remote server on build1". */
  instanceName: string;
  /** Host label for the SRV target and address records (`<hostName>.local`). */
  hostName: string;
  /** The backend (ZeroMQ) port. */
  port: number;
  logPort: number;
  /** Null when the server runs no publish server: the TXT key is left out. */
  publishPort: number | null;
  /**
   * Addresses to publish on an interface instead of its own, by interface
   * name; for tests that play a careless responder (case C15).
   */
  publishedAddresses?: Record<string, string[]>;
  /** Also publish IPv6 addresses and answer over IPv6; default true. */
  ipv6?: boolean;
  /** TTL of SRV, TXT, A and AAAA; default 120 s (PTR: 4500 s, as Avahi). */
  hostTtlSeconds?: number;
  /**
   * Pause between two looks at the interfaces' addresses; default 5 s.
   * When they changed (DHCP, a cable moved, the interface re-created), the
   * sockets are opened again and the new addresses announced.
   */
  recheckMs?: number;
  /** An interface's current addresses, or [] when it is gone; default: the system's. */
  readAddresses?: (name: string) => string[];
  logger: Logger;
  clock?: Clock;
}

/** A running advertisement; `close()` sends goodbyes and closes the sockets. */
export interface Advertisement {
  readonly instanceName: string;
  /** `<hostName>.local`. */
  readonly host: string;
  close(): Promise<void>;
}

const SERVICE_TTL = 4500;
const RECHECK_MS = 5000;
/** Announcements at start, one second apart (RFC 6762 §8.3 asks for two or more). */
const ANNOUNCEMENTS = 3;

/**
 * Starts answering DNS-SD queries for the server and announces it.
 * @throws {DiscoveryError} on a bad name or port, or when no socket opens.
 */
export async function advertiseServer(
  options: AdvertiseOptions,
): Promise<Advertisement> {
  const { instanceName, hostName, logger } = options;
  const clock = options.clock ?? systemClock;
  checkNames(instanceName, hostName);
  for (
    const [field, port] of [
      ["port", options.port],
      ["logPort", options.logPort],
      ["publishPort", options.publishPort ?? 1],
    ] as const
  ) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new DiscoveryError(
        `Cannot advertise ${field} ${
          JSON.stringify(port)
        }: not a port (1-65535)`,
        field,
      );
    }
  }
  const host = `${hostName}.local`;
  const fullName = instanceFullName(instanceName);
  const hostTtl = options.hostTtlSeconds ?? 120;
  const ipv6 = options.ipv6 ?? true;

  function records(link: MdnsLink, ttlScale: 0 | 1) {
    const own = options.publishedAddresses?.[link.interface.name] ??
      link.interface.addresses;
    const addresses = own.filter((a) => ipv6 || !a.includes(":"));
    const ptr: DnsRecord = {
      name: SERVICE_TYPE,
      type: "PTR",
      ttl: SERVICE_TTL * ttlScale,
      data: fullName,
    };
    const srv: DnsRecord = {
      name: fullName,
      type: "SRV",
      ttl: hostTtl * ttlScale,
      flush: true,
      data: { priority: 0, weight: 0, port: options.port, target: host },
    };
    const txt: DnsRecord = {
      name: fullName,
      type: "TXT",
      ttl: SERVICE_TTL * ttlScale,
      flush: true,
      data: serverTxt(options.logPort, options.publishPort),
    };
    const hostRecords: DnsRecord[] = addresses.map((address) => ({
      name: host,
      type: address.includes(":") ? "AAAA" : "A",
      ttl: hostTtl * ttlScale,
      flush: true,
      data: address,
    }));
    const meta: DnsRecord = {
      name: SERVICES_META,
      type: "PTR",
      ttl: SERVICE_TTL * ttlScale,
      data: SERVICE_TYPE,
    };
    return { ptr, srv, txt, hostRecords, meta };
  }

  function answer(packet: DnsPacket, source: PacketSource, link: MdnsLink) {
    if (packet.type !== "query" || !packet.questions) return;
    const all = records(link, 1);
    const answers: DnsRecord[] = [];
    const additionals: DnsRecord[] = [];
    const add = (list: DnsRecord[], record: DnsRecord) => {
      if (!answers.includes(record) && !list.includes(record)) {
        list.push(record);
      }
    };
    for (const question of packet.questions.slice(0, 32)) {
      const name = question.name.toLowerCase();
      const type = question.type;
      const any = type === "ANY";
      if (name === SERVICE_TYPE.toLowerCase() && (type === "PTR" || any)) {
        add(answers, all.ptr);
        add(additionals, all.srv);
        add(additionals, all.txt);
        all.hostRecords.forEach((r) => add(additionals, r));
      } else if (name === fullName.toLowerCase()) {
        if (type === "SRV" || any) {
          add(answers, all.srv);
          all.hostRecords.forEach((r) => add(additionals, r));
        }
        if (type === "TXT" || any) add(answers, all.txt);
      } else if (name === host.toLowerCase()) {
        for (const record of all.hostRecords) {
          if (any || record.type === type) add(answers, record);
        }
      } else if (
        name === SERVICES_META.toLowerCase() && (type === "PTR" || any)
      ) {
        add(answers, all.meta);
      }
    }
    if (answers.length === 0) return;
    const extra = additionals.filter((r) => !answers.includes(r));
    // A query from a port other than 5353 is a one-shot (legacy) resolver:
    // it gets a unicast reply carrying its id and questions (RFC 6762 §6.7).
    const legacy = source.port !== 5353;
    const reply: DnsPacket = legacy
      ? {
        type: "response",
        id: packet.id,
        flags: 1 << 10,
        questions: packet.questions,
        answers: answers.map((r) => ({ ...r, flush: false, ttl: 10 })),
        additionals: extra.map((r) => ({ ...r, flush: false, ttl: 10 })),
      }
      : { type: "response", flags: 1 << 10, answers, additionals: extra };
    const to = legacy
      ? { address: withZone(source.address, link), port: source.port }
      : undefined;
    link.send(reply, to).catch((error) =>
      logger.debug("mdns reply failed", {
        interface: link.interface.name,
        error,
      })
    );
  }

  function announcement(link: MdnsLink, ttlScale: 0 | 1): DnsPacket {
    const all = records(link, ttlScale);
    return {
      type: "response",
      flags: 1 << 10,
      answers: [all.ptr, all.srv, all.txt, ...all.hostRecords, all.meta],
    };
  }

  let interfaces = options.interfaces;
  const open = () =>
    openMdnsTransport({ interfaces, ipv6, logger, onPacket: answer });
  let transport: MdnsTransport = await open();
  const stop = new AbortController();
  async function announce(ttlScale: 0 | 1) {
    await Promise.all(
      transport.links.map((link) =>
        link.send(announcement(link, ttlScale)).catch((error) =>
          logger.warn("mdns announce failed", {
            interface: link.interface.name,
            error,
          })
        )
      ),
    );
  }
  async function announceSeveralTimes() {
    for (let i = 0; i < ANNOUNCEMENTS && !stop.signal.aborted; i++) {
      await announce(1);
      await clock.sleep(1000 * 2 ** i, stop.signal).catch(() => {});
    }
  }
  /** Reopens the sockets on the new addresses and announces them. */
  async function reopen(fresh: MdnsInterface[], before: string) {
    logger.info("server advertisement addresses changed", {
      instance: instanceName,
      before,
      after: describeInterfaces(fresh),
    });
    interfaces = fresh;
    const next = await reopenMdnsTransport(transport, open, {
      interfaces: describeInterfaces(fresh),
      logger,
    });
    transport = next.transport;
    if (next.reopened) await announceSeveralTimes();
  }
  const announcing = announceSeveralTimes().then(() =>
    watchAddresses({
      interfaces: options.interfaces,
      readAddresses: options.readAddresses,
      recheckMs: options.recheckMs ?? RECHECK_MS,
      clock,
      signal: stop.signal,
      changed: reopen,
    })
  );
  logger.info("server advertised", {
    instance: instanceName,
    host,
    port: options.port,
    interfaces: options.interfaces.map((i) => i.name).join(","),
  });
  let closing: Promise<void> | null = null;
  return {
    instanceName,
    host,
    close() {
      closing ??= (async () => {
        stop.abort();
        await announcing;
        await announce(0);
        await transport.close();
        logger.info("server advertisement withdrawn", {
          instance: instanceName,
        });
      })();
      return closing;
    },
  };
}

function withZone(address: string, link: MdnsLink): string {
  return address.toLowerCase().startsWith("fe80:") && !address.includes("%")
    ? `${address}%${link.interface.name}`
    : address;
}
