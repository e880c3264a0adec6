// The words of a build notification: subject line, body and the details URL.

import { type Build, Weather } from "../store/types.ts";

/** What a notification says about one build. */
export interface NotificationText {
  /** Cuirass's subject, kept word for word: `Build JOB on SPEC is fixed.` */
  subject: string;
  /** A short plain-text body ending with the details URL. */
  text: string;
  /** `<baseUrl>/build/<id>/details`. */
  url: string;
  /** "fixed" or "broken". */
  state: "fixed" | "broken";
}

/**
 * Words the notification for a build whose weather just changed; `baseUrl`
 * is the public address of the web interface ("" gives a relative URL).
 */
export function notificationText(
  build: Build,
  baseUrl: string,
): NotificationText {
  const state = buildState(build);
  const job = oneLine(build.jobName);
  const spec = oneLine(build.specification);
  const url = `${baseUrl.replace(/\/+$/, "")}/build/${build.id}/details`;
  const subject = `Build ${job} on ${spec} is ${state}.`;
  const text = `Job ${job} of specification ${spec} (${
    oneLine(build.system)
  }) is ${state}.\nBuild details and log: ${url}\n`;
  return { subject, text, url, state };
}

/** New success reads "fixed", new failure "broken"; otherwise the status decides. */
function buildState(build: Build): "fixed" | "broken" {
  if (build.weather === Weather.newSuccess) return "fixed";
  if (build.weather === Weather.newFailure) return "broken";
  return build.status === 0 ? "fixed" : "broken";
}

/** Job names come from evaluation: keep control characters out of headers. */
function oneLine(value: string): string {
  // deno-lint-ignore no-control-regex
  return value.replace(/[\x00-\x1f\x7f]+/g, " ").slice(0, 300);
}
