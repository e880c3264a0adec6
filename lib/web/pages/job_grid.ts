// An evaluation's dashboard: its jobs as a grid of tiles coloured by
// status, each a link to its build; plain HTML, no script needed.

import { html, pathSegment, type SafeHtml } from "../html.ts";
import { rateBar, renderPage, statusBadge } from "./layout.ts";
import { summarizeCounts } from "./builds_table.ts";
import {
  type BuildStatus,
  buildStatusName,
  type Dashboard,
  type Evaluation,
} from "../../store/types.ts";

/** One job of the grid, as `Store.listJobs` gives it. */
export interface GridJob {
  name: string;
  build: number;
  status: BuildStatus;
}

/** What the dashboard page shows. */
export interface JobGridPage {
  evaluation: Evaluation;
  /** The jobs, ordered by name. */
  jobs: GridJob[];
  /** The systems one can switch to. */
  systems: string[];
  /** The system shown, or null for every system. */
  system: string | null;
  /** The saved dashboard whose jobs are shown, or null. */
  dashboard: Dashboard | null;
  /** Names of the saved dashboard that are no job of this evaluation. */
  missing: string[];
}

/** Up to this many jobs, each tile shows its name; beyond, small squares. */
export const LABELLED_TILES_MAX = 300;
/** Jobs listed by name under the grid, per kind (failed, pending). */
const LISTED_MAX = 500;

/** Renders the dashboard of one evaluation. */
export function renderJobGrid(page: JobGridPage): string {
  const { evaluation, jobs, dashboard } = page;
  const counts = new Map<BuildStatus, number>();
  for (const job of jobs) {
    counts.set(job.status, (counts.get(job.status) ?? 0) + 1);
  }
  const summary = summarizeCounts(counts);
  const statuses = [...counts.keys()].sort((a, b) => a - b);
  const labelled = jobs.length <= LABELLED_TILES_MAX;
  // A system the specification does not build has no jobs (unless it did
  // when this evaluation ran): an empty grid would read as a failure.
  const unbuilt = page.system !== null && page.systems.length > 0 &&
    !page.systems.includes(page.system);
  const title = dashboard === null
    ? `Dashboard of evaluation ${evaluation.id}`
    : `Dashboard ${dashboard.id} at evaluation ${evaluation.id}`;

  return renderPage(
    title,
    html`
      <h1>Dashboard of <a href="/eval/${evaluation.id}">evaluation ${evaluation
        .id}</a> of <a href="/jobset/${pathSegment(
          evaluation.specification,
        )}">${evaluation.specification}</a></h1>
      ${dashboard === null ? "" : html`
        <p>Jobs of saved dashboard <code>${dashboard
          .id}</code> (<a href="/dashboard/${dashboard
          .id}">its latest evaluation</a>).</p>
      `}
      ${systemChoice(page)}
      ${unbuilt && unbuiltSystem(page)}
      ${unbuilt && jobs.length === 0 ? "" : html`
        <div
          class="rate grid-summary">${rateBar(
            summary.succeeded,
            summary.failed,
            summary.pending,
          )} <span>${jobs.length} ${jobs.length === 1
            ? "job"
            : "jobs"}: ${summary
            .succeeded} succeeded, ${summary.failed} failed, ${summary
            .pending} pending${summary.canceled > 0
            ? `, ${summary.canceled} canceled`
            : ""}</span></div>
      `}
      ${statuses.length > 0
        ? html`<p class="small">Legend: ${
          statuses.map((status) =>
            html`
              ${statusBadge(status)}
            `
          )
        }</p>`
        : ""}
      ${jobs.length === 0
        ? unbuilt ? "" : emptyGrid(page.system)
        : html`<ul class="job-grid${labelled ? " labelled" : ""}">${
          jobs.map((job) => tile(job, labelled))
        }</ul>`}
      ${page.missing.length > 0
        ? html`<p class="muted">Not jobs of this evaluation: ${
          page.missing
            .map((name, i) => html`${i > 0 ? ", " : ""}<code>${name}</code>`)
        }.</p>`
        : ""}
      ${jobList(
        "Failed jobs",
        jobs.filter((job) => job.status > 0 && job.status !== 4),
      )}
      ${jobList("Pending jobs", jobs.filter((job) => job.status < 0))}
    `,
    "dashboard",
  );
}

/** Says that the specification does not build the system shown. */
function unbuiltSystem(page: JobGridPage): SafeHtml {
  const { evaluation, system, systems, jobs } = page;
  return html`
    <div class="empty"
      id="unbuilt-system">Specification ${evaluation
        .specification} does not build ${system}${jobs.length > 0
        ? " any more (these jobs are from when it did)"
        : ""}; it builds ${systems.join(", ")}.</div>
  `;
}

function emptyGrid(system: string | null): SafeHtml {
  const text = system === null ? "No jobs." : `No jobs for ${system}.`;
  return html`<div class="empty">${text}</div>`;
}

function systemChoice(page: JobGridPage): SafeHtml {
  const { evaluation, system, dashboard } = page;
  const base = dashboard === null
    ? `/eval/${evaluation.id}/dashboard`
    : `/eval/${evaluation.id}/dashboard/${dashboard.id}`;
  const systems = system !== null && !page.systems.includes(system)
    ? [...page.systems, system]
    : page.systems;
  if (systems.length === 0) return html``;
  return html`<p>System: ${
    systems.map((choice, i) =>
      html`${i > 0 ? " · " : ""}${
        choice === system
          ? html`<strong>${choice}</strong>`
          : html`<a href="${base}?system=${
            encodeURIComponent(
              choice,
            )
          }">${choice}</a>`
      }`
    )
  }</p>`;
}

function tile(job: GridJob, labelled: boolean): SafeHtml {
  const status = buildStatusName(job.status);
  const label = `${job.name}: ${status}`;
  return labelled
    ? html`<li><a class="s-${status}" href="/build/${job.build}/details" title="${label}">${job.name}</a></li>`
    : html`<li><a class="s-${status}" href="/build/${job.build}/details" title="${label}" aria-label="${label}"></a></li>`;
}

/** The jobs of one kind by name, folded, at most {@link LISTED_MAX}. */
function jobList(heading: string, jobs: GridJob[]): SafeHtml {
  if (jobs.length === 0) return html``;
  const shown = jobs.slice(0, LISTED_MAX);
  return html`
    <details class="job-list">
      <summary>${heading} (${jobs.length})</summary>
      <ul>${shown.map((job) =>
        html`<li><a href="/build/${job.build}/details">${job.name}</a> ${
          statusBadge(
            job.status,
          )
        }</li>`
      )}</ul>${jobs.length > shown.length
        ? html`<p class="muted">Only the first ${shown.length} are listed.</p>`
        : ""}
    </details>
  `;
}
