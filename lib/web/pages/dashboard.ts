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
export function renderDashboard(rows: DashboardRow[]): string {
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
          </tr>
        </thead>
        <tbody>${rows.map(renderRow)}</tbody>
      </table>
    `;
  return renderPage(
    "Dashboard",
    html`<h1>Specifications</h1>${body}`,
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
        ? html`<a href="/eval/${latestEvaluation.id}">${latestEvaluation.id}</a>`
        : html`<span class="muted">none</span>`}</td>
      <td class="num">${counts.succeeded}</td>
      <td class="num">${counts.failed}</td>
      <td class="num">${counts.pending}</td>
      <td>${rateBar(
        counts.succeeded,
        counts.failed,
        counts.pending,
      )} <span class="muted">${rate}</span></td>
    </tr>
  `;
}
