// The workers page: one card per worker with its current build, refreshed live.

import { html, pathSegment, type SafeHtml } from "../html.ts";
import { badge, formatDuration, renderPage, statusBadge } from "./layout.ts";
import { REFRESH_SCRIPT } from "./scripts.ts";
import type { WorkerStatus } from "../worker_status.ts";

/** Per-system capacity shown above the cards. */
export interface SystemRow {
  system: string;
  /** Responsive workers building for it. */
  workers: number;
  /** Scheduled builds waiting for it. */
  queued: number;
}

/** Renders the workers page; the fragment inside refreshes itself. */
export function renderWorkers(
  statuses: WorkerStatus[],
  systems: SystemRow[] = [],
): string {
  return renderPage(
    "Workers",
    html`
      <div class="title-row">
        <h1>Workers</h1>
        <span class="muted" id="live-stamp">Refreshes every 2 seconds.</span>
      </div>
      <div id="live" data-refresh="/workers/cards"
        data-interval="2000">${renderWorkerCards(statuses, systems)}</div>
    `,
    "workers",
    { script: REFRESH_SCRIPT },
  );
}

/**
 * Renders the page of one machine: the workers that run on it (a
 * machine may run several), with what each is building.
 */
export function renderMachine(name: string, statuses: WorkerStatus[]): string {
  const systems = [...new Set(statuses.flatMap((s) => s.worker.systems))]
    .sort();
  const addresses = [...new Set(statuses.map((s) => s.worker.address))]
    .sort();
  return renderPage(
    `Machine ${name}`,
    html`
      <h1>Machine ${name}</h1>
      <dl class="facts">
        <dt>Workers</dt>
        <dd>${statuses.length}</dd>
        <dt>Addresses</dt>
        <dd>${addresses.join(", ")}</dd>
        <dt>Systems</dt>
        <dd>${systems.map((system) =>
          html`
            <code>${system}</code>
          `
        )}</dd>
      </dl>
      <h2>Workers</h2>
      ${renderWorkerCards(statuses)}
      <p><a href="/workers">All workers</a></p>
    `,
    "workers",
  );
}

/** The part of the page that refreshes: systems table and worker cards. */
export function renderWorkerCards(
  statuses: WorkerStatus[],
  systems: SystemRow[] = [],
): SafeHtml {
  const connected = statuses.filter((status) => !status.unresponsive).length;
  const busy =
    statuses.filter((status) =>
      !status.unresponsive && status.currentBuild !== null
    ).length;
  const summary = html`
    <p
      class="summary">${connected} connected ${connected === 1
        ? "worker"
        : "workers"}, ${busy} busy${statuses.length > connected
        ? html`, <span class="s-text-bad">${
          statuses.length - connected
        } not answering</span>`
        : ""}.</p>
  `;
  const systemTable = systems.length === 0 ? "" : html`
    <table class="compact">
      <thead>
        <tr>
          <th>System</th>
          <th class="num">Workers</th>
          <th class="num">Waiting builds</th>
        </tr>
      </thead>
      <tbody>${systems.map((row) =>
        html`
          <tr>
            <td><code>${row.system}</code></td>
            <td class="num">${row.workers === 0
              ? html`<span class="badge s-failed">none</span>`
              : row.workers}</td>
            <td class="num">${row.queued}</td>
          </tr>
        `
      )}</tbody>
    </table>
  `;
  const cards = statuses.length === 0
    ? html`<div class="empty">No worker has connected.</div>`
    : html`<div class="cards">${statuses.map(renderCard)}</div>`;
  return html`${summary}${systemTable}${cards}`;
}

function renderCard(status: WorkerStatus) {
  const { worker, currentBuild, builds, silentSeconds, unresponsive } = status;
  const state = unresponsive
    ? badge("unresponsive", "unresponsive")
    : currentBuild
    ? badge("busy", "busy")
    : status.diskLow
    ? badge("low on disk", "unresponsive")
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
    <section class="card${unresponsive ? " stale" : ""}" data-worker="${worker
      .name}">
      <h2><span class="worker-name">${worker.name}</span> ${state}</h2>
      <dl class="facts">
        <dt>Machine</dt>
        <dd><a href="/machine/${pathSegment(worker.machine)}">${worker
          .machine}</a></dd>
        <dt>Address</dt>
        <dd>${worker.address}</dd>
        <dt>Systems</dt>
        <dd>${worker.systems.map((system) =>
          html`
            <code>${system}</code>
          `
        )}</dd>
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
