// A specification as an admin sends it, JSON or the web form. JSON goes
// through the same reader as `--specifications` files (Cuirass's defaults,
// channel introductions, notification shapes); the form through the same
// field checks as those readers (module names, channels git can be given,
// systems named once); both then meet the limits of a public form: bounded
// lengths, system names, a channel and a system at least. A bad field is a
// 400 naming it and its value.

import { HttpError, quoteValue } from "./http_error.ts";
import {
  BUILD_TYPES,
  checkChannel,
  checkChannelNames,
  checkModuleName,
  checkNoNul,
  checkSystems,
  defaultGuixChannel,
  MAX_NAME_LENGTH,
  MAX_PERIOD_SECONDS,
  SPEC_NAME_REGEXP,
} from "../spec/spec_fields.ts";
import { specificationFromJson } from "../spec/spec_json.ts";
import { SpecError } from "../spec/spec_error.ts";
import { isSystemName } from "../guix/system_name.ts";
import type { Channel, Specification } from "../store/types.ts";

/** Systems offered as checkboxes on the specification form. */
export const FORM_SYSTEMS = [
  "x86_64-linux",
  "i686-linux",
  "aarch64-linux",
  "armhf-linux",
  "powerpc64le-linux",
  "riscv64-linux",
  "x86_64-gnu",
  "i586-gnu",
];

const MAX_LIST_ITEMS = 200;
const MAX_ITEM_LENGTH = 500;

/**
 * Reads a specification from the JSON shape of `/specifications`.
 * @throws {HttpError} 400 naming the first bad field.
 */
export function specFromJson(value: unknown): Specification {
  try {
    return withinLimits(specificationFromJson(value));
  } catch (error) {
    if (error instanceof SpecError) throw new HttpError(400, error.message);
    throw error;
  }
}

/**
 * Reads a specification from the form fields Cuirass's form posts (§7.3),
 * plus a comma-separated `systems` field.
 * @throws {HttpError} 400 naming the first bad field.
 */
export function specFromForm(form: URLSearchParams): Specification {
  const name = form.get("name") ?? "";
  if (name === "") throw fieldError("name", "missing");
  const params = [
    ...form.getAll("param-select"),
    ...form.getAll("param-input").flatMap((text) => text.split(",")),
  ].map((item) => item.trim()).filter((item) => item !== "");
  const names = form.getAll("channel-name");
  const urls = form.getAll("channel-url");
  const branches = form.getAll("channel-branch");
  const channels: Channel[] = [];
  for (let i = 0; i < names.length && i < MAX_LIST_ITEMS; i++) {
    const channelName = names[i].trim();
    const url = (urls[i] ?? "").trim();
    if (channelName === "" && url === "") continue;
    if (channelName === "" || url === "") {
      throw fieldError(`channels[${i}]`, "a channel needs a name and a URL");
    }
    const guix = defaultGuixChannel();
    channels.push({
      name: channelName,
      url,
      branch: (branches[i] ?? "").trim() || "master",
      commit: null,
      // As the file readers do: Guix's own channel is authenticated.
      introduction: channelName === guix.name && url === guix.url
        ? guix.introduction
        : null,
    });
  }
  const systems = FORM_SYSTEMS.filter((system) => form.has(system));
  for (const text of form.getAll("systems")) {
    for (const item of text.split(",")) {
      if (item.trim() !== "") systems.push(item.trim());
    }
  }
  const fail = (what: string): never => {
    throw new HttpError(
      400,
      `Cannot read specification from the form: ${what}`,
    );
  };
  // As the JSON and file readers do: a NUL is named here, before the
  // store's own refusal (which would be a 500).
  const spec = withinLimits(checkNoNul({
    name,
    build: { type: form.get("build") ?? "", params },
    channels,
    buildOutputs: [],
    notifications: [],
    period: numberField(form.get("period") ?? "0", "period"),
    priority: numberField(form.get("priority") ?? "9", "priority"),
    systems,
    isActive: true,
  }, fail));
  return readerChecks(spec, fail);
}

/**
 * `spec`, read from the form, if it passes the checks the specification
 * readers apply to the same fields, so that what the form accepts would be
 * accepted from a file or JSON too rather than fail at evaluation; a custom
 * build's modules come back in their written form, as the readers store
 * them. The form has no notification fields: nothing to check there.
 * @throws {HttpError} 400 naming the field and its value.
 */
function readerChecks(
  spec: Specification,
  fail: (what: string) => never,
): Specification {
  if (spec.build.type === "custom") {
    spec.build.params = spec.build.params.map((module) =>
      checkModuleName(module, fail)
    );
  }
  spec.channels.forEach((channel, i) =>
    checkChannel(channel, (what) => fail(`channels[${i}]: ${what}`))
  );
  checkChannelNames(spec.channels, fail);
  checkSystems(spec.systems, fail);
  return spec;
}

/**
 * `spec` if it meets the limits of a public form.
 * @throws {HttpError} 400 naming the first field that does not.
 */
function withinLimits(spec: Specification): Specification {
  if (
    spec.name.length > MAX_NAME_LENGTH || !SPEC_NAME_REGEXP.test(spec.name)
  ) {
    throw fieldError(
      "name",
      `${
        quoteValue(spec.name)
      } is not a name of letters, digits, ".", "_", "+" and "-"`,
    );
  }
  if (!BUILD_TYPES.includes(spec.build.type)) {
    throw fieldError(
      "build",
      `${quoteValue(spec.build.type)} is not one of ${BUILD_TYPES.join(", ")}`,
    );
  }
  shortStrings(spec.build.params, "build");
  if (spec.period > MAX_PERIOD_SECONDS) {
    throw fieldError("period", `${spec.period} seconds is over a year`);
  }
  if (spec.priority < 0 || spec.priority > 9) {
    throw fieldError("priority", `${spec.priority} is not from 0 to 9`);
  }
  if (spec.systems.length === 0) {
    throw fieldError("systems", "no system selected");
  }
  shortStrings(spec.systems, "systems");
  for (const system of spec.systems) {
    if (!isSystemName(system)) {
      throw fieldError("systems", `${quoteValue(system)} is not a system name`);
    }
  }
  if (spec.channels.length === 0) {
    throw fieldError("channels", "at least one channel is needed");
  }
  shortList(spec.channels, "channels").forEach((channel, i) =>
    shortStrings(
      [channel.name, channel.url, channel.branch, channel.commit ?? ""],
      `channels[${i}]`,
    )
  );
  shortList(spec.buildOutputs, "build-outputs").forEach((output, i) =>
    shortStrings(Object.values(output), `build-outputs[${i}]`)
  );
  shortList(spec.notifications, "notifications").forEach((sink, i) =>
    shortStrings(Object.values(sink), `notifications[${i}]`)
  );
  return spec;
}

function shortList<T>(items: T[], field: string): T[] {
  if (items.length > MAX_LIST_ITEMS) {
    throw fieldError(
      field,
      `${items.length} items, more than ${MAX_LIST_ITEMS}`,
    );
  }
  return items;
}

function shortStrings(items: string[], field: string): void {
  for (const item of shortList(items, field)) {
    if (item.length > MAX_ITEM_LENGTH) {
      throw fieldError(
        field,
        `${quoteValue(item)} is longer than ${MAX_ITEM_LENGTH} characters`,
      );
    }
  }
}

function numberField(text: string, field: string): number {
  if (!/^[0-9]{1,9}$/.test(text.trim())) {
    throw fieldError(field, `${quoteValue(text)} is not a whole number`);
  }
  return Number(text.trim());
}

function fieldError(field: string, what: string): HttpError {
  return new HttpError(
    400,
    `Cannot read specification field "${field}": ${what}`,
  );
}
