// Headers every response of a farm's web server carries, for the public Internet.

import { createHash } from "node:crypto";
import { LIVE_LOG_SCRIPT, REFRESH_SCRIPT } from "./pages/scripts.ts";

/**
 * The pages' policy: their own two scripts (by hash) and nothing else,
 * styles inline (the stylesheet and the progress bars' widths), everything
 * else from this origin only, and no framing by other sites, which would
 * let them lay a decoy over the admin buttons.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  `script-src ${[LIVE_LOG_SCRIPT, REFRESH_SCRIPT].map(scriptHash).join(" ")}`,
  "style-src 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const HEADERS: [string, string][] = [
  // Log text, job names in JSON errors and the like are never read as HTML.
  ["x-content-type-options", "nosniff"],
  ["content-security-policy", CONTENT_SECURITY_POLICY],
  // frame-ancestors for browsers older than CSP level 2.
  ["x-frame-options", "DENY"],
];

/** Adds the security headers a route did not set itself; returns `response`. */
export function addSecurityHeaders(response: Response): Response {
  for (const [name, value] of HEADERS) {
    if (!response.headers.has(name)) response.headers.set(name, value);
  }
  return response;
}

function scriptHash(script: string): string {
  return `'sha256-${
    createHash("sha256").update(script, "utf8").digest("base64")
  }'`;
}
