// Specifications in the JSON shape of Cuirass's HTTP API (cuirass.md 7.1).

import type {
  BuildSelector,
  Channel,
  ChannelIntroduction,
  Specification,
} from "../store/types.ts";
import { SpecError } from "./spec_error.ts";
import {
  buildOutput,
  BUILDS_WITH_PARAMS,
  checkChannel,
  checkChannelNames,
  checkEmailFields,
  checkModuleName,
  checkName,
  checkNoNul,
  checkPeriod,
  checkPriority,
  checkSomeChannel,
  checkString,
  checkSystems,
  defaultGuixChannel,
  defaults,
  type Fail,
  formatFingerprint,
  isObject,
  nonEmpty,
  show,
  SIMPLE_BUILDS,
} from "./spec_fields.ts";

/**
 * Validates a specification in the JSON shape of Cuirass's HTTP API
 * (cuirass.md 7.1); missing fields take the same defaults as in files.
 *
 * @throws {SpecError} for a missing name or an invalid field.
 */
export function specificationFromJson(value: unknown): Specification {
  const fail = (what: string): never => {
    throw new SpecError(`Cannot read specification from JSON: ${what}`, {
      file: "(json)",
      line: 0,
      column: 0,
    });
  };
  if (!isObject(value)) return fail("not an object");
  checkKeys(value, SPEC_KEYS, "specification", fail);
  const field = (name: string) => value[name];

  const spec = defaults();
  spec.name = checkName(field("name"), fail);
  if (field("build") !== undefined) {
    spec.build = jsonBuild(field("build"), fail);
  }
  if (field("channels") !== undefined) {
    spec.channels = checkSomeChannel(
      checkChannelNames(
        jsonArray(field("channels"), "channels", fail)
          .map((c, i) =>
            jsonChannel(c, (what) => fail(`channels[${i}]: ${what}`))
          ),
        fail,
      ),
      spec.name,
      fail,
    );
  }
  if (field("build-outputs") !== undefined) {
    spec.buildOutputs = jsonArray(field("build-outputs"), "build-outputs", fail)
      .map((o) => {
        if (!isObject(o)) return fail(`field "build-outputs" has a non-object`);
        checkKeys(o, BUILD_OUTPUT_KEYS, "build-output", fail);
        return buildOutput({
          job: o.job,
          type: o.type,
          output: o.output ?? "out",
          path: o.path ?? "",
        }, fail);
      });
  }
  if (field("notifications") !== undefined) {
    spec.notifications = jsonArray(
      field("notifications"),
      "notifications",
      fail,
    )
      .map((n) => jsonNotification(n, fail));
  }
  if (field("period") !== undefined) {
    spec.period = checkPeriod(field("period"), fail);
  }
  if (field("priority") !== undefined) {
    spec.priority = checkPriority(field("priority"), fail);
  }
  if (field("systems") !== undefined) {
    spec.systems = checkSystems(field("systems"), fail);
  }
  if (field("is-active") !== undefined) {
    if (typeof field("is-active") !== "boolean") {
      fail(`field "is-active" is not a boolean`);
    }
    spec.isActive = field("is-active") as boolean;
  }
  return checkNoNul(spec, fail);
}

const SPEC_KEYS = [
  "name",
  "build",
  "channels",
  "build-outputs",
  "notifications",
  "period",
  "priority",
  "systems",
  "is-active",
];
const CHANNEL_KEYS = ["name", "url", "branch", "commit", "introduction"];
const BUILD_OUTPUT_KEYS = ["job", "type", "output", "path"];
const EMAIL_KEYS = ["type", "from", "to", "server"];

/**
 * Refuses a key outside `known`: a misspelt or foreign field (such as the
 * Scheme spelling "is-active?") would otherwise be dropped without a word,
 * leaving the field at its default.
 */
function checkKeys(
  value: Record<string, unknown>,
  known: string[],
  what: string,
  fail: Fail,
): void {
  const unknown = Object.keys(value).find((key) => !known.includes(key));
  if (unknown !== undefined) {
    fail(`unknown ${what} field ${show(unknown)}`);
  }
}

function jsonArray(value: unknown, name: string, fail: Fail): unknown[] {
  if (!Array.isArray(value)) {
    return fail(`field ${JSON.stringify(name)} is not an array`);
  }
  return value;
}

function jsonBuild(value: unknown, fail: Fail): BuildSelector {
  if (typeof value === "string") {
    if (SIMPLE_BUILDS.includes(value) || value === "custom") {
      return { type: value, params: [] };
    }
    return fail(`field "build" names an unknown build type ${show(value)}`);
  }
  if (isObject(value)) {
    const keys = Object.keys(value);
    if (keys.length === 1 && BUILDS_WITH_PARAMS.includes(keys[0])) {
      const params = value[keys[0]];
      if (Array.isArray(params) && params.every((p) => typeof p === "string")) {
        return {
          type: keys[0],
          params: keys[0] === "custom"
            ? params.map((module) => checkModuleName(module, fail))
            : params,
        };
      }
    }
  }
  return fail(`field "build" is not a build type: ${show(value)}`);
}

function jsonChannel(value: unknown, fail: Fail): Channel {
  if (!isObject(value)) return fail(`field "channels" has a non-object`);
  checkKeys(value, CHANNEL_KEYS, "channel", fail);
  const commit = value.commit ?? false;
  let introduction: ChannelIntroduction | null = null;
  if (value.introduction !== undefined && value.introduction !== null) {
    const intro = value.introduction;
    if (!isObject(intro)) return fail(`field "introduction" is not an object`);
    introduction = {
      commit: checkString(intro.commit, "commit", fail),
      signer: formatFingerprint(intro.signer, fail),
    };
  } else if (value.name === "guix" && value.url === defaultGuixChannel().url) {
    introduction = defaultGuixChannel().introduction;
  }
  return checkChannel({
    name: nonEmpty(value.name, "name", fail),
    url: nonEmpty(value.url, "url", fail),
    branch: checkString(value.branch ?? "master", "branch", fail),
    commit: commit === false ? null : checkString(commit, "commit", fail),
    introduction,
  }, fail);
}

function jsonNotification(value: unknown, fail: Fail): Record<string, string> {
  if (isObject(value) && value.type === "mastodon") {
    checkKeys(value, ["type"], "mastodon notification", fail);
    return { type: "mastodon" };
  }
  if (isObject(value) && value.type === "email") {
    checkKeys(value, EMAIL_KEYS, "email notification", fail);
    return {
      type: "email",
      ...checkEmailFields({
        from: checkString(value.from, "from", fail),
        to: checkString(value.to, "to", fail),
        server: checkString(value.server, "server", fail),
      }, fail),
    };
  }
  return fail(`field "notifications" has an unknown entry ${show(value)}`);
}
