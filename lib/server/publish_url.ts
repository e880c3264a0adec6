// Where the server agrees to fetch a worker's outputs from: only its own
// publish server, never an address a message names (a worker could
// otherwise make the server fetch from any host, metadata addresses
// included).
//
// Two addresses qualify: the one the result came from, and the one
// recorded for the worker. The second is for a Cuirass worker, which builds
// its publish URL once from its first `server-info` and keeps it after
// reconnecting from another address. It is safe only because the
// dispatcher records an address a worker declares only when the worker
// declared it from that address (docs/deployment.md, "Where results are
// fetched from").

import { sameAddress } from "./worker_links.ts";

/**
 * `url` when it is http(s) on the sender's address (`peerAddress`) or on
 * the worker's recorded address (looked up only when needed, and always
 * one the server saw the worker connect from), else null.
 */
export async function allowedPublishUrl(
  url: string,
  peerAddress: string,
  recordedAddress: () => Promise<string | undefined>,
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
  const recorded = await recordedAddress();
  return recorded !== undefined && sameAddress(recorded, host) ? url : null;
}
