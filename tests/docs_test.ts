// docs/web-api.md against the routing table: every route described, and
// no route described that the server no longer has.

import assert from "node:assert/strict";
import { routePatterns } from "../lib/web/app.ts";

const ROOT = new URL("../", import.meta.url);
const REFERENCE = await Deno.readTextFile(new URL("docs/web-api.md", ROOT));

/** The routes the reference describes: its `### \`METHOD PATTERN\`` headings. */
function describedRoutes(text: string): string[] {
  return [...text.matchAll(/^### `((?:GET|POST) \/[^`]*)`$/gm)].map((m) =>
    m[1]
  );
}

/** Every `METHOD /path` the reference names in a code span. */
function namedRoutes(text: string): string[] {
  return [...text.matchAll(/`((?:GET|POST|HEAD|PUT|DELETE) \/[^`]*)`/g)].map((
    m,
  ) => m[1]);
}

/**
 * Every path the reference writes as a pattern in a code span, with a
 * `:name` segment or a `*` rest (`/build/:id/log/events`), method or not.
 */
function namedPatterns(text: string): string[] {
  return [...text.matchAll(/`(?:[A-Z]+ )?(\/[^`\s]*(?:\/:|\/\*)[^`\s]*)`/g)]
    .map((m) => m[1]);
}

Deno.test("docs/web-api.md describes every route of the web server", () => {
  const described = new Set(describedRoutes(REFERENCE));
  const missing = routePatterns().filter((route) => !described.has(route));
  assert.deepEqual(missing, [], `routes missing from docs/web-api.md`);
});

Deno.test("docs/web-api.md names no route the web server lacks", () => {
  const routes = new Set(routePatterns());
  const unknown = namedRoutes(REFERENCE).filter((route) => !routes.has(route));
  assert.deepEqual(unknown, [], `docs/web-api.md names routes that are gone`);
});

Deno.test("docs/web-api.md writes no pattern the web server lacks", () => {
  const patterns = new Set(
    routePatterns().map((route) => route.slice(route.indexOf(" ") + 1)),
  );
  const unknown = namedPatterns(REFERENCE).filter((path) =>
    !patterns.has(path)
  );
  assert.deepEqual(unknown, [], `docs/web-api.md names patterns that are gone`);
});

Deno.test("docs/web-api.md describes each route once", () => {
  const described = describedRoutes(REFERENCE);
  const twice = described.filter((route, i) => described.indexOf(route) !== i);
  assert.deepEqual(twice, []);
});
