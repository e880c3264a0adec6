// This machine's interfaces, for the command lines to choose mDNS links.
// The library never calls these by itself: the caller decides.

import type { Clock } from "../clock.ts";
import { DiscoveryError } from "./service.ts";
import type { MdnsInterface } from "./mdns_transport.ts";

/**
 * The named interfaces with their addresses, or, without names, every
 * interface except loopback that has an address.
 * @throws {DiscoveryError} when a named interface does not exist or none is left.
 */
export function systemInterfaces(
  names?: readonly string[],
  list: Deno.NetworkInterfaceInfo[] = Deno.networkInterfaces(),
): MdnsInterface[] {
  const byName = new Map<string, string[]>();
  for (const info of list) {
    const addresses = byName.get(info.name) ?? [];
    addresses.push(info.address);
    byName.set(info.name, addresses);
  }
  if (names !== undefined && names.length > 0) {
    return names.map((name) => {
      const addresses = byName.get(name);
      if (addresses === undefined) {
        throw new DiscoveryError(
          `Cannot use interface ${JSON.stringify(name)}: not found (have ${
            JSON.stringify([...byName.keys()].join(","))
          })`,
          "interfaces",
        );
      }
      return { name, addresses };
    });
  }
  const chosen = [...byName].filter(([, addresses]) =>
    !addresses.every(isLoopback)
  ).map(([name, addresses]) => ({ name, addresses }));
  if (chosen.length === 0) {
    throw new DiscoveryError(
      "Cannot find a network interface for mDNS: only loopback is up",
      "interfaces",
    );
  }
  return chosen;
}

/** Every address of this machine, loopback included. */
export function localAddresses(
  list: Deno.NetworkInterfaceInfo[] = Deno.networkInterfaces(),
): string[] {
  return list.map((info) => info.address);
}

function isLoopback(address: string): boolean {
  return address === "::1" || address.startsWith("127.");
}

/** The addresses an interface has now; [] when it is gone or has none. */
export function currentAddresses(name: string): string[] {
  return Deno.networkInterfaces().filter((info) => info.name === name)
    .map((info) => info.address);
}

/** `eth0=192.0.2.1,fe80::1;eth1=`: compared to spot a change, and logged. */
export function describeInterfaces(
  interfaces: readonly MdnsInterface[],
): string {
  return interfaces.map((i) => `${i.name}=${[...i.addresses].sort().join(",")}`)
    .join(";");
}

export interface AddressWatch {
  interfaces: readonly MdnsInterface[];
  /** An interface's current addresses; default {@linkcode currentAddresses}. */
  readAddresses?: (name: string) => string[];
  recheckMs: number;
  clock: Clock;
  signal: AbortSignal;
  /** Called with the interfaces' new addresses after each change. */
  changed: (fresh: MdnsInterface[], before: string) => Promise<void>;
}

/**
 * Looks at the interfaces' addresses every `recheckMs` until `signal`
 * aborts, and calls `changed` when they differ from the last seen. mDNS
 * sockets choose their outgoing interface by the address they had when
 * opened: once it is gone, every send fails until they are reopened.
 */
export async function watchAddresses(watch: AddressWatch): Promise<void> {
  const read = watch.readAddresses ?? currentAddresses;
  let known = describeInterfaces(watch.interfaces);
  while (!watch.signal.aborted) {
    await watch.clock.sleep(watch.recheckMs, watch.signal).catch(() => {});
    if (watch.signal.aborted) return;
    const fresh = watch.interfaces.map((i) => ({
      name: i.name,
      addresses: read(i.name),
    }));
    const now = describeInterfaces(fresh);
    if (now === known) continue;
    const before = known;
    known = now;
    await watch.changed(fresh, before);
  }
}
