// Build search with Cuirass's syntax: `spec:NAME system:SYS status:KEYWORD name-prefix`.

import { HttpError, quoteValue } from "./http_error.ts";
import type { Build, BuildStatus, Store } from "../store/types.ts";

/** A parsed search query. */
export interface SearchQuery {
  specification?: string;
  system?: string;
  status?: BuildStatus;
  /** Prefix of the build's name (nix name), wildcards removed; "" matches all. */
  namePrefix: string;
}

/** Search status keywords and their build statuses (cuirass.md §4.1). */
export const SEARCH_STATUSES: Record<string, BuildStatus> = {
  success: 0,
  failed: 1,
  "failed-dependency": 2,
  "failed-other": 3,
  canceled: 4,
  pending: -2,
};

/** Longest query accepted, in characters. */
export const MAX_QUERY_LENGTH = 200;

/**
 * Parses a query: `key:value` tokens for spec, system and status (other keys
 * are ignored), the rest a name prefix. SQL and glob wildcards are dropped.
 * @throws {HttpError} 400 for an empty or too long query or an unknown status.
 */
export function parseSearchQuery(text: string | null): SearchQuery {
  if (text === null || text.trim() === "") {
    throw new HttpError(400, `Cannot search: parameter "query" is missing`);
  }
  if (text.length > MAX_QUERY_LENGTH) {
    throw new HttpError(
      400,
      `Cannot search: the query is longer than ${MAX_QUERY_LENGTH} characters`,
    );
  }
  const query: SearchQuery = { namePrefix: "" };
  const words: string[] = [];
  for (const token of text.trim().split(/\s+/)) {
    const colon = token.indexOf(":");
    if (colon <= 0) {
      words.push(token);
      continue;
    }
    const key = token.slice(0, colon);
    const value = token.slice(colon + 1);
    if (key === "spec") query.specification = value;
    else if (key === "system") query.system = value;
    else if (key === "status") {
      // Own keys only: "constructor" or "__proto__" are no status.
      if (!Object.hasOwn(SEARCH_STATUSES, value)) {
        throw new HttpError(
          400,
          `Cannot search: status ${quoteValue(value)} is not one of ${
            Object.keys(SEARCH_STATUSES).join(", ")
          }`,
        );
      }
      query.status = SEARCH_STATUSES[value];
    }
  }
  // Wildcards of SQL LIKE and globs carry no meaning here: a prefix match.
  query.namePrefix = (words[0] ?? "").replace(/[%*?_\\]/g, "");
  return query;
}

/**
 * The builds matching `query`, newest id first, at most `limit`, below
 * `beforeId` when given (paging): any build, however old.
 */
export function searchBuilds(
  store: Store,
  query: SearchQuery,
  options: { limit: number; beforeId?: number },
): Promise<Build[]> {
  return store.searchBuilds(
    { ...query, beforeId: options.beforeId },
    options.limit,
  );
}
