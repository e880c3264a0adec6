// This machine's interfaces, for the command lines to choose mDNS links.
// The library never calls these by itself: the caller decides.

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
