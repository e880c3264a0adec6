// Reads Cuirass specification files: the declarative subset of the Scheme
// such files contain (cuirass.md 5.1-5.3), evaluated without Guile.

import { type Datum, isSym, Sym } from "../sexp/datum.ts";
import { positionOf, readAllSexps, SexpSyntaxError } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";
import type {
  BuildOutputSpec,
  BuildSelector,
  Channel,
  ChannelIntroduction,
  Specification,
} from "../store/types.ts";

/** A specification that cannot be read, located in its file. */
export class SpecError extends Error {
  file: string;
  /** 1-based; 0 when the input has no lines (JSON). */
  line: number;
  column: number;

  constructor(
    message: string,
    where: { file: string; line: number; column: number },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "SpecError";
    this.file = where.file;
    this.line = where.line;
    this.column = where.column;
  }
}

const SIMPLE_BUILDS = [
  "all",
  "core",
  "guix",
  "hello",
  "images",
  "system-tests",
  "tarball",
];
const BUILDS_WITH_PARAMS = ["packages", "channels", "manifests", "custom"];
const GUIX_SIGNER = "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA";
const MAX_FORM = 60;

/** The channel Cuirass builds when a specification names none. */
function defaultGuixChannel(): Channel {
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

/**
 * Reads the specifications that the Scheme `text` of `file` evaluates to.
 * Supports `list`, `cons`, `cons*`, `append`, quote and quasiquote, the
 * `specification`, `channel`, `build-output`, `email` and `mastodon`
 * records, `make-channel-introduction`, `openpgp-fingerprint`,
 * `%default-guix-channel`, `%default-channels`, `use-modules` (ignored) and
 * `define` of values used later.
 *
 * @throws {SpecError} for syntax errors, forms outside that subset, and
 * invalid field values.
 */
export function readSpecifications(
  text: string,
  file: string,
): Specification[] {
  let forms: Datum[];
  try {
    forms = readAllSexps(text, { scheme: true, positions: true });
  } catch (error) {
    if (!(error instanceof SexpSyntaxError)) throw error;
    const detail = error.message.replace(
      /^Cannot read s-expression( at [0-9:]+)?: /,
      "",
    );
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(file)
      } at ${error.line}:${error.column}: ${detail}`,
      { file, line: error.line, column: error.column },
      { cause: error },
    );
  }
  return new Evaluator(file).run(forms);
}

/**
 * Reads the specification file at `path`.
 *
 * @throws {SpecError} as `readSpecifications` does.
 */
export async function readSpecificationFile(
  path: string,
): Promise<Specification[]> {
  return readSpecifications(await Deno.readTextFile(path), path);
}

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
  const field = (name: string) => value[name];

  const spec = defaults();
  spec.name = checkName(field("name"), fail);
  if (field("build") !== undefined) {
    spec.build = jsonBuild(field("build"), fail);
  }
  if (field("channels") !== undefined) {
    spec.channels = jsonArray(field("channels"), "channels", fail)
      .map((c) => jsonChannel(c, fail));
  }
  if (field("build-outputs") !== undefined) {
    spec.buildOutputs = jsonArray(field("build-outputs"), "build-outputs", fail)
      .map((o) => {
        if (!isObject(o)) return fail(`field "build-outputs" has a non-object`);
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
  return spec;
}

function defaults(): Specification {
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
type Fail = (what: string) => never;

function checkName(value: unknown, fail: Fail): string {
  if (typeof value !== "string" || value === "") {
    return fail(`field "name" is not a non-empty string`);
  }
  return value;
}

function checkPriority(value: unknown, fail: Fail): number {
  if (
    !Number.isInteger(value) || (value as number) < 0 || (value as number) > 9
  ) {
    return fail(
      `field "priority" is not an integer from 0 to 9: ${show(value)}`,
    );
  }
  return value as number;
}

function checkPeriod(value: unknown, fail: Fail): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) {
    return fail(`field "period" is not a non-negative integer: ${show(value)}`);
  }
  return value as number;
}

function checkSystems(value: unknown, fail: Fail): string[] {
  if (
    !Array.isArray(value) || value.length === 0 ||
    !value.every((s) => typeof s === "string" && s !== "")
  ) {
    return fail(`field "systems" is not a non-empty list of strings`);
  }
  return value as string[];
}

function checkString(value: unknown, name: string, fail: Fail): string {
  if (typeof value !== "string") {
    return fail(
      `field ${JSON.stringify(name)} is not a string: ${show(value)}`,
    );
  }
  return value;
}

function buildOutput(
  fields: Record<string, unknown>,
  fail: Fail,
): BuildOutputSpec {
  return {
    job: checkString(fields.job, "job", fail),
    type: checkString(fields.type, "type", fail),
    output: checkString(fields.output, "output", fail),
    path: checkString(fields.path, "path", fail),
  };
}

// Guix stores fingerprints as bytes and prints them as ten groups of four
// upper-case hex digits, with two spaces in the middle.
function formatFingerprint(text: unknown, fail: Fail): string {
  const hex = typeof text === "string" ? text.replace(/\s+/g, "") : "";
  if (!/^[0-9a-fA-F]{40}$/.test(hex)) {
    return fail(`fingerprint ${show(text)} is not 40 hexadecimal digits`);
  }
  const groups = hex.toUpperCase().match(/.{4}/g)!;
  return groups.slice(0, 5).join(" ") + "  " + groups.slice(5).join(" ");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
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
        return { type: keys[0], params };
      }
    }
  }
  return fail(`field "build" is not a build type: ${show(value)}`);
}

function jsonChannel(value: unknown, fail: Fail): Channel {
  if (!isObject(value)) return fail(`field "channels" has a non-object`);
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
  return {
    name: nonEmpty(value.name, "name", fail),
    url: nonEmpty(value.url, "url", fail),
    branch: checkString(value.branch ?? "master", "branch", fail),
    commit: commit === false ? null : checkString(commit, "commit", fail),
    introduction,
  };
}

function jsonNotification(value: unknown, fail: Fail): Record<string, string> {
  if (isObject(value) && value.type === "mastodon") return { type: "mastodon" };
  if (isObject(value) && value.type === "email") {
    return {
      type: "email",
      from: checkString(value.from, "from", fail),
      to: checkString(value.to, "to", fail),
      server: checkString(value.server, "server", fail),
    };
  }
  return fail(`field "notifications" has an unknown entry ${show(value)}`);
}

function nonEmpty(value: unknown, name: string, fail: Fail): string {
  const text = checkString(value, name, fail);
  if (text === "") fail(`field ${JSON.stringify(name)} is empty`);
  return text;
}

function show(value: unknown): string {
  let text: string;
  try {
    text = value instanceof Sym || typeof value === "bigint"
      ? String(value)
      : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_FORM ? text.slice(0, MAX_FORM) + "..." : text;
}

// ---------------------------------------------------------------------------
// The evaluator for the Scheme subset.

/** A record built by a constructor form, e.g. `(channel ...)`. */
class Rec {
  constructor(readonly kind: string, readonly value: unknown) {}
}

type Value = string | number | bigint | boolean | Sym | Rec | Value[];

const RECORD_FIELDS: Record<string, string[]> = {
  specification: [
    "name",
    "build",
    "channels",
    "build-outputs",
    "notifications",
    "period",
    "priority",
    "systems",
    "is-active?",
  ],
  channel: ["name", "url", "branch", "commit", "introduction"],
  "build-output": ["job", "type", "output", "path"],
  email: ["from", "to", "server"],
  mastodon: [],
};

class Evaluator {
  #file: string;
  #bindings = new Map<string, Value>([
    ["%default-guix-channel", new Rec("channel", defaultGuixChannel())],
    ["%default-channels", [new Rec("channel", defaultGuixChannel())]],
  ]);

  constructor(file: string) {
    this.#file = file;
  }

  run(forms: Datum[]): Specification[] {
    let result: Value | undefined;
    let last: Datum | undefined;
    for (const form of forms) {
      last = form;
      if (Array.isArray(form) && isSym(form[0], "use-modules")) continue;
      if (Array.isArray(form) && isSym(form[0], "define")) {
        this.#define(form);
        result = undefined;
        continue;
      }
      result = this.#eval(form, undefined);
    }
    const at = Array.isArray(last) ? last : undefined;
    if (result === undefined) {
      return this.#fail(
        at,
        "the file does not end with a list of specifications",
      );
    }
    if (
      !Array.isArray(result) ||
      !result.every((r) => r instanceof Rec && r.kind === "specification")
    ) {
      return this.#fail(at, "the last form is not a list of specifications");
    }
    const specs = result.map((r) => (r as Rec).value as Specification);
    const seen = new Set<string>();
    for (const spec of specs) {
      if (seen.has(spec.name)) {
        this.#fail(
          at,
          `two specifications are named ${JSON.stringify(spec.name)}`,
        );
      }
      seen.add(spec.name);
    }
    return specs;
  }

  #define(form: Datum[]): void {
    const [, name, expr] = form;
    if (form.length !== 3 || !(name instanceof Sym)) {
      this.#fail(form, `unsupported form ${showForm(form)}`);
    }
    this.#bindings.set(name.name, this.#eval(expr, form));
  }

  #eval(expr: Datum, at: Datum[] | undefined): Value {
    if (!Array.isArray(expr)) {
      if (!(expr instanceof Sym)) return expr;
      const bound = this.#bindings.get(expr.name);
      if (bound === undefined) {
        return this.#fail(at, `unbound variable ${JSON.stringify(expr.name)}`);
      }
      return bound;
    }
    const [head, ...args] = expr;
    const name = head instanceof Sym ? head.name : undefined;
    switch (name) {
      case "quote":
        this.#arity(expr, 1);
        return args[0];
      case "quasiquote":
        this.#arity(expr, 1);
        return this.#quasi(args[0], expr);
      case "list":
        return args.map((a) => this.#eval(a, expr));
      case "cons":
      case "cons*": {
        if (name === "cons") this.#arity(expr, 2);
        if (args.length === 0) {
          return this.#fail(expr, `unsupported form ${showForm(expr)}`);
        }
        const values = args.map((a) => this.#eval(a, expr));
        const tail = values.pop()!;
        if (!Array.isArray(tail)) {
          return this.#fail(expr, `${name} needs a list as last argument`);
        }
        return [...values, ...tail];
      }
      case "append": {
        const out: Value[] = [];
        for (const a of args) {
          const value = this.#eval(a, expr);
          if (!Array.isArray(value)) {
            return this.#fail(expr, "append needs lists");
          }
          out.push(...value);
        }
        return out;
      }
      case "string-append": {
        const parts = args.map((a) => this.#eval(a, expr));
        if (!parts.every((p) => typeof p === "string")) {
          return this.#fail(expr, "string-append needs strings");
        }
        return parts.join("");
      }
      case "openpgp-fingerprint": {
        this.#arity(expr, 1);
        const fail = (what: string) => this.#fail(expr, what);
        return new Rec(
          "fingerprint",
          formatFingerprint(this.#eval(args[0], expr), fail),
        );
      }
      case "make-channel-introduction": {
        this.#arity(expr, 2);
        const commit = this.#eval(args[0], expr);
        const signer = this.#eval(args[1], expr);
        if (
          typeof commit !== "string" ||
          !(signer instanceof Rec && signer.kind === "fingerprint")
        ) {
          return this.#fail(expr, `unsupported form ${showForm(expr)}`);
        }
        const intro: ChannelIntroduction = {
          commit,
          signer: signer.value as string,
        };
        return new Rec("introduction", intro);
      }
    }
    if (name !== undefined && name in RECORD_FIELDS) {
      return this.#record(name, expr);
    }
    return this.#fail(expr, `unsupported form ${showForm(expr)}`);
  }

  #arity(expr: Datum[], count: number): void {
    if (expr.length !== count + 1) {
      this.#fail(expr, `unsupported form ${showForm(expr)}`);
    }
  }

  // `(a ,b ,@c)`: one level of quasiquote; nested levels are not supported.
  #quasi(template: Datum, at: Datum[]): Value {
    if (!Array.isArray(template)) return template;
    if (isSym(template[0], "unquote") && template.length === 2) {
      return this.#eval(template[1], template);
    }
    if (isSym(template[0], "quasiquote")) {
      return this.#fail(template, "nested quasiquote is not supported");
    }
    const out: Value[] = [];
    for (const item of template) {
      if (
        Array.isArray(item) && isSym(item[0], "unquote-splicing") &&
        item.length === 2
      ) {
        const spliced = this.#eval(item[1], item);
        if (!Array.isArray(spliced)) {
          return this.#fail(item, "unquote-splicing needs a list");
        }
        out.push(...spliced);
      } else {
        out.push(this.#quasi(item, Array.isArray(item) ? item : at));
      }
    }
    return out;
  }

  // A record constructor: `(kind (field expr) ...)` with known fields.
  #record(kind: string, expr: Datum[]): Rec {
    const allowed = RECORD_FIELDS[kind];
    const fields = new Map<string, { value: Value; at: Datum[] }>();
    for (const item of expr.slice(1)) {
      if (
        !Array.isArray(item) || item.length !== 2 || !(item[0] instanceof Sym)
      ) {
        return this.#fail(
          Array.isArray(item) ? item : expr,
          `unsupported ${kind} field ${showForm(item)}`,
        );
      }
      const name = item[0].name;
      if (!allowed.includes(name)) {
        return this.#fail(
          item,
          `unknown ${kind} field ${JSON.stringify(name)}`,
        );
      }
      if (fields.has(name)) {
        return this.#fail(
          item,
          `${kind} field ${JSON.stringify(name)} given twice`,
        );
      }
      fields.set(name, { value: this.#eval(item[1], item), at: item });
    }

    const failAt = (name: string) => (what: string): never =>
      this.#fail(fields.get(name)?.at ?? expr, what);
    const get = (name: string) => fields.get(name)?.value;
    switch (kind) {
      case "specification":
        return new Rec(kind, this.#specification(get, failAt));
      case "channel": {
        const name = get("name");
        const intro = get("introduction");
        const commit = get("commit") ?? false;
        if (
          intro !== undefined && intro !== false &&
          !(intro instanceof Rec && intro.kind === "introduction")
        ) {
          failAt("introduction")(
            `field "introduction" is not a channel introduction`,
          );
        }
        const channel: Channel = {
          name: nonEmpty(
            name instanceof Sym ? name.name : name,
            "name",
            failAt("name"),
          ),
          url: nonEmpty(get("url"), "url", failAt("url")),
          branch: checkString(
            get("branch") ?? "master",
            "branch",
            failAt("branch"),
          ),
          commit: commit === false
            ? null
            : checkString(commit, "commit", failAt("commit")),
          introduction: intro instanceof Rec
            ? intro.value as ChannelIntroduction
            : null,
        };
        return new Rec(kind, channel);
      }
      case "build-output": {
        const values = Object.fromEntries(
          [...fields].map(([k, v]) => [k, v.value]),
        );
        return new Rec(
          kind,
          buildOutput(
            { output: "out", path: "", ...values },
            (what) => this.#fail(expr, what),
          ),
        );
      }
      case "email":
        return new Rec(kind, {
          type: "email",
          from: checkString(get("from"), "from", failAt("from")),
          to: checkString(get("to"), "to", failAt("to")),
          server: checkString(get("server"), "server", failAt("server")),
        });
      default:
        return new Rec(kind, { type: kind });
    }
  }

  #specification(
    get: (name: string) => Value | undefined,
    failAt: (name: string) => Fail,
  ): Specification {
    const spec = defaults();
    const name = get("name");
    spec.name = checkName(
      name instanceof Sym ? name.name : name,
      failAt("name"),
    );
    const build = get("build");
    if (build !== undefined) spec.build = this.#build(build, failAt("build"));
    const channels = get("channels");
    if (channels !== undefined) {
      spec.channels = this.#records(
        channels,
        "channel",
        "channels",
        failAt("channels"),
      ) as Channel[];
    }
    const outputs = get("build-outputs");
    if (outputs !== undefined) {
      spec.buildOutputs = this.#records(
        outputs,
        "build-output",
        "build-outputs",
        failAt("build-outputs"),
      ) as BuildOutputSpec[];
    }
    const notifications = get("notifications");
    if (notifications !== undefined) {
      if (
        !Array.isArray(notifications) ||
        !notifications.every((n) =>
          n instanceof Rec && (n.kind === "email" || n.kind === "mastodon")
        )
      ) {
        failAt("notifications")(
          `field "notifications" is not a list of email or mastodon records`,
        );
      }
      spec.notifications = (notifications as Rec[]).map((n) =>
        n.value as Record<string, string>
      );
    }
    const period = get("period");
    if (period !== undefined) {
      spec.period = checkPeriod(period, failAt("period"));
    }
    const priority = get("priority");
    if (priority !== undefined) {
      spec.priority = checkPriority(priority, failAt("priority"));
    }
    const systems = get("systems");
    if (systems !== undefined) {
      spec.systems = checkSystems(systems, failAt("systems"));
    }
    const active = get("is-active?");
    if (active !== undefined) {
      if (typeof active !== "boolean") {
        failAt("is-active?")(`field "is-active?" is not a boolean`);
      }
      spec.isActive = active as boolean;
    }
    return spec;
  }

  #records(value: Value, kind: string, field: string, fail: Fail): unknown[] {
    if (
      !Array.isArray(value) ||
      !value.every((v) => v instanceof Rec && v.kind === kind)
    ) {
      return fail(
        `field ${JSON.stringify(field)} is not a list of ${kind} records`,
      );
    }
    return value.map((v) => (v as Rec).value);
  }

  // `'all`, `'(packages "a" "b")`, `(cons 'channels (list 'guix))`, ...
  #build(value: Value, fail: Fail): BuildSelector {
    if (value instanceof Sym && SIMPLE_BUILDS.includes(value.name)) {
      return { type: value.name, params: [] };
    }
    if (
      Array.isArray(value) && value[0] instanceof Sym &&
      BUILDS_WITH_PARAMS.includes(value[0].name)
    ) {
      const type = value[0].name;
      const params: string[] = [];
      for (const p of value.slice(1)) {
        if (
          type === "custom" && Array.isArray(p) &&
          p.every((m) => m instanceof Sym)
        ) {
          params.push(writeSexp(p as Datum[]));
        } else if (typeof p === "string" && type !== "custom") {
          params.push(p);
        } else if (
          p instanceof Sym && (type === "channels" || type === "packages")
        ) {
          params.push(p.name);
        } else {
          return fail(`field "build" has an invalid ${type} entry ${show(p)}`);
        }
      }
      return { type, params };
    }
    return fail(`field "build" is not a build type: ${showValue(value)}`);
  }

  #fail(at: Datum[] | undefined, what: string): never {
    const position = at === undefined ? undefined : positionOf(at);
    const line = position?.line ?? 1;
    const column = position?.column ?? 1;
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(this.#file)
      } at ${line}:${column}: ${what}`,
      { file: this.#file, line, column },
    );
  }
}

function showForm(form: Datum): string {
  const text = writeSexp(form);
  return text.length > MAX_FORM ? text.slice(0, MAX_FORM) + "..." : text;
}

function showValue(value: Value): string {
  if (value instanceof Rec) return `a ${value.kind} record`;
  if (Array.isArray(value) && value.some((v) => v instanceof Rec)) {
    return "a list of records";
  }
  return showForm(value as Datum);
}
