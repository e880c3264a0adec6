// A build's page: status, times, worker, derivation, outputs, dependencies, log tail.

import { html, pathSegment } from "../html.ts";
import {
  adminPanel,
  buildDuration,
  formatTime,
  renderPage,
  statusBadge,
} from "./layout.ts";
import { LIVE_LOG_SCRIPT } from "./scripts.ts";
import { cleanLogText, type LogTail } from "../build_log.ts";
import { type Build, BuildStatus } from "../../store/types.ts";

/** What the build page shows. */
export interface BuildDetailsPage {
  build: Build;
  /** Dependencies that have a build record. */
  dependencies: Build[];
  /** The tail of the log, or null when there is no log file. */
  log: LogTail | null;
  now: number;
  /** True when admin actions are enabled (shows the admin panel). */
  admin?: boolean;
}

/** Renders the details of one build. */
export function renderBuildDetails(page: BuildDetailsPage): string {
  const { build, dependencies, log, now } = page;
  const live = build.status < 0;
  // The store stamps a failed-dependency build's start and stop with the
  // moment it gave up on it; it never ran, so neither time is a start.
  const notBuilt = build.status === BuildStatus.failedDependency;
  const outputs = build.outputs.map((output) =>
    html`<li><code>${output.name}</code>: <code>${output.path}</code></li>`
  );
  const products = (build.products ?? []).map((product) =>
    html`<li><a href="/download/${product.id}">${
      product.path.slice(product.path.lastIndexOf("/") + 1)
    }</a> (${product.type}, ${product.fileSize} bytes)</li>`
  );
  const dependencyRows = dependencies.map((dependency) =>
    html`
      <tr>
        <td><a href="/build/${dependency.id}/details">${dependency.id}</a></td>
        <td>${statusBadge(dependency.status)}</td>
        <td>${dependency.nixName}</td>
        <td>${dependency.system}</td>
      </tr>
    `
  );
  return renderPage(
    `Build ${build.id}`,
    html`
      <h1>Build ${build.id}: ${build.nixName}</h1>
      ${notBuilt && notBuiltReason(dependencies)}
      ${adminPanel(page.admin ?? false, [
        { href: `/admin/build/${build.id}/restart`, label: "Restart" },
        ...(build.status < 0
          ? [{
            href: `/admin/build/${build.id}/cancel`,
            label: "Cancel",
            danger: true,
          }]
          : []),
      ])}
      <dl class="facts">
        <dt>Status</dt>
        <dd id="build-status" data-status="${build.status}">${statusBadge(
          build.status,
        )}</dd>
        <dt>Jobset</dt>
        <dd><a href="/jobset/${pathSegment(build.specification)}">${build
          .specification}</a></dd>
        <dt>Evaluation</dt>
        <dd><a href="/eval/${build.evaluation}">${build.evaluation}</a></dd>
        <dt>Job</dt>
        <dd>${build.jobName}</dd>
        <dt>System</dt>
        <dd>${build.system}</dd>
        <dt>Priority</dt>
        <dd>${build.priority}</dd>
        <dt>Created</dt>
        <dd>${formatTime(build.timestamp)}</dd>
        ${notBuilt
          ? html`
            <dt>Started</dt>
            <dd><span class="muted">never: not built</span></dd>
            <dt>Given up</dt>
            <dd>${formatTime(build.stoptime)}</dd>
          `
          : html`
            <dt>Started</dt>
            <dd>${formatTime(build.starttime)}</dd>
            <dt>Finished</dt>
            <dd>${formatTime(build.stoptime)}</dd>
            <dt>Duration</dt>
            <dd>${buildDuration(build, now)}</dd>
          `}
        <dt>Worker</dt>
        <dd>${build.worker ?? html`<span class="muted">none</span>`}</dd>
        <dt>Derivation</dt>
        <dd><code>${build.derivation}</code></dd>
        <dt>Outputs</dt>
        <dd>
          <ul>${outputs}</ul>
        </dd>
        ${products.length > 0 &&
          html`
            <dt>Downloads</dt>
            <dd>
              <ul>${products}</ul>
            </dd>
          `}
      </dl>
      <h2>Dependencies</h2>
      ${dependencies.length === 0
        ? html`<div class="empty">No dependencies with a build record.</div>`
        : html`
          <table>
            <thead>
              <tr>
                <th>Build</th>
                <th>Status</th>
                <th>Name</th>
                <th>System</th>
              </tr>
            </thead>
            <tbody>${dependencyRows}</tbody>
          </table>
        `}
      <h2 id="log">Log</h2>
      ${live
        ? renderLiveLog(build, log !== null)
        : renderLog(build, log, notBuilt)}
    `,
    "none",
    live ? { script: LIVE_LOG_SCRIPT } : {},
  );
}

/**
 * Why a failed-dependency build was not built: the inputs that did not
 * succeed, linked. Local mode also gives up on a derivation whose inputs
 * the daemon could not provide without any input build on record.
 */
function notBuiltReason(dependencies: Build[]) {
  const failed = dependencies.filter((dependency) =>
    dependency.status > BuildStatus.succeeded
  );
  if (failed.length === 0) {
    return html`<p class="notice" id="not-built">Not built: a dependency failed
      (no input build on record shows which).</p>`;
  }
  const links = failed.map((dependency, index) =>
    html`
      ${index > 0 ? ", " : ""}<a
        href="/build/${dependency
          .id}/details">${`build ${dependency.id}`}</a> (${dependency
          .nixName}, ${statusBadge(dependency.status)})
    `
  );
  return html`
    <p class="notice"
      id="not-built">Not built because ${failed.length === 1
        ? "its input"
        : "its inputs"} ${links} did not succeed.</p>
  `;
}

function renderLog(build: Build, log: LogTail | null, notBuilt: boolean) {
  if (log === null) {
    if (notBuilt) {
      return html`
        <div
          class="empty">No log: this build was not built, because a dependency failed.</div>
      `;
    }
    return html`<div class="empty">No log for this build${
      build.status < -1 ? " yet" : ""
    }.</div>`;
  }
  const notes = [];
  if (log.truncated) {
    notes.push(
      html`<p class="muted">Showing the end of the log only (${
        formatBytes(log.totalBytes)
      }${log.scanLimitReached ? " read before giving up" : ""}).</p>`,
    );
  }
  if (log.incomplete) {
    notes.push(
      html`<p class="muted">The log ends early: it is still being written, or damaged.</p>`,
    );
  }
  return html`<p><a href="/build/${build.id}/log/raw">Raw log</a></p>${notes}
<pre class="log">${cleanLogText(log.text)}</pre>`;
}

/**
 * The log followed live. Until a log file exists its raw link would answer
 * 404, so it stays hidden; the script shows it with the first log text.
 */
function renderLiveLog(build: Build, hasLog: boolean) {
  return html`
    <p><a id="raw-log" href="/build/${build.id}/log/raw" ${hasLog
      ? ""
      : html`hidden`}>Raw log</a>
    <span class="muted" id="live-state">${build.status === -1
      ? "Following the log as the build runs…"
      : "The log appears here once the build starts."}</span></p>
    <pre class="log live" id="live-log"
      data-events="/build/${build.id}/log/events"></pre>
  `;
}

function formatBytes(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} bytes`;
}
