// The builds table shared by the evaluation, status and build pages.

import { html, pathSegment, type SafeHtml } from "../html.ts";
import { buildDuration, formatTime, statusBadge } from "./layout.ts";
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
        <td><a href="/jobset/${pathSegment(build.specification)}">${build
          .specification}</a></td>
        <td>${build.jobName}</td>
        <td>${build.nixName}</td>
        <td>${build.system}</td>
        <td class="num">${build.priority}</td>
        <td>${formatTime(
          build.status >= 0 ? build.stoptime : build.timestamp,
        )}</td>
        <td class="num">${buildDuration(build, now)}</td>
        <td>${build.worker ?? ""}</td>
      </tr>
    `
  );
  return html`
    <table>
      <thead>
        <tr>
          <th>Build</th>
          <th>Status</th>
          <th>Jobset</th>
          <th>Job</th>
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
