// The DNS-SD service of a remote server: names, TXT keys and what a browser
// learns about one server.

/** The service type Cuirass servers advertise and Cuirass workers browse. */
export const SERVICE_TYPE = "_remote-server._tcp.local";

/** The DNS-SD meta-query name listing every advertised service type. */
export const SERVICES_META = "_services._dns-sd._udp.local";

/** Longest instance label DNS allows (RFC 6763 §4.1.1). */
const MAX_LABEL_BYTES = 63;

/** A server as resolved from its advertisement (PTR, SRV, TXT, A, AAAA). */
export interface ServerAnnouncement {
  /** The instance label, e.g. "Cuirass remote server". */
  instanceName: string;
  /** SRV target, e.g. "build1.local". */
  host: string;
  /** The backend (ZeroMQ) port from SRV. */
  port: number;
  /** IPv4 first, then IPv6; link-local IPv6 carry their zone (`fe80::1%eth0`). */
  addresses: string[];
  /** TXT `log-port`, or null when absent or malformed. */
  logPort: number | null;
  /** TXT `publish-port`, or null when the server publishes nothing. */
  publishPort: number | null;
  /** Every TXT `key=value` pair, keys lower-cased. */
  txt: Record<string, string>;
}

/** A name, port or address that cannot be advertised or was resolved wrong. */
export class DiscoveryError extends Error {
  field: string;
  constructor(message: string, field: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DiscoveryError";
    this.field = field;
  }
}

/** The TXT strings of a server: `log-port=N` and, when publishing, `publish-port=N`. */
export function serverTxt(
  logPort: number,
  publishPort: number | null,
): string[] {
  return publishPort === null
    ? [`log-port=${logPort}`]
    : [`log-port=${logPort}`, `publish-port=${publishPort}`];
}

/** Reads TXT strings into a key/value map; keys are case-insensitive (RFC 6763 §6.4). */
export function parseTxt(
  strings: readonly (string | Uint8Array)[],
): Record<string, string> {
  const decoder = new TextDecoder();
  const map: Record<string, string> = {};
  for (const entry of strings.slice(0, 64)) {
    const text = typeof entry === "string" ? entry : decoder.decode(entry);
    const equals = text.indexOf("=");
    const key = (equals < 0 ? text : text.slice(0, equals)).toLowerCase();
    // The first occurrence of a key wins (RFC 6763 §6.4).
    if (key === "" || key in map) continue;
    map[key] = equals < 0 ? "" : text.slice(equals + 1);
  }
  return map;
}

/** A TXT value as a port number, or null. */
export function txtPort(
  txt: Record<string, string>,
  key: string,
): number | null {
  const value = txt[key];
  if (value === undefined || !/^\d{1,5}$/.test(value)) return null;
  const port = Number(value);
  return port > 0 && port <= 65535 ? port : null;
}

/** The full instance name, `<label>._remote-server._tcp.local`. */
export function instanceFullName(instanceName: string): string {
  return `${instanceName}.${SERVICE_TYPE}`;
}

/** The instance label of a full instance name, or null for another service. */
export function instanceLabel(fullName: string): string | null {
  const suffix = `.${SERVICE_TYPE}`;
  if (!fullName.toLowerCase().endsWith(suffix.toLowerCase())) return null;
  const label = fullName.slice(0, fullName.length - suffix.length);
  return label === "" ? null : label;
}

/**
 * Checks an instance label and host label before they go on the wire.
 * @throws {DiscoveryError} when empty, too long or (host) not a DNS label.
 */
export function checkNames(instanceName: string, hostName: string): void {
  const bytes = new TextEncoder().encode(instanceName).length;
  if (bytes === 0 || bytes > MAX_LABEL_BYTES) {
    throw new DiscoveryError(
      `Cannot advertise instance name ${
        JSON.stringify(instanceName.slice(0, 80))
      }: must be 1 to 63 bytes`,
      "instanceName",
    );
  }
  if (!/^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(hostName)) {
    throw new DiscoveryError(
      `Cannot advertise host name ${
        JSON.stringify(hostName.slice(0, 80))
      }: not a DNS label (letters, digits, inner hyphens)`,
      "hostName",
    );
  }
}

/** A DNS host label made from a system host name (`Build_1.lan` -> `Build-1`). */
export function hostLabel(hostname: string): string {
  const label = hostname.split(".")[0].replace(/[^A-Za-z0-9-]/g, "-")
    .replace(/^-+|-+$/g, "").slice(0, 63).replace(/-+$/, "");
  return label === "" ? "lorica" : label;
}

/**
 * Why an advertised address can never lead to a remote server a worker
 * can work for, or null when it may. Anyone on the link can answer a
 * DNS-SD query: an address
 * that means "this machine" (0.0.0.0, loopback) would make the worker
 * talk to its own services, and a group or broadcast address to no one.
 */
export function unusableAddressReason(address: string): string | null {
  const bare = address.replace(/%.*$/, "").toLowerCase();
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.\d+\.\d+$/.exec(bare);
  if (v4 !== null) {
    const first = Number(v4[1]);
    if (first === 0) return "unspecified address (this machine)";
    if (first === 127) return "loopback address (this machine)";
    if (first >= 224 && first <= 239) return "multicast address";
    if (bare.endsWith("255.255.255.255")) return "broadcast address";
    return null;
  }
  if (/^[0:]*$/.test(bare)) return "unspecified address (this machine)";
  if (/^[0:]*:1$/.test(bare)) return "loopback address (this machine)";
  if (bare.startsWith("ff")) return "multicast address";
  if (/^fe[89ab]/.test(bare)) {
    // Guix reads substitute URLs with Guile's string->uri, which takes no
    // zone, and the server would fetch our outputs from a zoneless
    // address: every build would fail (as in Cuirass, which browses IPv4
    // only).
    return "link-local IPv6 address (substitute URLs cannot name its interface)";
  }
  return null;
}
