// The web server's request handler: routing, and the one place errors become responses.

import { isDatabaseUnavailable } from "../store/unavailable.ts";
import { HttpError, quoteValue } from "./http_error.ts";
import { showNulText } from "../nul_text.ts";
import { refuseRepeatedParams } from "./params.ts";
import { API_ROUTES } from "./api_routes.ts";
import { PAGE_ROUTES } from "./page_routes.ts";
import { EXTRA_ROUTES } from "./extra_routes.ts";
import { DASHBOARD_ROUTES, randomDashboardId } from "./dashboard_routes.ts";
import { DOWNLOAD_ROUTES } from "./download_route.ts";
import { FAVICON_ROUTES } from "./favicon.ts";
import { ADMIN_ROUTES, type AdminActions, storeActions } from "./admin.ts";
import type { LiveLogs } from "./live_logs.ts";
import { LogTails } from "./log_tails.ts";
import type { FarmMetrics } from "./metrics.ts";
import {
  htmlResponse,
  isBrowserForm,
  jsonResponse,
  type Route,
  type RouteContext,
  type RouteKind,
  textResponse,
} from "./route_context.ts";
import { renderErrorPage } from "./pages/layout.ts";
import { addSecurityHeaders } from "./security_headers.ts";
import { isPlainHost } from "./request_host.ts";
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
  /**
   * This server's worker timeout: judges the workers whose rows record
   * none (each row records that of the server that heard the worker),
   * for whether they show as unresponsive.
   */
  workerTimeoutSeconds?: number;
  /**
   * The secret admin POST routes require (`Authorization: Bearer` or a
   * `token` form field). Absent or empty: admin routes answer 403.
   */
  adminToken?: string | null;
  /** Overrides of the admin actions; the rest default to {@link storeActions}. */
  actions?: Partial<AdminActions>;
  /**
   * Change signals for logs being received (the log receiver's onChunk and
   * onComplete through a LiveLogHub). Without it, live logs poll the file.
   */
  liveLogs?: LiveLogs | null;
  /** Metrics the server feeds, rendered by `/metrics` with store-derived ones. */
  metrics?: FarmMetrics | null;
  /** The file of an evaluation's log (`.gz` is served compressed), or null. */
  evaluationLog?: (id: number) => string | null;
  /**
   * Absolute URL of the web interface (`--base-url`), for the feed's links;
   * default `ownOrigin`.
   */
  publicUrl?: string | null;
  /**
   * The origin of the address the web server listens on (see
   * listen_origin.ts), for absolute links when `publicUrl` is not set; a
   * function, as the port is known once the server listens. Default
   * `http://localhost`, for an app that serves no socket.
   */
  ownOrigin?: () => string;
  /** How often a live log checks for news without a signal, in ms; default 1000. */
  livePollMs?: number;
  /** Live log streams served at once; default 200. */
  maxLiveStreams?: number;
  /** True while a worker reports it is too short of disk space for work. */
  workerDiskLow?: (name: string) => boolean;
  /** Makes the id of a new dashboard; default 16 random letters and digits. */
  dashboardId?: () => string;
}

/** The options with every default filled in, as route handlers see them. */
export interface WebSettings extends
  Required<
    Omit<WebAppOptions, "actions">
  > {
  actions: AdminActions;
  /** Live log streams open now (shared by every request of this app). */
  liveStreams: { open: number };
  /** The build pages' log tails, read a few at a time. */
  logTails: LogTails;
}

/** The default of `workerTimeoutSeconds`. */
export const DEFAULT_WORKER_TIMEOUT_SECONDS = 120;

/** Every route, in matching order. */
const ROUTES: Route[] = [
  ...ADMIN_ROUTES,
  ...DASHBOARD_ROUTES,
  ...EXTRA_ROUTES,
  ...DOWNLOAD_ROUTES,
  ...FAVICON_ROUTES,
  ...API_ROUTES,
  ...PAGE_ROUTES,
];

/**
 * Each route as `METHOD PATTERN` (`GET /build/:id`), in matching order:
 * what docs/web-api.md must describe, one entry each.
 */
export function routePatterns(): string[] {
  return ROUTES.map((route) => `${route.method ?? "GET"} ${route.pattern}`);
}

/** Creates the handler answering the JSON API and the HTML pages. */
export function createWebApp(
  options: WebAppOptions,
): (request: Request) => Promise<Response> {
  const { clock, logger } = options;
  const defaults = storeActions(options.store, () => epochSeconds(clock));
  const settings: WebSettings = {
    workerTimeoutSeconds: DEFAULT_WORKER_TIMEOUT_SECONDS,
    livePollMs: 1000,
    maxLiveStreams: 200,
    ...options,
    adminToken: options.adminToken ?? null,
    liveLogs: options.liveLogs ?? null,
    metrics: options.metrics ?? null,
    evaluationLog: options.evaluationLog ?? (() => null),
    publicUrl: options.publicUrl ?? null,
    ownOrigin: options.ownOrigin ?? (() => "http://localhost"),
    workerDiskLow: options.workerDiskLow ?? (() => false),
    dashboardId: options.dashboardId ?? randomDashboardId,
    actions: { ...defaults, ...options.actions },
    liveStreams: { open: 0 },
    logTails: new LogTails(),
  };

  return async function handleRequest(request: Request): Promise<Response> {
    const refused = refusedHost(request);
    const url = refused === null ? readUrl(request) : null;
    if (url === null) {
      // Deno builds the URL from the Host header, which the client chose:
      // a bad one is the client's mistake, not a failure of the handler.
      const host = refused ?? request.headers.get("host") ?? "";
      logger.debug("http request", {
        method: request.method,
        host,
        status: 400,
      });
      return addSecurityHeaders(textResponse(
        `Cannot read request URL: host ${
          quoteValue(host)
        } is not a plain HOST[:PORT]`,
        400,
      ));
    }
    // Until a route is known, its path decides how an error looks.
    let kind = unmatchedKind(url.pathname);
    try {
      const method = request.method === "HEAD" ? "GET" : request.method;
      const { segments, problem } = readSegments(url.pathname);
      const matches = findRoutes(segments);
      // The route's kind decides, whatever the client accepts: a page
      // answers a page, the API answers JSON, for a browser or for curl.
      if (matches.length > 0) kind = matches[0].route.kind;
      if (problem !== null) throw problem;
      refuseNul(url.searchParams);
      refuseRepeatedParams(url.searchParams);
      if (matches.length === 0) {
        throw new HttpError(404, `Resource not found: ${url.pathname}`);
      }
      const match = matches.find((m) => (m.route.method ?? "GET") === method);
      if (match === undefined) {
        const allowed = [
          ...new Set(matches.map((m) => m.route.method ?? "GET")),
        ];
        throw new MethodNotAllowed(
          `Cannot ${request.method.slice(0, 20)} ${url.pathname}: use ${
            allowed.join(" or ")
          }`,
          allowed,
        );
      }
      // A browser form (an admin button) shows its error as a page, where
      // raw JSON would leave the operator reading braces.
      kind = isBrowserForm(request) ? "html" : match.route.kind;
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
      return addSecurityHeaders(response);
    } catch (error) {
      return addSecurityHeaders(
        errorResponse(error, kind, request, url, logger),
      );
    }
  };
}

/**
 * The host a request names that is no plain `host[:port]` (see
 * {@link isPlainHost}): its Host header, or the host of its URL (a request
 * target such as `GET http://host/path` takes the place of the header);
 * null when both are plain. Nothing is built from the host a client names
 * (links use the configured or the listening origin), but a Host header
 * holding a path or a query would change the path and query of the URL.
 */
function refusedHost(request: Request): string | null {
  const header = request.headers.get("host");
  if (header !== null && header !== "" && !isPlainHost(header)) return header;
  const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(
    request.url,
  )?.[1] ?? "";
  return isPlainHost(authority) ? null : authority;
}

/** The request's URL, or null when its host makes it unparsable. */
function readUrl(request: Request): URL | null {
  try {
    return new URL(request.url);
  } catch {
    return null;
  }
}

/**
 * How the error of a path no route takes looks: JSON under `/api/`, where
 * clients parse the answer; elsewhere plain text, as Cuirass answers
 * (`Resource not found: <path>`), readable in a browser and in a terminal.
 */
function unmatchedKind(pathname: string): RouteKind {
  return pathname.startsWith("/api/") ? "json" : "text";
}

/**
 * The decoded path segments; a path that does not decode (or holds a NUL
 * character) comes back as its raw segments, still good for finding the
 * route whose kind its 400 takes, with the problem to throw.
 */
function readSegments(
  pathname: string,
): { segments: string[]; problem: HttpError | null } {
  const raw = pathname.split("/").slice(1);
  try {
    return { segments: decodeSegments(raw, pathname), problem: null };
  } catch (error) {
    return { segments: raw, problem: error as HttpError };
  }
}

function decodeSegments(raw: string[], pathname: string): string[] {
  let segments: string[];
  try {
    segments = raw.map(decodeURIComponent);
  } catch {
    throw new HttpError(400, `Cannot decode path: ${pathname.slice(0, 200)}`);
  }
  if (segments.some((segment) => segment.includes("\0"))) {
    throw new HttpError(
      400,
      `Cannot read path ${pathname.slice(0, 200)}: it holds a NUL character`,
    );
  }
  return segments;
}

/**
 * Refuses a query parameter holding a NUL character: no name Lorica
 * stores has one, and PostgreSQL refuses such text outright (a 500 where
 * SQLite merely found nothing).
 */
function refuseNul(params: URLSearchParams): void {
  for (const [name, value] of params) {
    if (!name.includes("\0") && !value.includes("\0")) continue;
    // Named, and shown with its NUL escaped, as the other readers do.
    const what = name.includes("\0")
      ? "its name holds a NUL character (U+0000)"
      : `value ${showNulText(value)} holds a NUL character (U+0000)`;
    throw new HttpError(
      400,
      `Cannot read parameter ${JSON.stringify(name.slice(0, 60))}: ${what}`,
    );
  }
}

/** A 405, carrying the methods the path does accept. */
class MethodNotAllowed extends HttpError {
  constructor(message: string, readonly allowed: string[]) {
    super(405, message);
    this.name = "MethodNotAllowed";
  }
}

function findRoutes(
  segments: string[],
): { route: Route; params: Record<string, string> }[] {
  const found = [];
  for (const route of ROUTES) {
    const params = matchPattern(route.pattern, segments);
    if (params !== null) found.push({ route, params });
  }
  return found;
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
  } else if (isDatabaseUnavailable(error)) {
    // Expected while the database restarts: the client may try again, and
    // the log says what failed without a stack.
    status = 503;
    message = "Database unavailable, try again later";
    logger.warn("http database unavailable", {
      method: request.method,
      path: url.pathname,
      error: error instanceof Error ? error.message : error,
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
    : kind === "text"
    ? textResponse(message, status)
    : jsonResponse({ error: message }, status);
  if (error instanceof MethodNotAllowed) {
    response.headers.set("allow", error.allowed.join(", "));
  }
  if (status === 401) response.headers.set("www-authenticate", "Bearer");
  if (status === 503) response.headers.set("retry-after", "5");
  return response;
}
