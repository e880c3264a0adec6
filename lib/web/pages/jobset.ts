// A specification's page: its evaluations, newest first, with build counters.

import { html, pathSegment } from "../html.ts";
import {
  adminPanel,
  evaluationBadge,
  formatTime,
  rateBar,
  renderPage,
} from "./layout.ts";
import type { StatusSummary } from "./builds_table.ts";
import type { Evaluation, Specification } from "../../store/types.ts";

/** One evaluation on the jobset page. */
export interface JobsetRow {
  evaluation: Evaluation;
  counts: StatusSummary;
}

/** Renders the evaluations list of one specification. */
export function renderJobset(
  spec: Specification,
  rows: JobsetRow[],
  admin = false,
): string {
  const name = pathSegment(spec.name);
  const systems = spec.systems.join(", ");
  const channels = spec.channels.map((channel) =>
    html`<li><code>${channel.name}</code> ${channel.url} (${channel.branch})</li>`
  );
  const table = rows.length === 0
    ? html`<div class="empty">No evaluations yet.</div>`
    : html`
      <table>
        <thead>
          <tr>
            <th>Evaluation</th>
            <th>Status</th>
            <th>Started</th>
            <th>Finished</th>
            <th class="num">Succeeded</th>
            <th class="num">Failed</th>
            <th class="num">Pending</th>
            <th>Progress</th>
          </tr>
        </thead>
        <tbody>${rows.map(renderRow)}</tbody>
      </table>
    `;
  return renderPage(
    spec.name,
    html`
      <div class="title-row">
        <h1>Jobset ${spec.name}</h1>
        <img src="/jobset/${name}/badge.svg" alt="" height="20">
      </div>
      ${adminPanel(admin, [
        {
          href: `/admin/specification/${name}/evaluate`,
          label: "Evaluate now",
        },
        {
          href: `/admin/specification/${name}/delete`,
          label: "Delete",
          danger: true,
        },
      ])}
      ${admin
        ? html`<p><a href="/specification/edit/${name}">Edit this specification</a></p>`
        : ""}
      <dl class="facts">
        <dt>Build</dt>
        <dd>${spec.build.type}${spec.build.params.length
          ? ` (${spec.build.params.join(", ")})`
          : ""}</dd>
        <dt>Systems</dt>
        <dd>${systems}</dd>
        <dt>Priority</dt>
        <dd>${spec.priority}</dd>
        <dt>Period</dt>
        <dd>${spec.period === 0 ? "server default" : `${spec.period} s`}</dd>
        <dt>Active</dt>
        <dd>${spec.isActive ? "yes" : "no"}</dd>
        <dt>Channels</dt>
        <dd>
          <ul>${channels}</ul>
        </dd>
      </dl>
      <h2>Evaluations</h2>
      ${table}
    `,
    "dashboard",
  );
}

function renderRow(row: JobsetRow) {
  const { evaluation, counts } = row;
  return html`
    <tr>
      <td><a href="/eval/${evaluation.id}">${evaluation
        .id}</a> · <a href="/eval/${evaluation
        .id}/dashboard" class="small">grid</a></td>
      <td>${evaluationBadge(evaluation.status)}</td>
      <td>${formatTime(evaluation.timestamp)}</td>
      <td>${formatTime(evaluation.evaltime)}</td>
      <td class="num">${counts.succeeded}</td>
      <td class="num">${counts.failed}</td>
      <td class="num">${counts.pending}</td>
      <td>${rateBar(counts.succeeded, counts.failed, counts.pending)}</td>
    </tr>
  `;
}
