// Browses for remote servers with DNS-SD over mDNS and resolves each one
// (SRV, TXT, A, AAAA), reporting servers as they appear, change and go.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import {
  type DnsPacket,
  type DnsQuestion,
  type DnsRecord,
  type MdnsInterface,
  type MdnsLink,
  type MdnsTransport,
  type MdnsTransportOptions,
  openMdnsTransport,
  type PacketSource,
  reopenMdnsTransport,
} from "./mdns_transport.ts";
import {
  instanceFullName,
  instanceLabel,
  parseTxt,
  type ServerAnnouncement,
  SERVICE_TYPE,
  txtPort,
} from "./service.ts";
import { describeInterfaces, watchAddresses } from "./network_interfaces.ts";

export interface BrowseOptions {
  /** Interfaces to browse on (see {@linkcode MdnsInterface}). */
  interfaces: readonly MdnsInterface[];
  /** Also browse over IPv6; default true. */
  ipv6?: boolean;
  logger: Logger;
  clock?: Clock;
  /** Longest pause between two PTR queries; default 30 s. */
  maxQueryIntervalMs?: number;
  /** Pause between two looks at the interfaces' addresses; default 5 s. */
  recheckMs?: number;
  /** An interface's current addresses, or [] when it is gone; default: the system's. */
  readAddresses?: (name: string) => string[];
  /** Replaces the mDNS sockets (tests). */
  openTransport?: (options: MdnsTransportOptions) => Promise<MdnsTransport>;
}

/** A server resolved or changed (`found`), or withdrawn or expired (`lost`). */
export type BrowseEvent =
  | { type: "found"; server: ServerAnnouncement }
  | { type: "lost"; instanceName: string };

interface Entry {
  record: DnsRecord;
  /**
   * Monotonic readings (ms), as every time here: a wall-clock step back
   * held off re-queries and expiry by the size of the step.
   */
  receivedAt: number;
  expiresAt: number;
  /** Interfaces whose sockets heard it (zones for link-local addresses). */
  interfaces: Set<string>;
}

/** Records kept at most; the oldest go first beyond it. */
const MAX_ENTRIES = 2000;
const TICK_MS = 1000;
/** Pause before asking again for a missing SRV, TXT or address. */
const RESOLVE_RETRY_MS = 3000;
const RECHECK_MS = 5000;

/**
 * Yields servers of type `_remote-server._tcp` until `signal` aborts.
 * @throws {DiscoveryError} when no mDNS socket can be opened.
 */
export async function* browseServers(
  options: BrowseOptions,
  signal: AbortSignal,
): AsyncGenerator<BrowseEvent, void> {
  const { logger } = options;
  const clock = options.clock ?? systemClock;
  const ipv6 = options.ipv6 ?? true;
  const maxInterval = options.maxQueryIntervalMs ?? 30_000;
  const cache = new Map<string, Entry>();
  /**
   * Record keys by name and type (`groupKey`). Looking records up by
   * scanning the cache made each packet cost instances x cache: a flood of
   * instances kept a core busy and starved the worker's sessions.
   */
  const groups = new Map<string, Set<string>>();
  const put = (key: string, entry: Entry) => {
    cache.delete(key);
    cache.set(key, entry);
    const group = groupKey(entry.record);
    const keys = groups.get(group) ?? new Set<string>();
    keys.add(key);
    groups.set(group, keys);
  };
  const remove = (key: string) => {
    const entry = cache.get(key);
    if (entry === undefined) return;
    cache.delete(key);
    const group = groupKey(entry.record);
    groups.get(group)?.delete(key);
    if (groups.get(group)?.size === 0) groups.delete(group);
  };
  const emitted = new Map<string, string>();
  const asked = new Map<string, number>();
  const queue: BrowseEvent[] = [];
  let wake: (() => void) | null = null;

  function ingest(packet: DnsPacket, source: PacketSource) {
    if (packet.type !== "response") return;
    const now = clock.monotonic();
    const records = [
      ...(packet.answers ?? []),
      ...(packet.additionals ?? []),
    ].slice(0, 256);
    const hosts = serverHosts(records);
    // Address records of other hosts would fill the cache and push the
    // servers' own records out: a busy link (or a flood) made a server
    // look withdrawn every few seconds.
    const wanted = (record: DnsRecord) =>
      relevant(record) &&
      (record.type !== "A" && record.type !== "AAAA" ||
        hosts.has(record.name.toLowerCase()));
    const flushed = new Set<string>();
    const keys = new Set<string>();
    for (const record of records) {
      if (!wanted(record)) continue;
      const key = recordKey(record);
      keys.add(key);
      if (record.flush) flushed.add(groupKey(record));
    }
    // Cache-flush (RFC 6762 §10.2): older records of a flushed name and
    // type are replaced by this packet's.
    for (const group of flushed) {
      for (const key of [...groups.get(group) ?? []]) {
        const entry = cache.get(key)!;
        if (!keys.has(key) && now - entry.receivedAt > 1000) remove(key);
      }
    }
    for (const record of records) {
      if (!wanted(record)) continue;
      const key = recordKey(record);
      const ttl = Math.max(0, Math.min(record.ttl ?? 0, 86_400));
      if (ttl === 0) {
        remove(key);
        continue;
      }
      const entry = cache.get(key);
      const interfaces = entry?.interfaces ?? new Set<string>();
      interfaces.add(source.interface);
      put(key, {
        record,
        receivedAt: now,
        expiresAt: now + ttl * 1000,
        interfaces,
      });
    }
    while (cache.size > MAX_ENTRIES) {
      remove(cache.keys().next().value!);
    }
    refresh();
  }

  /** SRV targets of the servers known or in `records`, lower-cased. */
  function serverHosts(records: readonly DnsRecord[]): Set<string> {
    const srvs = [
      ...records.filter((r) => r.type === "SRV" && relevant(r)),
      ...[...cache.values()].map((e) => e.record).filter((r) =>
        r.type === "SRV"
      ),
    ];
    return new Set(
      srvs.map((r) => String(r.data?.target ?? "").toLowerCase()),
    );
  }

  function expire(now: number) {
    for (const [key, entry] of cache) {
      if (entry.expiresAt <= now) remove(key);
    }
  }

  function find(name: string, type: string): Entry[] {
    const keys = groups.get(`${name.toLowerCase()}|${type}`) ?? [];
    return [...keys].map((key) => cache.get(key)!)
      .sort((a, b) => b.receivedAt - a.receivedAt);
  }

  function instances(): string[] {
    const labels = new Map<string, string>();
    for (const entry of find(SERVICE_TYPE, "PTR")) {
      const label = instanceLabel(String(entry.record.data));
      if (label !== null && !labels.has(label.toLowerCase())) {
        labels.set(label.toLowerCase(), label);
      }
    }
    return [...labels.values()];
  }

  function resolve(label: string): ServerAnnouncement | null {
    const fullName = instanceFullName(label);
    const srv = find(fullName, "SRV")[0];
    const txt = find(fullName, "TXT")[0];
    if (!srv || !txt) return null;
    const target = String(srv.record.data?.target ?? "");
    const port = Number(srv.record.data?.port);
    if (target === "" || !Number.isInteger(port) || port < 1 || port > 65535) {
      return null;
    }
    const v4 = find(target, "A").map((e) => String(e.record.data));
    // Kept in the order the responder gave them; the locator tries them so.
    const v6: string[] = [];
    const linkLocal: string[] = [];
    if (ipv6) {
      for (const entry of find(target, "AAAA")) {
        const address = String(entry.record.data).toLowerCase();
        if (address.startsWith("fe80:")) {
          for (const zone of [...entry.interfaces].sort()) {
            linkLocal.push(`${address}%${zone}`);
          }
        } else {
          v6.push(address);
        }
      }
    }
    const addresses = [...new Set([...v4, ...v6, ...linkLocal])];
    if (addresses.length === 0) return null;
    const map = parseTxt(
      Array.isArray(txt.record.data) ? txt.record.data : [txt.record.data],
    );
    return {
      instanceName: label,
      host: target,
      port,
      addresses,
      logPort: txtPort(map, "log-port"),
      publishPort: txtPort(map, "publish-port"),
      txt: map,
    };
  }

  function refresh() {
    const seen = new Set<string>();
    for (const label of instances()) {
      const server = resolve(label);
      if (server === null) continue;
      const id = label.toLowerCase();
      seen.add(id);
      // Compared without order, so a reshuffled answer is no change.
      const state = JSON.stringify({
        ...server,
        addresses: [...server.addresses].sort(),
      });
      if (emitted.get(id) !== state) {
        emitted.set(id, state);
        push({ type: "found", server });
      }
    }
    for (const id of [...emitted.keys()]) {
      if (seen.has(id)) continue;
      const instanceName = JSON.parse(emitted.get(id)!).instanceName;
      emitted.delete(id);
      push({ type: "lost", instanceName });
    }
  }

  function push(event: BrowseEvent) {
    queue.push(event);
    wake?.();
  }

  const open = (interfaces: readonly MdnsInterface[]) =>
    (options.openTransport ?? openMdnsTransport)({
      interfaces,
      ipv6,
      logger,
      onPacket: (packet: DnsPacket, source: PacketSource, _link: MdnsLink) => {
        try {
          ingest(packet, source);
        } catch (error) {
          logger.debug("mdns packet ignored", { error });
        }
      },
    });
  let transport: MdnsTransport = await open(options.interfaces);
  /** Set after the sockets were reopened: ask everything again at once. */
  let askAgain = false;

  /** Reopens the sockets on the new addresses (their queries failed). */
  async function reopen(fresh: MdnsInterface[], before: string) {
    logger.info("mdns browsing addresses changed", {
      before,
      after: describeInterfaces(fresh),
    });
    const next = await reopenMdnsTransport(transport, () => open(fresh), {
      interfaces: describeInterfaces(fresh),
      logger,
    });
    transport = next.transport;
    if (!next.reopened) return;
    asked.clear();
    askAgain = true;
  }

  function query(questions: DnsQuestion[]) {
    const packet: DnsPacket = { type: "query", questions };
    for (const link of transport.links) {
      link.send(packet).catch((error) =>
        logger.debug("mdns query failed", {
          interface: link.interface.name,
          error,
        })
      );
    }
  }

  /** Questions for what is missing or about to expire. */
  function followUps(now: number): DnsQuestion[] {
    const questions: DnsQuestion[] = [];
    const due = (key: string) => {
      if (now - (asked.get(key) ?? -Infinity) < RESOLVE_RETRY_MS) return false;
      asked.set(key, now);
      return true;
    };
    for (const label of instances()) {
      const fullName = instanceFullName(label);
      const srv = find(fullName, "SRV")[0];
      const txt = find(fullName, "TXT")[0];
      if ((!srv || !txt || aging(srv, now)) && due(`${fullName}|SRV`)) {
        questions.push({ name: fullName, type: "SRV" });
        questions.push({ name: fullName, type: "TXT" });
      }
      const target = srv ? String(srv.record.data?.target ?? "") : "";
      if (target === "") continue;
      const addresses = [
        ...find(target, "A"),
        ...(ipv6 ? find(target, "AAAA") : []),
      ];
      if (
        (addresses.length === 0 || addresses.some((e) => aging(e, now))) &&
        due(`${target}|A`)
      ) {
        questions.push({ name: target, type: "A" });
        if (ipv6) questions.push({ name: target, type: "AAAA" });
      }
    }
    return questions;
  }

  const stop = new AbortController();
  const onAbort = () => {
    stop.abort();
    wake?.();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  const ticking = (async () => {
    let interval = TICK_MS;
    let nextPtr = clock.monotonic();
    while (!stop.signal.aborted) {
      const now = clock.monotonic();
      expire(now);
      refresh();
      const ptrAging = find(SERVICE_TYPE, "PTR").some((e) => aging(e, now));
      const questions = followUps(now);
      if (askAgain) {
        askAgain = false;
        interval = TICK_MS;
        nextPtr = now;
      }
      if (now >= nextPtr || ptrAging) {
        questions.unshift({ name: SERVICE_TYPE, type: "PTR" });
        nextPtr = now + interval;
        interval = Math.min(interval * 2, maxInterval);
      }
      if (questions.length > 0) query(questions);
      await clock.sleep(TICK_MS, stop.signal).catch(() => {});
    }
  })();
  const watching = watchAddresses({
    interfaces: options.interfaces,
    readAddresses: options.readAddresses,
    recheckMs: options.recheckMs ?? RECHECK_MS,
    clock,
    signal: stop.signal,
    changed: reopen,
  });
  logger.debug("mdns browsing", {
    service: SERVICE_TYPE,
    interfaces: options.interfaces.map((i) => i.name).join(","),
  });
  try {
    while (!signal.aborted) {
      const event = queue.shift();
      if (event !== undefined) {
        yield event;
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = null;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    stop.abort();
    await ticking;
    await watching;
    await transport.close();
  }
}

/** Past 80% of its lifetime: time to ask again (RFC 6762 §5.2). */
function aging(entry: Entry, now: number): boolean {
  const life = entry.expiresAt - entry.receivedAt;
  return now - entry.receivedAt > life * 0.8;
}

function relevant(record: DnsRecord): boolean {
  switch (record.type) {
    case "PTR":
      return record.name.toLowerCase() === SERVICE_TYPE.toLowerCase();
    case "SRV":
    case "TXT":
      return instanceLabel(record.name) !== null;
    case "A":
    case "AAAA":
      return typeof record.data === "string";
    default:
      return false;
  }
}

function groupKey(record: DnsRecord): string {
  return `${record.name.toLowerCase()}|${record.type}`;
}

function recordKey(record: DnsRecord): string {
  const data = record.type === "TXT"
    ? (Array.isArray(record.data) ? record.data : [record.data]).map((d) =>
      typeof d === "string" ? d : new TextDecoder().decode(d)
    )
    : record.type === "A" || record.type === "AAAA"
    ? String(record.data).toLowerCase()
    : record.type === "PTR"
    ? String(record.data).toLowerCase()
    : record.data;
  return `${groupKey(record)}|${JSON.stringify(data)}`;
}
