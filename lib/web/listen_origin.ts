// The origin of the address the web server listens on: the base of the
// absolute links it writes (the feed's) when no public URL is configured.

import { isIP } from "node:net";

/**
 * `http://HOST:PORT` for a web server listening on `address` and `port`:
 * the address itself, in brackets when IPv6, or `machineName` for a
 * wildcard address (0.0.0.0, ::), which no reader can open.
 */
export function listenOrigin(
  address: string,
  port: number,
  machineName: string,
): string {
  const host = isWildcard(address)
    ? machineName
    : isIP(address) === 6
    ? `[${address}]`
    : address;
  return `http://${host}:${port}`;
}

/** Whether `address` means every address of the machine. */
function isWildcard(address: string): boolean {
  if (address === "0.0.0.0") return true;
  // Any spelling of the IPv6 unspecified address: ::, ::0, 0:0:0:0:0:0:0:0.
  return isIP(address) === 6 &&
    address.split(":").every((group) => /^0*$/.test(group));
}
