// The home page: one row per specification with its build counters.

import { html, pathSegment } from "../html.ts";
import { rateBar, renderPage } from "./layout.ts";
import type { StatusSummary } from "./builds_table.ts";
import type { Evaluation, Specification } from "../../store/types.ts";

/** One specification on the dashboard. */
export interface DashboardRow {
  spec: Specification;
  counts: StatusSummary;
  latestEvaluation: Evaluation | null;
}

/** Renders the dashboard page. */
export function renderDashboard(
  rows: DashboardRow[],
  admin = false,
): string {
  const body = rows.length === 0
    ? html`<div class="empty">No specifications yet.</div>`
    : html`
      <table>
        <thead>
          <tr>
            <th>Jobset</th>
            <th>Latest evaluation</th>
            <th class="num">Succeeded</th>
            <th class="num">Failed</th>
            <th class="num">Pending</th>
            <th>Success rate</th>
            <th>Badge</th>
          </tr>
        </thead>
        <tbody>${rows.map(renderRow)}</tbody>
      </table>
    `;
  return renderPage(
    "Dashboard",
    html`
      <div class="title-row"><h1>Specifications</h1>${admin
        ? html`<a class="button" href="/specification/add">Add a specification</a>`
        : ""}</div>${body}<p
        class="muted small">JSON: <a href="/specifications">/specifications</a> ·
            <a href="/api/latestbuilds?nr=20">/api/latestbuilds</a> ·
            <a href="/api/queue?nr=20">/api/queue</a> · <a href="/events/rss">RSS</a> ·
            <a href="/metrics">metrics</a></p>
    `,
    "dashboard",
  );
}

function renderRow(row: DashboardRow) {
  const { spec, counts, latestEvaluation } = row;
  const finished = counts.succeeded + counts.failed;
  const rate = finished === 0
    ? "—"
    : `${Math.round(counts.succeeded / finished * 100)} %`;
  return html`
    <tr>
      <td><a href="/jobset/${pathSegment(spec.name)}">${spec
        .name}</a>${spec.isActive ? "" : html`
        <span class="muted">(inactive)</span>
      `}</td>
      <td>${latestEvaluation
        ? html`
          <a href="/eval/${latestEvaluation.id}">${latestEvaluation
            .id}</a> · <a
            href="/eval/${latestEvaluation
              .id}/dashboard" title="Its jobs as a grid">jobs grid</a>
        `
        : html`<span class="muted">none</span>`}</td>
      <td class="num">${counts.succeeded}</td>
      <td class="num">${counts.failed}</td>
      <td class="num">${counts.pending}</td>
      <td>
        <div
          class="rate">${rateBar(
            counts.succeeded,
            counts.failed,
            counts.pending,
          )} <span class="rate-text">${rate}</span></div>
      </td>
      <td><img src="/jobset/${pathSegment(
        spec.name,
      )}/badge.svg" alt="" height="20" loading="lazy"></td>
    </tr>
  `;
}
