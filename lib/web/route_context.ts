// What a route handler receives, and the response helpers they share.

import type { WebSettings } from "./app.ts";

/** Everything a route handler needs for one request. */
export interface RouteContext {
  request: Request;
  url: URL;
  /** Decoded path parameters, e.g. `id` of `/build/:id`. */
  params: Record<string, string>;
  options: WebSettings;
  /** Server time of the request, epoch seconds. */
  now: number;
}

/**
 * How a route answers, which also decides how its errors look: JSON
 * `{"error": …}`, an HTML page, or plain text (only for paths no route
 * takes).
 */
export type RouteKind = "json" | "html" | "text";

/** One entry of the routing table. */
export interface Route {
  /** Segments such as `/build/:id/log/raw`; a trailing `*` takes any rest. */
  pattern: string;
  kind: RouteKind;
  /** Default GET (which also answers HEAD). */
  method?: "GET" | "POST";
  handle(context: RouteContext): Promise<Response>;
}

/** A JSON response; the value must already be a plain JSON shape. */
export function jsonResponse(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** A plain text response. */
export function textResponse(text: string, status = 200): Response {
  return new Response(text, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** An HTML page response. */
export function htmlResponse(text: string, status = 200): Response {
  return new Response(text, {
    status,
    headers: { "content-type": "text/html; charset=utf-8" },
  });
}

/**
 * True for a form a browser submitted (it asks for HTML back): such a
 * request is answered with a redirect or an HTML error page, not JSON.
 */
export function isBrowserForm(request: Request): boolean {
  const type = request.headers.get("content-type") ?? "";
  return type.startsWith("application/x-www-form-urlencoded") &&
    (request.headers.get("accept") ?? "").includes("text/html");
}
