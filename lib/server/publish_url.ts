// Where the server agrees to fetch a worker's outputs from: only its own
// publish server, never an address a message names (a worker could
// otherwise make the server fetch from any host, metadata addresses
// included).

import { sameAddress } from "./worker_links.ts";

/**
 * `url` when it is http(s) on the sender's address (`peerAddress`) or on
 * the worker's registered address (looked up only when needed), else null.
 */
export async function allowedPublishUrl(
  url: string,
  peerAddress: string,
  registeredAddress: () => Promise<string | undefined>,
): Promise<string | null> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return null;
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, "");
  if (sameAddress(host, peerAddress)) return url;
  const registered = await registeredAddress();
  return registered !== undefined && sameAddress(registered, host) ? url : null;
}
