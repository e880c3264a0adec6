// The workers page: one card per worker with its current build.

import { html } from "../html.ts";
import { badge, formatDuration, renderPage, statusBadge } from "./layout.ts";
import type { WorkerStatus } from "../worker_status.ts";

/** Renders the workers page. */
export function renderWorkers(statuses: WorkerStatus[]): string {
  const body = statuses.length === 0
    ? html`<div class="empty">No worker has connected.</div>`
    : html`<div class="cards">${statuses.map(renderCard)}</div>`;
  return renderPage("Workers", html`<h1>Workers</h1>${body}`, "workers");
}

function renderCard(status: WorkerStatus) {
  const { worker, currentBuild, builds, silentSeconds, unresponsive } = status;
  const state = unresponsive
    ? badge("unresponsive", "unresponsive")
    : currentBuild
    ? badge("busy", "busy")
    : badge("idle", "idle");
  const current = currentBuild
    ? html`<a href="/build/${currentBuild.id}/details">${currentBuild.nixName}</a> ${
      statusBadge(currentBuild.status)
    }${
      builds.length > 1
        ? html`
          <span class="muted">(+${builds.length - 1} more)</span>
        `
        : ""
    }`
    : html`<span class="muted">idle</span>`;
  return html`
    <section class="card">
      <h2>${worker.name} ${state}</h2>
      <dl class="facts">
        <dt>Machine</dt>
        <dd>${worker.machine}</dd>
        <dt>Address</dt>
        <dd>${worker.address}</dd>
        <dt>Systems</dt>
        <dd>${worker.systems.join(", ")}</dd>
        <dt>Last contact</dt>
        <dd>${silentSeconds} s ago${silentSeconds >= 60
          ? ` (${formatDuration(silentSeconds)})`
          : ""}</dd>
        <dt>Building</dt>
        <dd>${current}</dd>
      </dl>
    </section>
  `;
}
