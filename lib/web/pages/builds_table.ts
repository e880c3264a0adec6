// The builds table shared by the evaluation, status and build pages.

import { html, pathSegment, type SafeHtml } from "../html.ts";
import { buildDuration, statusBadge, timeAgo } from "./layout.ts";
import type { Build, BuildStatus } from "../../store/types.ts";

/** Build counts grouped the way the pages show them. */
export interface StatusSummary {
  succeeded: number;
  /** failed, failed-dependency and failed-other. */
  failed: number;
  canceled: number;
  /** submitted, scheduled and started. */
  pending: number;
}

/** Groups `countBuildsByStatus` results into the page's four counters. */
export function summarizeCounts(
  counts: Map<BuildStatus, number>,
): StatusSummary {
  const summary = { succeeded: 0, failed: 0, canceled: 0, pending: 0 };
  for (const [status, count] of counts) {
    if (status === 0) summary.succeeded += count;
    else if (status === 4) summary.canceled += count;
    else if (status > 0) summary.failed += count;
    else summary.pending += count;
  }
  return summary;
}

/** A table of builds with status badges and links to their pages. */
export function buildsTable(builds: Build[], now: number): SafeHtml {
  if (builds.length === 0) {
    return html`<div class="empty">No builds.</div>`;
  }
  const rows = builds.map((build) =>
    html`
      <tr>
        <td><a href="/build/${build.id}/details">${build.id}</a></td>
        <td>${statusBadge(build.status)}</td>
        <td>${build
          .nixName}<div class="muted small"><a href="/jobset/${pathSegment(
            build.specification,
          )}">${build.specification}</a> · ${build.jobName}</div></td>
        <td><code>${build.system}</code></td>
        <td class="num">${build.priority}</td>
        <td>${timeAgo(
          build.status >= 0 ? build.stoptime : build.timestamp,
          now,
        )}</td>
        <td class="num nowrap">${buildDuration(build, now)}</td>
        <td class="nowrap">${build.worker ?? ""}</td>
      </tr>
    `
  );
  return html`
    <table>
      <thead>
        <tr>
          <th>Build</th>
          <th>Status</th>
          <th>Name</th>
          <th>System</th>
          <th class="num">Priority</th>
          <th>Time</th>
          <th class="num">Duration</th>
          <th>Worker</th>
        </tr>
      </thead>
      <tbody>${rows}</tbody>
    </table>
  `;
}
