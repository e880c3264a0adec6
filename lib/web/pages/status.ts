// The queue page: builds running now, then each waiting build with why it waits.

import { html, pathSegment } from "../html.ts";
import { renderPage, statusBadge, timeAgo } from "./layout.ts";
import { buildsTable } from "./builds_table.ts";
import { describeReason, type QueueEntry } from "../queue_reasons.ts";
import type { Build } from "../../store/types.ts";

/** What the queue page shows. */
export interface StatusPage {
  running: Build[];
  /** Scheduled and submitted builds in dispatch order, with reasons. */
  waiting: QueueEntry[];
  /** Scheduled builds per system, over the whole queue. */
  queued: [string, number][];
  now: number;
}

/** Renders the running builds and the waiting queue. */
export function renderStatus(page: StatusPage): string {
  const totals = page.queued.length === 0
    ? html`<span class="muted">nothing waiting</span>`
    : page.queued.map(([system, n]) =>
      html`<span class="chip"><code>${system}</code> <b>${n}</b></span>`
    );
  return renderPage(
    "Queue",
    html`<h1>Running builds (${page.running.length})</h1>
${buildsTable(page.running, page.now)}
<h2>Next in the queue</h2>
<p class="chips">Waiting by system: ${totals}</p>
${waitingTable(page.waiting, page.now)}`,
    "queue",
  );
}

function waitingTable(entries: QueueEntry[], now: number) {
  if (entries.length === 0) {
    return html`<div class="empty">No build is waiting.</div>`;
  }
  const rows = entries.map(({ build, reason }) =>
    html`
      <tr>
        <td class="num">${build.priority}</td>
        <td><a href="/build/${build.id}/details">${build.id}</a></td>
        <td>${statusBadge(build.status)}</td>
        <td>${build
          .nixName}<div class="muted small"><a href="/jobset/${pathSegment(
            build.specification,
          )}">${build.specification}</a> · ${build.jobName}</div></td>
        <td><code>${build.system}</code></td>
        <td>${timeAgo(build.timestamp, now)}</td>
        <td class="reason r-${reason.kind}">${reason.kind === "dependency"
          ? html`Waiting for ${
            reason.dependencies.map((d, i) =>
              html`${
                i > 0 ? ", " : ""
              }<a href="/build/${d.id}/details">${d.nixName}</a> ${
                statusBadge(d.status)
              }`
            )
          }${reason.more > 0 ? ` and ${reason.more} more` : ""}`
          : describeReason(reason)}</td>
      </tr>
    `
  );
  return html`
    <table>
      <thead>
        <tr>
          <th class="num">Priority</th>
          <th>Build</th>
          <th>Status</th>
          <th>Name</th>
          <th>System</th>
          <th>Queued</th>
          <th>Why it is not running</th>
        </tr>
      </thead>
      <tbody>${rows}</tbody>
    </table>
  `;
}
