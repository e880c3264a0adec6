// The form adding or changing a specification (fields as Cuirass's form, §7.3).

import { html } from "../html.ts";
import { renderPage } from "./layout.ts";
import { FORM_SYSTEMS } from "../spec_input.ts";
import { BUILD_TYPES } from "../../spec/spec_fields.ts";
import type { Specification } from "../../store/types.ts";

/** Renders the add form (no spec) or the edit form of `spec`. */
export function renderSpecForm(
  spec: Specification | null,
  adminEnabled: boolean,
): string {
  const editing = spec !== null;
  const channels = spec?.channels.length ? spec.channels : [{
    name: "guix",
    url: "https://git.guix.gnu.org/guix.git",
    branch: "master",
  }];
  const channelRows = [...channels, { name: "", url: "", branch: "" }].map((
    channel,
  ) =>
    html`
      <div class="channel-row">
        <input name="channel-name" value="${channel.name}" placeholder="name"
          aria-label="Channel name">
        <input name="channel-url" value="${channel.url}" placeholder="https://…"
          aria-label="Channel URL">
        <input name="channel-branch" value="${channel
          .branch}" placeholder="master"
          aria-label="Channel branch">
      </div>
    `
  );
  const systems = [...new Set([...FORM_SYSTEMS, ...(spec?.systems ?? [])])];
  const chosen = new Set(spec?.systems ?? ["x86_64-linux"]);
  return renderPage(
    editing ? `Edit ${spec.name}` : "Add a specification",
    html`
      <h1>${editing
        ? html`Edit specification ${spec.name}`
        : "Add a specification"}</h1>
      ${adminEnabled ? "" : html`
        <p
          class="notice">Admin actions are disabled on this server: no admin token is configured.</p>
      `}
      <form class="spec-form" method="post" action="/admin/specification/${editing
        ? "edit"
        : "add"}">
        <label>Name <input name="name" value="${spec?.name ??
          ""}" required ${editing
          ? html`readonly`
          : ""} pattern="[A-Za-z0-9][A-Za-z0-9._+\\-]*"></label>
        <label>Build
          <select name="build">${BUILD_TYPES.map((type) =>
            html`<option ${
              (spec?.build.type ?? "packages") === type ? html`selected` : ""
            }>${type}</option>`
          )}</select>
        </label>
        <label>Parameters <input name="param-input" value="${spec?.build.params
          .join(", ") ?? ""}" placeholder="hello, coreutils"></label>
        <fieldset><legend>Channels</legend>${channelRows}</fieldset>
        <fieldset><legend>Systems</legend>${systems.map((system) =>
          // Cuirass's form names a checkbox after its system, for the
          // systems it knows; any other goes in the `systems` list.
          html`
            <label
              class="check"><input type="checkbox" ${FORM_SYSTEMS.includes(
                  system,
                )
                ? html`name="${system}"`
                : html`name="systems" value="${system}"`} ${chosen.has(system)
                ? html`checked`
                : ""}> <code>${system}</code></label>
          `
        )}</fieldset>
        <label>Period (seconds, 0 for the default) <input name="period" type="number" min="0" value="${spec
          ?.period ?? 0}"></label>
        <label>Priority (0 most urgent, 9 least) <input name="priority" type="number" min="0" max="9" value="${spec
          ?.priority ?? 9}"></label>
        <label>Admin token <input type="password" name="token" required autocomplete="current-password"></label>
        <button type="submit">${editing ? "Save" : "Add"}</button>
      </form>
    `,
    "dashboard",
  );
}
