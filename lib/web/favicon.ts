// `/favicon.ico`: browsers ask for it on every page, raw logs included.

import type { Route } from "./route_context.ts";

/** A small "L" on the nav bar's colour; SVG, so no binary asset to keep. */
export const FAVICON_SVG =
  `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">` +
  `<rect width="16" height="16" rx="3" fill="#24292f"/>` +
  `<path d="M5 3v10h6" stroke="#fff" stroke-width="2" fill="none"/></svg>`;

/** How long browsers may keep the icon, in seconds. */
const ICON_MAX_AGE = 86400;

/**
 * The icon route. Without it each page load logs a failed request (a 404)
 * in the browser console, which hides real errors among the noise.
 */
export const FAVICON_ROUTES: Route[] = [
  { pattern: "/favicon.ico", kind: "json", handle: favicon },
];

function favicon(): Promise<Response> {
  return Promise.resolve(
    new Response(FAVICON_SVG, {
      headers: {
        "content-type": "image/svg+xml",
        "cache-control": `public, max-age=${ICON_MAX_AGE}`,
      },
    }),
  );
}
