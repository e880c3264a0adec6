// The status page: builds running now, then the head of the queue.

import { html } from "../html.ts";
import { renderPage } from "./layout.ts";
import { buildsTable } from "./builds_table.ts";
import type { Build } from "../../store/types.ts";

/** What the status page shows. */
export interface StatusPage {
  running: Build[];
  /** Scheduled and submitted builds, in dispatch order. */
  waiting: Build[];
  now: number;
}

/** Renders the running builds and the waiting queue. */
export function renderStatus(page: StatusPage): string {
  return renderPage(
    "Queue",
    html`<h1>Running builds (${page.running.length})</h1>
${buildsTable(page.running, page.now)}
<h2>Next in the queue</h2>
${buildsTable(page.waiting, page.now)}`,
    "queue",
  );
}
