// The evaluator for the declarative subset of Scheme that Cuirass
// specification files are written in, without Guile.

import { type Datum, isSym, Sym } from "../sexp/datum.ts";
import { positionOf } from "../sexp/read.ts";
import { writeSexp } from "../sexp/write.ts";
import type {
  BuildOutputSpec,
  BuildSelector,
  Channel,
  ChannelIntroduction,
  Specification,
} from "../store/types.ts";
import { SpecError, type SpecErrorKind } from "./spec_error.ts";
import {
  buildOutput,
  BUILDS_WITH_PARAMS,
  checkChannel,
  checkChannelNames,
  checkEmailFields,
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
  MAX_FORM,
  nonEmpty,
  show,
  SIMPLE_BUILDS,
} from "./spec_fields.ts";

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

/** Evaluates the top-level forms of one file into specifications. */
export class SchemeSubsetEvaluator {
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
      checkNoNul(
        spec,
        (what) =>
          this.#fail(at, `specification ${JSON.stringify(spec.name)} ${what}`),
      );
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
      this.#fail(form, `unsupported form ${showForm(form)}`, "unsupported");
    }
    this.#bindings.set(name.name, this.#eval(expr, form));
  }

  #eval(expr: Datum, at: Datum[] | undefined): Value {
    if (!Array.isArray(expr)) {
      if (!(expr instanceof Sym)) return expr;
      const bound = this.#bindings.get(expr.name);
      if (bound === undefined) {
        return this.#fail(
          at,
          `unbound variable ${JSON.stringify(expr.name)}`,
          "unsupported",
        );
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
          return this.#fail(
            expr,
            `unsupported form ${showForm(expr)}`,
            "unsupported",
          );
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
          return this.#fail(
            expr,
            `unsupported form ${showForm(expr)}`,
            "unsupported",
          );
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
    return this.#fail(
      expr,
      `unsupported form ${showForm(expr)}`,
      "unsupported",
    );
  }

  #arity(expr: Datum[], count: number): void {
    if (expr.length !== count + 1) {
      this.#fail(expr, `unsupported form ${showForm(expr)}`, "unsupported");
    }
  }

  // `(a ,b ,@c)`: one level of quasiquote; nested levels are not supported.
  #quasi(template: Datum, at: Datum[]): Value {
    if (!Array.isArray(template)) return template;
    if (isSym(template[0], "unquote") && template.length === 2) {
      return this.#eval(template[1], template);
    }
    if (isSym(template[0], "quasiquote")) {
      return this.#fail(
        template,
        "nested quasiquote is not supported",
        "unsupported",
      );
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
        return new Rec(
          kind,
          checkChannel(channel, (what) => this.#fail(expr, what)),
        );
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
          ...checkEmailFields({
            from: checkString(get("from"), "from", failAt("from")),
            to: checkString(get("to"), "to", failAt("to")),
            server: checkString(get("server"), "server", failAt("server")),
          }, (what) => this.#fail(expr, `email ${what}`)),
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
      spec.channels = checkSomeChannel(
        checkChannelNames(
          this.#records(
            channels,
            "channel",
            "channels",
            failAt("channels"),
          ) as Channel[],
          failAt("channels"),
        ),
        spec.name,
        failAt("channels"),
      );
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
          type === "custom" && Array.isArray(p) && p.length > 0 &&
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

  #fail(
    at: Datum[] | undefined,
    what: string,
    kind: SpecErrorKind = "invalid",
  ): never {
    const position = at === undefined ? undefined : positionOf(at);
    const line = position?.line ?? 1;
    const column = position?.column ?? 1;
    throw new SpecError(
      `Cannot read specification ${
        JSON.stringify(this.#file)
      } at ${line}:${column}: ${what}`,
      { file: this.#file, line, column },
      { kind },
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
