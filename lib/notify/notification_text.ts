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
  /** The body for a Mastodon status: names cannot mention or tag anyone. */
  status: string;
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
  const body = (name: (value: string) => string) =>
    `Job ${name(build.jobName)} of specification ${
      name(build.specification)
    } (${name(build.system)}) is ${state}.\nBuild details and log: ${url}\n`;
  return {
    subject,
    text: body(oneLine),
    url,
    state,
    status: body((value) => defuseMentions(oneLine(value))),
  };
}

/**
 * Mastodon turns `@user@host` into a mention that notifies that user, and
 * `#word` into a hashtag: a job name must not reach people that way. A zero
 * width space after the sign breaks both and shows nothing.
 */
function defuseMentions(value: string): string {
  return value.replace(/[@#＠＃]/g, "$&\u200b");
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
