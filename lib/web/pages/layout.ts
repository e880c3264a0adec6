// The page frame (nav bar, stylesheet) and small pieces every page uses.

import { STYLESHEET } from "../assets.ts";
import { html, type HtmlValue, SafeHtml } from "../html.ts";
import { BuildStatus, buildStatusName } from "../../store/types.ts";

/** Which nav entry is highlighted. */
export type NavSection =
  | "dashboard"
  | "queue"
  | "workers"
  | "search"
  | "none";

const NAV: [NavSection, string, string][] = [
  ["dashboard", "/", "Dashboard"],
  ["queue", "/queue", "Queue"],
  ["workers", "/workers", "Workers"],
];

const EVALUATION_STATUS: Record<number, [string, string]> = {
  [-1]: ["in progress", "started"],
  0: ["succeeded", "succeeded"],
  1: ["failed", "failed"],
  2: ["aborted", "aborted"],
};

/** Wraps page content in the document frame, as a complete HTML string. */
export function renderPage(
  title: string,
  body: HtmlValue,
  section: NavSection = "none",
  options: { script?: string; query?: string } = {},
): string {
  const links = NAV.map(([key, href, label]) =>
    html`<a href="${href}" class="${
      key === section ? "active" : ""
    }">${label}</a>`
  );
  return html`
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>${title} · Lorica</title>
        <link rel="icon" href="/favicon.ico" type="image/svg+xml">
        <style>${new SafeHtml(STYLESHEET)}</style>
      </head>
      <body>
        <nav>
          <a class="brand" href="/">Lorica</a>${links}
          <form class="search" method="get" action="/search" role="search">
            <input type="search" name="query" value="${options.query ??
              ""}" placeholder="Search builds: hello system:x86_64-linux status:failed" aria-label="Search builds">
          </form>
        </nav>
        <main>
    ${body}
        </main>${options.script
          ? html`<script>${new SafeHtml(options.script)}</script>`
          : ""}
      </body>
    </html>
  `.value;
}

/** A short error page for HTML routes. */
export function renderErrorPage(status: number, message: string): string {
  return renderPage(
    `Error ${status}`,
    html`
      <h1>Error ${status}</h1>
      <p>${message}</p>
      <p><a href="/">Back to the dashboard</a></p>
    `,
  );
}

/** A coloured badge for a build status code. */
export function statusBadge(status: number): SafeHtml {
  const name = buildStatusName(status);
  return html`<span class="badge s-${name}">${name}</span>`;
}

/** A coloured badge for an evaluation status code. */
export function evaluationBadge(status: number): SafeHtml {
  const [label, style] = EVALUATION_STATUS[status] ??
    [`unknown(${status})`, "canceled"];
  return badge(label, style);
}

/** A coloured badge with any label and style name. */
export function badge(label: string, style: string): SafeHtml {
  return html`<span class="badge s-${style}">${label}</span>`;
}

/** Epoch seconds as `2024-05-01 12:00:00 UTC`, or "—" for 0. */
export function formatTime(epochSeconds: number): string {
  if (!epochSeconds) return "—";
  const date = new Date(epochSeconds * 1000);
  if (Number.isNaN(date.getTime())) return "—";
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A duration in seconds as `1 h 02 min`, `3 min 05 s` or `42 s`. */
export function formatDuration(seconds: number): string {
  if (!(seconds >= 0)) return "—";
  const s = Math.floor(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (hours > 0) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes > 0) return `${minutes} min ${String(rest).padStart(2, "0")} s`;
  return `${rest} s`;
}

/** How long a build ran, or has been running at `now`. */
export function buildDuration(
  build: { status: number; starttime: number; stoptime: number },
  now: number,
): string {
  if (!build.starttime) return "—";
  // A failed-dependency build never ran: its start time is when it was
  // given up on.
  if (build.status === BuildStatus.failedDependency) return "—";
  if (build.status === -1) return formatDuration(now - build.starttime);
  if (build.stoptime >= build.starttime && build.status >= 0) {
    return formatDuration(build.stoptime - build.starttime);
  }
  return "—";
}

/** A success-rate bar: succeeded, failed and pending shares. */
export function rateBar(
  succeeded: number,
  failed: number,
  pending: number,
): SafeHtml {
  const total = succeeded + failed + pending;
  if (total === 0) return html`<div class="bar"></div>`;
  const share = (n: number) => `width:${(n / total * 100).toFixed(2)}%`;
  return html`
    <div class="bar"
      title="${succeeded} succeeded, ${failed} failed, ${pending} pending"><span class="ok" style="${share(
        succeeded,
      )}"></span><span class="bad" style="${share(
        failed,
      )}"></span><span class="wait" style="${share(pending)}"></span></div>
  `;
}

/**
 * The admin panel: one token field and a button per action, each posting to
 * its own route. Nothing when admin actions are disabled.
 */
export function adminPanel(
  enabled: boolean,
  actions: { href: string; label: string; danger?: boolean }[],
): SafeHtml {
  if (!enabled || actions.length === 0) return html``;
  const buttons = actions.map((action) =>
    html`
      <button type="submit" formaction="${action.href}"
        class="${action.danger ? "danger" : ""}">${action.label}</button>
    `
  );
  return html`
    <form class="admin" method="post">
      <input type="text" name="username" value="admin" autocomplete="username" hidden>
      <label>Admin token <input type="password" name="token" required autocomplete="current-password"></label>
      ${buttons}
    </form>
  `;
}

/** A time as "5 min ago" (relative to `now`), the exact time on hover. */
export function timeAgo(epochSeconds: number, now: number): SafeHtml {
  if (!epochSeconds) return html`—`;
  const exact = formatTime(epochSeconds);
  const iso = new Date(epochSeconds * 1000).toISOString();
  const delta = now - epochSeconds;
  let text: string;
  if (delta < 0) text = exact;
  else if (delta < 10) text = "just now";
  else if (delta < 60) text = `${delta} s ago`;
  else if (delta < 3600) text = `${Math.floor(delta / 60)} min ago`;
  else if (delta < 86400) text = `${Math.floor(delta / 3600)} h ago`;
  else text = `${Math.floor(delta / 86400)} d ago`;
  return html`<time datetime="${iso}" title="${exact}">${text}</time>`;
}
