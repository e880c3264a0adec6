// Admin actions over POST: the token check, request bodies, and the routes.

import { HttpError, quoteValue } from "./http_error.ts";
import { parseId } from "./params.ts";
import { specFromForm, specFromJson } from "./spec_input.ts";
import {
  isBrowserForm,
  jsonResponse,
  type Route,
  type RouteContext,
} from "./route_context.ts";
import type { Specification, Store } from "../store/types.ts";

/**
 * What admin routes do. The server passes its own so that cancellations and
 * restarts reach workers; {@link storeActions} covers the rest with the store.
 */
export interface AdminActions {
  /** Creates or replaces a specification. */
  saveSpecification(spec: Specification): Promise<void>;
  /** Deletes a specification with its evaluations and builds; false if unknown. */
  deleteSpecification(name: string): Promise<boolean>;
  /** Cancels a pending build; false when it was not pending. */
  cancelBuild(id: number): Promise<boolean>;
  /** Schedules a build again; false when nothing changed. */
  restartBuild(id: number): Promise<boolean>;
  /** Cancels the pending builds of an evaluation; returns how many. */
  cancelEvaluation(id: number): Promise<number>;
  /** Schedules every build of an evaluation again; returns how many. */
  restartEvaluation(id: number): Promise<number>;
  /**
   * Starts an evaluation of a specification now (without waiting for it),
   * and says what will happen, when it knows.
   * @throws {HttpError} 503 in the default implementation: no evaluator.
   */
  triggerEvaluation(spec: string): Promise<EvaluationTrigger | void>;
}

/** What triggering an evaluation did, as known when the request ends. */
export interface EvaluationTrigger {
  /** False when no evaluation will come of it. */
  triggered: boolean;
  /** Why not, or what comes next, for the admin. */
  note: string;
}

/** The default actions: store updates only, no worker is told anything. */
export function storeActions(store: Store, now: () => number): AdminActions {
  return {
    saveSpecification: (spec) => store.upsertSpecification(spec),
    deleteSpecification: (name) => store.deleteSpecification(name),
    cancelBuild: async (id) => (await store.cancelBuild(id, now())).changed,
    restartBuild: async (id) => (await store.restartBuild(id, now())).changed,
    cancelEvaluation: async (id) =>
      (await store.cancelEvaluation(id, now())).changed,
    restartEvaluation: async (id) =>
      (await store.restartEvaluation(id, now())).changed,
    triggerEvaluation: () =>
      Promise.reject(
        new HttpError(
          503,
          "Cannot trigger evaluation: this server has no evaluator configured",
        ),
      ),
  };
}

/** Largest admin request body, in bytes. */
const MAX_BODY_BYTES = 64 * 1024;
/** The admin routes, all POST. */
export const ADMIN_ROUTES: Route[] = [
  post("/admin/specification/add", (c, b) => saveSpec(c, b, "add")),
  post("/admin/specification/edit", (c, b) => saveSpec(c, b, "edit")),
  post("/admin/specifications/delete/:name", deleteSpec),
  post("/admin/specification/:name/delete", deleteSpec),
  post("/admin/specification/:name/evaluate", triggerEvaluation),
  webHook("/jobset/:name/hook/evaluate", triggerEvaluation),
  post("/admin/build/:id/restart", buildAction("restart")),
  post("/admin/build/:id/cancel", buildAction("cancel")),
  post("/admin/evaluation/:id/cancel", evaluationAction("cancel")),
  post("/admin/evaluation/:id/restart", evaluationAction("restart")),
  post("/admin/evaluation/:id/retry", evaluationAction("restart")),
];

/** A POST body: form fields (repeatable) or a JSON value. */
type Body = { form: URLSearchParams; json: unknown };

function post(
  pattern: string,
  handle: (context: RouteContext, body: Body) => Promise<Response>,
): Route {
  return adminRoute(pattern, async (context) => {
    const body = await readBody(context.request);
    await checkToken(context, body.form);
    return await handle(context, body);
  });
}

/**
 * A route for forges' web hooks, which POST their event's JSON (a push
 * with many commits runs past the admin body limit) and can rarely send
 * a Bearer header: the body is not read, and the token may come in the
 * URL's `token` parameter, as a hook's URL can carry it.
 */
function webHook(
  pattern: string,
  handle: (context: RouteContext) => Promise<Response>,
): Route {
  return adminRoute(pattern, async (context) => {
    await context.request.body?.cancel();
    const given = new URL(context.request.url).searchParams.get("token");
    await checkToken(
      context,
      new URLSearchParams(given === null ? {} : { token: given }),
    );
    return await handle(context);
  });
}

/** A POST route answering JSON (or, for a browser form, a page). */
function adminRoute(
  pattern: string,
  handle: (context: RouteContext) => Promise<Response>,
): Route {
  return { pattern, kind: "json", method: "POST", handle };
}

/**
 * Checks the admin token from `Authorization: Bearer` or the `token` field.
 * @throws {HttpError} 403 when admin is disabled or the token is wrong, 401 when it is missing.
 */
export async function checkToken(
  context: RouteContext,
  form: URLSearchParams,
): Promise<void> {
  const expected = context.options.adminToken;
  if (expected === null || expected === "") {
    throw new HttpError(
      403,
      "Cannot run admin action: admin actions are disabled (no admin token configured)",
    );
  }
  const header = context.request.headers.get("authorization");
  let given: string | null = null;
  if (header !== null) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match === null) {
      throw new HttpError(
        401,
        "Cannot run admin action: the Authorization header is not a Bearer token",
      );
    }
    given = match[1];
  } else {
    given = form.get("token");
  }
  if (given === null || given === "") {
    throw new HttpError(401, "Cannot run admin action: no admin token given");
  }
  if (!await sameSecret(given, expected)) {
    throw new HttpError(403, "Cannot run admin action: wrong admin token");
  }
}

/** Compares two secrets in time independent of where they differ. */
export async function sameSecret(a: string, b: string): Promise<boolean> {
  // Hashing first makes both inputs the same length, so the loop below
  // runs the same number of steps whatever the guess.
  const encoder = new TextEncoder();
  const [x, y] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(a)),
    crypto.subtle.digest("SHA-256", encoder.encode(b)),
  ]);
  const left = new Uint8Array(x);
  const right = new Uint8Array(y);
  let difference = 0;
  for (let i = 0; i < left.length; i++) difference |= left[i] ^ right[i];
  return difference === 0;
}

/**
 * Reads a bounded POST body as form fields or JSON.
 * @throws {HttpError} 413 when too large, 400 when unreadable.
 */
async function readBody(request: Request): Promise<Body> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) {
    throw new HttpError(
      413,
      `Cannot read request body: over ${MAX_BODY_BYTES} bytes`,
    );
  }
  const bytes = await readLimited(request);
  const type = (request.headers.get("content-type") ?? "").toLowerCase();
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (type.startsWith("application/json")) {
    try {
      return { form: new URLSearchParams(), json: JSON.parse(text) };
    } catch {
      throw new HttpError(400, "Cannot read request body: invalid JSON");
    }
  }
  if (type.startsWith("multipart/form-data")) {
    throw new HttpError(
      415,
      "Cannot read request body: send application/x-www-form-urlencoded or JSON",
    );
  }
  return { form: new URLSearchParams(text), json: null };
}

async function readLimited(request: Request): Promise<Uint8Array> {
  if (request.body === null) return new Uint8Array();
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > MAX_BODY_BYTES) {
        throw new HttpError(
          413,
          `Cannot read request body: over ${MAX_BODY_BYTES} bytes`,
        );
      }
      chunks.push(value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** Answers an admin action: JSON for scripts, a redirect for browser forms. */
function done(
  context: RouteContext,
  result: Record<string, unknown>,
  redirect: string,
): Response {
  if (isBrowserForm(context.request)) {
    return new Response(null, { status: 303, headers: { location: redirect } });
  }
  return jsonResponse(result);
}

async function saveSpec(
  context: RouteContext,
  body: Body,
  mode: "add" | "edit",
): Promise<Response> {
  const { store } = context.options;
  const spec = body.json !== null
    ? specFromJson(body.json)
    : specFromForm(body.form);
  const existing = await store.getSpecification(spec.name);
  if (mode === "add" && existing !== null) {
    throw new HttpError(
      409,
      `Cannot add specification ${quoteValue(spec.name)}: it already exists`,
    );
  }
  if (mode === "edit" && existing === null) {
    throw new HttpError(
      404,
      `Cannot edit specification ${quoteValue(spec.name)}: it does not exist`,
    );
  }
  if (existing !== null && body.json === null) {
    keepWhatTheFormLacks(spec, existing);
  }
  await context.options.actions.saveSpecification(spec);
  context.options.logger.info("specification saved", {
    name: spec.name,
    mode,
  });
  return done(
    context,
    { specification: spec.name, saved: true },
    `/jobset/${encodeURIComponent(spec.name)}`,
  );
}

async function deleteSpec(context: RouteContext): Promise<Response> {
  const name = context.params.name;
  const deleted = await context.options.actions.deleteSpecification(name);
  if (!deleted) {
    throw new HttpError(
      404,
      `Cannot delete specification ${quoteValue(name)}: it does not exist`,
    );
  }
  context.options.logger.info("specification deleted", { name });
  return done(context, { specification: name, deleted: true }, "/");
}

async function triggerEvaluation(context: RouteContext): Promise<Response> {
  const name = context.params.name;
  const spec = await context.options.store.getSpecification(name);
  if (spec === null) {
    throw new HttpError(404, `Jobset ${quoteValue(name)} not found.`);
  }
  const outcome = await context.options.actions.triggerEvaluation(name);
  context.options.logger.info(
    outcome?.triggered === false
      ? "evaluation not triggered"
      : "evaluation triggered",
    { name, note: outcome?.note },
  );
  return done(
    context,
    { jobset: name, ...outcome },
    `/jobset/${encodeURIComponent(name)}`,
  );
}

function buildAction(action: "cancel" | "restart") {
  return async (context: RouteContext): Promise<Response> => {
    const id = parseId(context.params.id, "build ID");
    const build = await context.options.store.getBuild(id);
    if (build === null) {
      throw new HttpError(404, `Build with ID ${id} doesn't exist.`);
    }
    const { actions } = context.options;
    const changed = action === "cancel"
      ? await actions.cancelBuild(id)
      : await actions.restartBuild(id);
    context.options.logger.info(`build ${action} requested`, { id, changed });
    return done(
      context,
      { build: id, action, changed },
      `/build/${id}/details`,
    );
  };
}

function evaluationAction(action: "cancel" | "restart") {
  return async (context: RouteContext): Promise<Response> => {
    const id = parseId(context.params.id, "evaluation ID");
    const evaluation = await context.options.store.getEvaluation(id);
    if (evaluation === null) {
      throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
    }
    const { actions } = context.options;
    const builds = action === "cancel"
      ? await actions.cancelEvaluation(id)
      : await actions.restartEvaluation(id);
    context.options.logger.info(`evaluation ${action} requested`, {
      id,
      builds,
    });
    return done(context, { evaluation: id, action, builds }, `/eval/${id}`);
  };
}

/**
 * Keeps in `spec`, read from the form, what the form has no field for and
 * `existing` (set by a file or the API) had: build outputs, notifications,
 * whether it is active, and each channel's pinned commit and introduction
 * while the channel keeps its name, URL and branch. Saving the edit form
 * unchanged must change nothing.
 */
function keepWhatTheFormLacks(
  spec: Specification,
  existing: Specification,
): void {
  spec.buildOutputs = existing.buildOutputs;
  spec.notifications = existing.notifications;
  spec.isActive = existing.isActive;
  spec.channels = spec.channels.map((channel) => {
    const same = existing.channels.find((old) =>
      old.name === channel.name && old.url === channel.url &&
      old.branch === channel.branch
    );
    return same === undefined
      ? channel
      : { ...channel, commit: same.commit, introduction: same.introduction };
  });
}
