// A specification as an admin sends it, JSON or the web form, checked
// field by field: a bad one is a 400 naming the field and the value.

import { HttpError, quoteValue } from "./http_error.ts";
import { BUILD_TYPES } from "../spec/spec_fields.ts";
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

const MAX_NAME_LENGTH = 100;
const MAX_LIST_ITEMS = 200;
const MAX_ITEM_LENGTH = 500;
const SPEC_NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;
const SYSTEM_REGEXP = /^[a-z0-9_]+-[a-z0-9_]+$/;

/**
 * Reads a specification from the JSON shape of `/specifications`.
 * @throws {HttpError} 400 naming the first bad field.
 */
export function specFromJson(value: unknown): Specification {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fieldError("body", "not a JSON object");
  }
  const input = value as Record<string, unknown>;
  const name = requireName(input.name);
  let buildType: string;
  let params: string[] = [];
  if (typeof input.build === "string") {
    buildType = input.build;
  } else if (
    typeof input.build === "object" && input.build !== null &&
    !Array.isArray(input.build) && Object.keys(input.build).length === 1
  ) {
    const [key, list] = Object.entries(input.build)[0];
    buildType = key;
    params = stringList(list, "build");
  } else {
    throw fieldError("build", "not a build type or {type: [parameters]}");
  }
  const channelsInput = input.channels ?? [];
  if (!Array.isArray(channelsInput) || channelsInput.length > MAX_LIST_ITEMS) {
    throw fieldError("channels", "not a list of channels");
  }
  const channels = channelsInput.map((channel, i) => {
    if (typeof channel !== "object" || channel === null) {
      throw fieldError(`channels[${i}]`, "not an object");
    }
    const c = channel as Record<string, unknown>;
    return makeChannel(
      c.name,
      c.url,
      c.branch ?? "master",
      c.commit === false || c.commit === undefined ? null : c.commit,
      i,
    );
  });
  const buildOutputs = Array.isArray(input["build-outputs"])
    ? (input["build-outputs"] as unknown[]).slice(0, MAX_LIST_ITEMS).map(
      (item, i) => {
        const o = (item ?? {}) as Record<string, unknown>;
        return {
          job: shortString(o.job, `build-outputs[${i}].job`),
          type: shortString(o.type, `build-outputs[${i}].type`),
          output: shortString(o.output ?? "out", `build-outputs[${i}].output`),
          path: shortString(o.path ?? "", `build-outputs[${i}].path`),
        };
      },
    )
    : [];
  const notifications = Array.isArray(input.notifications)
    ? (input.notifications as unknown[]).slice(0, MAX_LIST_ITEMS).map(
      (item, i) => {
        if (typeof item !== "object" || item === null) {
          throw fieldError(`notifications[${i}]`, "not an object");
        }
        const out: Record<string, string> = {};
        for (const [key, field] of Object.entries(item)) {
          out[key] = shortString(field, `notifications[${i}].${key}`);
        }
        return out;
      },
    )
    : [];
  return finishSpec({
    name,
    build: { type: buildType, params },
    channels,
    buildOutputs,
    notifications,
    period: input.period ?? 0,
    priority: input.priority ?? 9,
    systems: input.systems,
  });
}

/**
 * Reads a specification from the form fields Cuirass's form posts (§7.3),
 * plus a comma-separated `systems` field.
 * @throws {HttpError} 400 naming the first bad field.
 */
export function specFromForm(form: URLSearchParams): Specification {
  const name = requireName(form.get("name"));
  const buildType = form.get("build") ?? "";
  const params = [
    ...form.getAll("param-select"),
    ...form.getAll("param-input").flatMap((text) => text.split(",")),
  ].map((item) => item.trim()).filter((item) => item !== "");
  const names = form.getAll("channel-name");
  const urls = form.getAll("channel-url");
  const branches = form.getAll("channel-branch");
  const channels = [];
  for (let i = 0; i < names.length && i < MAX_LIST_ITEMS; i++) {
    if (names[i].trim() === "" && (urls[i] ?? "").trim() === "") continue;
    channels.push(
      makeChannel(names[i], urls[i], branches[i] || "master", null, i),
    );
  }
  const systems = FORM_SYSTEMS.filter((system) => form.has(system));
  for (const text of form.getAll("systems")) {
    for (const item of text.split(",")) {
      if (item.trim() !== "") systems.push(item.trim());
    }
  }
  return finishSpec({
    name,
    build: { type: buildType, params },
    channels,
    buildOutputs: [],
    notifications: [],
    period: numberField(form.get("period") ?? "0", "period"),
    priority: numberField(form.get("priority") ?? "9", "priority"),
    systems: [...new Set(systems)],
  });
}

function finishSpec(input: {
  name: string;
  build: { type: string; params: string[] };
  channels: Channel[];
  buildOutputs: Specification["buildOutputs"];
  notifications: Specification["notifications"];
  period: unknown;
  priority: unknown;
  systems: unknown;
}): Specification {
  if (!BUILD_TYPES.includes(input.build.type)) {
    throw fieldError(
      "build",
      `${quoteValue(input.build.type)} is not one of ${BUILD_TYPES.join(", ")}`,
    );
  }
  const period = input.period;
  if (
    typeof period !== "number" || !Number.isSafeInteger(period) ||
    period < 0 || period > 366 * 24 * 3600
  ) {
    throw fieldError("period", "not a number of seconds from 0 to one year");
  }
  const priority = input.priority;
  if (
    typeof priority !== "number" || !Number.isInteger(priority) ||
    priority < 0 || priority > 9
  ) {
    throw fieldError("priority", "not an integer from 0 to 9");
  }
  const systems = stringList(input.systems, "systems");
  if (systems.length === 0) throw fieldError("systems", "no system selected");
  for (const system of systems) {
    if (!SYSTEM_REGEXP.test(system)) {
      throw fieldError("systems", `${quoteValue(system)} is not a system name`);
    }
  }
  if (input.channels.length === 0) {
    throw fieldError("channels", "at least one channel is needed");
  }
  return {
    name: input.name,
    build: input.build,
    channels: input.channels,
    buildOutputs: input.buildOutputs,
    notifications: input.notifications,
    period,
    priority,
    systems,
    isActive: true,
  };
}

function makeChannel(
  name: unknown,
  url: unknown,
  branch: unknown,
  commit: unknown,
  index: number,
): Channel {
  const channelName = shortString(name, `channels[${index}].name`).trim();
  const channelUrl = shortString(url, `channels[${index}].url`).trim();
  if (channelName === "" || channelUrl === "") {
    throw fieldError(`channels[${index}]`, "a channel needs a name and a URL");
  }
  return {
    name: channelName,
    url: channelUrl,
    branch: shortString(branch, `channels[${index}].branch`).trim() ||
      "master",
    commit: commit === null
      ? null
      : shortString(commit, `channels[${index}].commit`),
    introduction: null,
  };
}

function requireName(value: unknown): string {
  if (typeof value !== "string" || value === "") {
    throw fieldError("name", "missing");
  }
  if (value.length > MAX_NAME_LENGTH || !SPEC_NAME_REGEXP.test(value)) {
    throw fieldError(
      "name",
      `${
        quoteValue(value)
      } is not a name of letters, digits, ".", "_", "+" and "-"`,
    );
  }
  return value;
}

function stringList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || value.length > MAX_LIST_ITEMS) {
    throw fieldError(field, "not a list of strings");
  }
  return value.map((item, i) => shortString(item, `${field}[${i}]`));
}

function shortString(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length > MAX_ITEM_LENGTH) {
    throw fieldError(field, "not a string of at most 500 characters");
  }
  return value;
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
