// The web server's request handler: routing, and the one place errors become responses.

import { HttpError } from "./http_error.ts";
import { API_ROUTES } from "./api_routes.ts";
import { PAGE_ROUTES } from "./page_routes.ts";
import {
  htmlResponse,
  jsonResponse,
  type Route,
  type RouteContext,
  type RouteKind,
} from "./route_context.ts";
import { renderErrorPage } from "./pages/layout.ts";
import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/types.ts";

/** What the web handler needs from the server. */
export interface WebAppOptions {
  store: Store;
  /** Where build logs live, as `<hash>.log.gz`. */
  logCacheDir: string;
  /** The store directory, to turn derivation basenames into paths. */
  storeDir: string;
  clock: Clock;
  logger: Logger;
  /** Seconds without contact before a worker shows as unresponsive. */
  workerTimeoutSeconds?: number;
}

/** The default of `workerTimeoutSeconds`. */
export const DEFAULT_WORKER_TIMEOUT_SECONDS = 120;

/** Every route, in matching order. */
const ROUTES: Route[] = [...API_ROUTES, ...PAGE_ROUTES];

/** Creates the handler answering the JSON API and the HTML pages. */
export function createWebApp(
  options: WebAppOptions,
): (request: Request) => Promise<Response> {
  const settings: Required<WebAppOptions> = {
    workerTimeoutSeconds: DEFAULT_WORKER_TIMEOUT_SECONDS,
    ...options,
  };
  const { logger, clock } = settings;

  return async function handleRequest(request: Request): Promise<Response> {
    const url = new URL(request.url);
    let kind: RouteKind = prefersHtml(request) ? "html" : "json";
    try {
      const segments = decodeSegments(url.pathname);
      const match = findRoute(segments);
      if (match === null) {
        throw new HttpError(404, `Resource not found: ${url.pathname}`);
      }
      kind = match.route.kind;
      if (request.method !== "GET") {
        throw new HttpError(405, `Cannot ${request.method} ${url.pathname}`);
      }
      const context: RouteContext = {
        request,
        url,
        params: match.params,
        options: settings,
        now: epochSeconds(clock),
      };
      const response = await match.route.handle(context);
      logger.debug("http request", {
        method: request.method,
        path: url.pathname,
        status: response.status,
      });
      return response;
    } catch (error) {
      return errorResponse(error, kind, request, url, logger);
    }
  };
}

function decodeSegments(pathname: string): string[] {
  try {
    return pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    throw new HttpError(400, `Cannot decode path: ${pathname.slice(0, 200)}`);
  }
}

function findRoute(
  segments: string[],
): { route: Route; params: Record<string, string> } | null {
  for (const route of ROUTES) {
    const params = matchPattern(route.pattern, segments);
    if (params !== null) return { route, params };
  }
  return null;
}

function matchPattern(
  pattern: string,
  segments: string[],
): Record<string, string> | null {
  const parts = pattern.split("/").slice(1);
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (part === "*") return params;
    const segment = segments[i];
    if (segment === undefined) return null;
    if (part.startsWith(":")) {
      if (segment === "") return null;
      params[part.slice(1)] = segment;
    } else if (part !== segment) {
      return null;
    }
  }
  return segments.length === parts.length ? params : null;
}

function errorResponse(
  error: unknown,
  kind: RouteKind,
  request: Request,
  url: URL,
  logger: Logger,
): Response {
  let status = 500;
  let message = "Internal server error";
  if (error instanceof HttpError) {
    status = error.status;
    message = error.message;
    logger.debug("http request", {
      method: request.method,
      path: url.pathname,
      status,
      error: message,
    });
  } else {
    logger.error("http handler failed", {
      method: request.method,
      path: url.pathname,
      error: error instanceof Error ? error.stack ?? error.message : error,
    });
  }
  const response = kind === "html"
    ? htmlResponse(renderErrorPage(status, message), status)
    : jsonResponse({ error: message }, status);
  if (status === 405) response.headers.set("allow", "GET");
  return response;
}

function prefersHtml(request: Request): boolean {
  return (request.headers.get("accept") ?? "").includes("text/html");
}
