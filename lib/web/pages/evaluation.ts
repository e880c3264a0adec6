// An evaluation's page: its checkouts and its builds with status badges.

import { html, pathSegment } from "../html.ts";
import {
  adminPanel,
  evaluationBadge,
  formatTime,
  renderPage,
} from "./layout.ts";
import { buildsTable } from "./builds_table.ts";
import type { Build, Checkout, Evaluation } from "../../store/types.ts";

/** What the evaluation page shows. */
export interface EvaluationPage {
  evaluation: Evaluation;
  checkouts: Checkout[];
  builds: Build[];
  /** The `status` filter in effect, or null for all builds. */
  statusFilter: string | null;
  /** True when the list was cut at the page limit. */
  limited: boolean;
  now: number;
  /** True when admin actions are enabled. */
  admin?: boolean;
  /** True when the evaluation's log can be served. */
  hasLog?: boolean;
}

/** The values of the `status` query parameter, in tab order. */
export const EVALUATION_FILTERS = ["pending", "succeeded", "failed"] as const;

/** Renders the builds of one evaluation. */
export function renderEvaluation(page: EvaluationPage): string {
  const { evaluation, checkouts, builds, statusFilter, limited, now } = page;
  const tabs = [null, ...EVALUATION_FILTERS].map((filter) => {
    const href = filter === null
      ? `/eval/${evaluation.id}`
      : `/eval/${evaluation.id}?status=${filter}`;
    const label = filter ?? "all";
    return filter === statusFilter
      ? html`<strong>${label}</strong>`
      : html`<a href="${href}">${label}</a>`;
  });
  const checkoutRows = checkouts.map((checkout) =>
    html`<li><code>${checkout.channel}</code> <code>${checkout.revision}</code></li>`
  );
  return renderPage(
    `Evaluation ${evaluation.id}`,
    html`
      <h1>Evaluation ${evaluation.id} of <a href="/jobset/${pathSegment(
        evaluation.specification,
      )}">${evaluation.specification}</a></h1>
      ${adminPanel(page.admin ?? false, [
        {
          href: `/admin/evaluation/${evaluation.id}/restart`,
          label: "Restart builds",
        },
        {
          href: `/admin/evaluation/${evaluation.id}/cancel`,
          label: "Cancel pending builds",
          danger: true,
        },
      ])}
      <dl class="facts">
        <dt>Status</dt>
        <dd>${evaluationBadge(evaluation.status)} · <a href="/eval/${evaluation
          .id}/dashboard">jobs grid</a>${page.hasLog
          ? html`
            · <a href="/eval/${evaluation.id}/log/raw">evaluation log</a>
          `
          : ""}</dd>
        <dt>Triggered</dt>
        <dd>${formatTime(evaluation.timestamp)}</dd>
        <dt>Checked out</dt>
        <dd>${formatTime(evaluation.checkouttime)}</dd>
        <dt>Evaluated</dt>
        <dd>${formatTime(evaluation.evaltime)}</dd>
        <dt>Checkouts</dt>
        <dd>
          <ul>${checkoutRows}</ul>
        </dd>
      </dl>
      <h2>Builds</h2>
      <p>Show: ${tabs.map((tab, i) =>
        i === 0 ? tab : html`
          · ${tab}
        `
      )}</p>
      ${buildsTable(builds, now)}
      ${limited
        ? html`<p class="muted">Only the first ${builds.length} builds are shown.</p>`
        : ""}
    `,
    "dashboard",
  );
}
