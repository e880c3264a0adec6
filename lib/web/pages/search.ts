// The search results page.

import { html } from "../html.ts";
import { renderPage } from "./layout.ts";
import { buildsTable } from "./builds_table.ts";
import type { Build } from "../../store/types.ts";

/** What the search page shows. */
export interface SearchPage {
  query: string;
  builds: Build[];
  /** The id to page below, when there may be more results. */
  nextBeforeId: number | null;
  now: number;
}

/** Renders search results with a link to the next page. */
export function renderSearch(page: SearchPage): string {
  const next = page.nextBeforeId === null
    ? ""
    : html`<p><a href="/search?query=${
      encodeURIComponent(page.query)
    }&amp;border-high-id=${page.nextBeforeId}">Older results →</a></p>`;
  return renderPage(
    `Search: ${page.query}`,
    html`
      <h1>Builds matching <code>${page.query}</code></h1>
      <p class="muted">Syntax: a name prefix, plus <code>spec:NAME</code>,
        <code>system:SYSTEM</code> and <code>status:success|failed|failed-dependency|failed-other|canceled|pending</code>.</p>
      ${buildsTable(page.builds, page.now)}
      ${next}
    `,
    "search",
    { query: page.query },
  );
}
