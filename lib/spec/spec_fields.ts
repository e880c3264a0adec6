// Defaults and validators of specification fields (cuirass.md 5.1), shared
// by the Scheme and JSON readers.

import { isSym, Sym } from "../sexp/datum.ts";
import { readSexp } from "../sexp/read.ts";
import { envelopeAddress, splitAddresses } from "../notify/email_message.ts";
import { parseMailServer } from "../notify/mail_server.ts";
import { writeSexp } from "../sexp/write.ts";
import { isSystemName } from "../guix/system_name.ts";
import { BRANCH_REGEXP, COMMIT_REGEXP, isFetchableUrl } from "../git/git.ts";
import { describeNul, findNul } from "../nul_text.ts";
import type {
  BuildOutputSpec,
  Channel,
  Specification,
} from "../store/types.ts";

export const SIMPLE_BUILDS = [
  "all",
  "core",
  "guix",
  "hello",
  "images",
  "system-tests",
  "tarball",
];
export const BUILDS_WITH_PARAMS = [
  "custom",
  "channels",
  "packages",
  "manifests",
];
/** Every build type a specification may name (Cuirass's `%build-types`). */
export const BUILD_TYPES = [...SIMPLE_BUILDS, ...BUILDS_WITH_PARAMS];
const GUIX_SIGNER = "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA";
export const MAX_FORM = 60;
/** The channel Cuirass builds when a specification names none. */
export function defaultGuixChannel(): Channel {
  return {
    name: "guix",
    url: "https://git.guix.gnu.org/guix.git",
    branch: "master",
    commit: null,
    introduction: {
      commit: "9edb3f66fd807b096b48283debdcddccfea34bad",
      signer: GUIX_SIGNER,
    },
  };
}

/** A specification with every field at its default and no name. */
export function defaults(): Specification {
  return {
    name: "",
    build: { type: "all", params: [] },
    channels: [defaultGuixChannel()],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 9,
    systems: ["x86_64-linux"],
    isActive: true,
  };
}
// Validators shared by the Scheme and JSON readers; `fail` adds location.
export type Fail = (what: string) => never;

/** The longest specification name. */
export const MAX_NAME_LENGTH = 100;
/**
 * What a specification name may hold. It becomes a path segment of the web
 * interface and API (`/jobset/NAME`), a log field and an HTML text, so a
 * slash, markup or a control character would make the specification
 * unreachable or its pages garbled.
 */
export const SPEC_NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

export function checkName(value: unknown, fail: Fail): string {
  if (typeof value !== "string" || value === "") {
    return fail(`field "name" is not a non-empty string`);
  }
  if (value.length > MAX_NAME_LENGTH) {
    return fail(
      `field "name" is longer than ${MAX_NAME_LENGTH} characters: ${
        show(value)
      }`,
    );
  }
  if (!SPEC_NAME_REGEXP.test(value)) {
    return fail(
      `field "name" is not a name of letters, digits, ".", "_", "+" and "-": ${
        show(value)
      }`,
    );
  }
  return value;
}

export function checkPriority(value: unknown, fail: Fail): number {
  if (
    !Number.isInteger(value) || (value as number) < 0 || (value as number) > 9
  ) {
    return fail(
      `field "priority" is not an integer from 0 to 9: ${show(value)}`,
    );
  }
  return value as number;
}

/**
 * The longest polling period, in seconds: a year. A longer one is a slip
 * (milliseconds written for seconds, say), whichever way it comes.
 */
export const MAX_PERIOD_SECONDS = 366 * 24 * 3600;

export function checkPeriod(value: unknown, fail: Fail): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    return fail(`field "period" is not a non-negative integer: ${show(value)}`);
  }
  if ((value as number) > MAX_PERIOD_SECONDS) {
    return fail(
      `field "period" is over a year (${MAX_PERIOD_SECONDS} seconds): ${
        show(value)
      }`,
    );
  }
  return value as number;
}

/**
 * `channels` if there is one at least: a specification without a channel
 * has nothing to evaluate, and each of its evaluations would fail.
 */
export function checkSomeChannel(
  channels: Channel[],
  specName: string,
  fail: Fail,
): Channel[] {
  if (channels.length === 0) {
    return fail(
      `specification ${
        show(specName)
      } field "channels" is empty: at least one channel is needed`,
    );
  }
  return channels;
}

export function checkSystems(value: unknown, fail: Fail): string[] {
  if (
    !Array.isArray(value) || value.length === 0 ||
    !value.every((s) => typeof s === "string" && s !== "")
  ) {
    return fail(`field "systems" is not a non-empty list of strings`);
  }
  // A system names the channels file of its evaluation and is passed to
  // the evaluator: only the shape of a Guix system, such as x86_64-linux.
  const odd = value.find((system) => !isSystemName(system));
  if (odd !== undefined) {
    return fail(`field "systems" holds ${show(odd)}, not a system name`);
  }
  // Each system is evaluated on its own, into a file named after it: a
  // system named twice was evaluated twice at once, into the same file.
  const twice = value.find((system, index) => value.indexOf(system) !== index);
  if (twice !== undefined) {
    return fail(`field "systems" names ${show(twice)} twice`);
  }
  return value as string[];
}

/**
 * `channels` if no two share a name. Polling pins each channel at the
 * commit fetched for its name, so a second channel of the same name would
 * be evaluated at the first one's commit; time-machine refuses them too.
 */
export function checkChannelNames(channels: Channel[], fail: Fail): Channel[] {
  const seen = new Set<string>();
  for (const channel of channels) {
    if (seen.has(channel.name)) {
      return fail(
        `field "channels" names channel ${show(channel.name)} twice`,
      );
    }
    seen.add(channel.name);
  }
  return channels;
}

/**
 * A custom build's module as stored: the written name of a Guile module,
 * such as `(gnu ci)`, a non-empty list of symbols. Guix resolves each
 * module of `(custom MODULE ...)` by that name.
 */
export function checkModuleName(value: unknown, fail: Fail): string {
  let datum: unknown;
  try {
    datum = typeof value === "string" ? readSexp(value) : undefined;
  } catch {
    datum = undefined;
  }
  if (
    !Array.isArray(datum) || datum.length === 0 ||
    !datum.every((part) => isSym(part))
  ) {
    return fail(
      `field "build" has a custom module ${
        show(value)
      } that is not a module name such as "(gnu ci)"`,
    );
  }
  return writeSexp(datum);
}

/**
 * `channel` if polling can fetch it: its URL, branch and commit are given
 * to git, which Lorica refuses at each poll when they could be read as an
 * option or are not a branch name or a commit id (Guix also takes a tag in
 * `commit`; Lorica does not), so such a channel is refused here, naming the
 * value, rather than accepted and failing every evaluation.
 */
export function checkChannel(channel: Channel, fail: Fail): Channel {
  // A NUL is named with its field by checkNoNul, on the whole specification.
  if (findNul(channel) !== null) return channel;
  if (!isFetchableUrl(channel.url)) {
    return fail(
      `channel ${show(channel.name)} has a URL git cannot be given: ${
        show(channel.url)
      }`,
    );
  }
  if (!BRANCH_REGEXP.test(channel.branch)) {
    return fail(
      `channel ${
        show(channel.name)
      } has a branch that is not a branch name (letters, digits, ".", "_", "/", "+", "-"; no leading "-", no ".."): ${
        show(channel.branch)
      }`,
    );
  }
  if (channel.commit !== null && !COMMIT_REGEXP.test(channel.commit)) {
    return fail(
      `channel ${
        show(channel.name)
      } has a commit that is not a commit id (7 to 64 lower-case hexadecimal digits; tags are not supported): ${
        show(channel.commit)
      }`,
    );
  }
  return channel;
}

/**
 * An email sink's fields if the sender can use them: a `server` URL it
 * knows (smtp, smtp+starttls, smtps, sendmail; no credentials) and
 * `local@domain` addresses. Read as they were, they were refused at every
 * notification, long after the specification was accepted.
 */
export function checkEmailFields(
  fields: { from: string; to: string; server: string },
  fail: Fail,
): { from: string; to: string; server: string } {
  const address = (field: string, text: string) => {
    try {
      envelopeAddress(text);
    } catch {
      fail(
        `field ${JSON.stringify(field)} holds ${
          show(text)
        }, not an address such as "ci@example.org"`,
      );
    }
  };
  // A NUL is named with its field by checkNoNul, on the whole specification.
  if (findNul(fields) !== null) return fields;
  address("from", fields.from);
  const recipients = splitAddresses(fields.to);
  if (recipients.length === 0) {
    fail(`field "to" names no recipient: ${show(fields.to)}`);
  }
  for (const recipient of recipients) address("to", recipient);
  try {
    parseMailServer(fields.server);
  } catch (error) {
    fail(`field "server": ${(error as Error).message}`);
  }
  return fields;
}

export function checkString(value: unknown, name: string, fail: Fail): string {
  if (typeof value !== "string") {
    return fail(
      `field ${JSON.stringify(name)} is not a string: ${show(value)}`,
    );
  }
  return value;
}

/**
 * A build output as a file gives it. Its job pattern must be a regular
 * expression and its path one inside the output: either would otherwise
 * be found wrong only at each build's success, and skipped with a warning.
 */
export function buildOutput(
  fields: Record<string, unknown>,
  fail: Fail,
): BuildOutputSpec {
  const spec = {
    job: checkString(fields.job, "job", fail),
    type: checkString(fields.type, "type", fail),
    output: checkString(fields.output, "output", fail),
    path: checkString(fields.path, "path", fail),
  };
  try {
    new RegExp(spec.job);
  } catch (error) {
    fail(
      `build output job ${show(spec.job)} is not a regular expression: ${
        (error as Error).message
      }`,
    );
  }
  const problem = productPathProblem(spec.path);
  if (problem !== null) {
    fail(`build output path ${show(spec.path)} ${problem}`);
  }
  return spec;
}

/**
 * Why `path`, the file a build output names within its output, can name
 * none there; null when it can (empty: the output itself).
 */
export function productPathProblem(path: string): string | null {
  if (path.startsWith("/")) return "is absolute, not within the output";
  if (path.split("/").includes("..")) {
    return 'climbs out of the output with ".."';
  }
  return null;
}

// Guix stores fingerprints as bytes and prints them as ten groups of four
// upper-case hex digits, with two spaces in the middle.
export function formatFingerprint(text: unknown, fail: Fail): string {
  const hex = typeof text === "string" ? text.replace(/\s+/g, "") : "";
  if (!/^[0-9a-fA-F]{40}$/.test(hex)) {
    return fail(`fingerprint ${show(text)} is not 40 hexadecimal digits`);
  }
  const groups = hex.toUpperCase().match(/.{4}/g)!;
  return groups.slice(0, 5).join(" ") + "  " + groups.slice(5).join(" ");
}

/**
 * `spec` if none of its text holds a NUL character, which PostgreSQL cannot
 * store (SQLite can: refused here, a specification reads the same on
 * both). The field is named as in files (`build-outputs[0].path`).
 */
export function checkNoNul(spec: Specification, fail: Fail): Specification {
  const found = findNul(spec);
  if (found === null) return spec;
  return fail(
    describeNul({
      ...found,
      path: found.path.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`),
    }),
  );
}

/** True for a plain object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A non-empty string field. */
export function nonEmpty(value: unknown, name: string, fail: Fail): string {
  const text = checkString(value, name, fail);
  if (text === "") fail(`field ${JSON.stringify(name)} is empty`);
  return text;
}

/** A value shown in an error message, truncated. */
export function show(value: unknown): string {
  let text: string;
  try {
    // JSON.stringify writes Infinity (a JSON number such as 1e309, once
    // parsed) as null, a value the specification does not hold.
    const bare = value instanceof Sym || typeof value === "bigint" ||
      (typeof value === "number" && !Number.isFinite(value));
    text = bare ? String(value) : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_FORM ? text.slice(0, MAX_FORM) + "..." : text;
}
