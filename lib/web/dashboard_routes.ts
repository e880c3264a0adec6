// Cuirass's dashboard routes (cuirass.md §7.2): saving a set of job names,
// and the grid of an evaluation's jobs, all of them or a saved set.

import { HttpError, quoteValue } from "./http_error.ts";
import { parseDashboardId, parseId, readNames, readSystem } from "./params.ts";
import { redirect } from "./extra_routes.ts";
import { requireLatestEvaluation } from "./specification_lookup.ts";
import {
  htmlResponse,
  jsonResponse,
  type Route,
  type RouteContext,
} from "./route_context.ts";
import { renderJobGrid } from "./pages/job_grid.ts";
import { type Evaluation, StoreError } from "../store/types.ts";

/**
 * The routes, in matching order: before the page routes, so that
 * `/eval/latest/dashboard` is not read as evaluation "latest".
 */
export const DASHBOARD_ROUTES: Route[] = [
  { pattern: "/api/dashboard/register", kind: "json", handle: register },
  { pattern: "/dashboard/:id", kind: "json", handle: savedDashboard },
  {
    pattern: "/eval/latest/dashboard",
    kind: "json",
    handle: latestDashboard,
  },
  { pattern: "/eval/:id/dashboard", kind: "html", handle: evaluationGrid },
  {
    pattern: "/eval/:id/dashboard/:dashboard",
    kind: "html",
    handle: dashboardGrid,
  },
];

/** The system a dashboard shows when none is asked for and the spec has it. */
const DEFAULT_SYSTEM = "x86_64-linux";
/** New ids tried before registering gives up (62^16 ids: never in practice). */
const ID_ATTEMPTS = 3;
const ID_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A new dashboard id: 16 random letters and digits, evenly drawn. */
export function randomDashboardId(): string {
  let id = "";
  const bytes = new Uint8Array(32);
  while (id.length < 16) {
    crypto.getRandomValues(bytes);
    for (const byte of bytes) {
      // 248 = 4 × 62: the bytes above would favour the first letters.
      if (byte < 248 && id.length < 16) id += ID_ALPHABET[byte % 62];
    }
  }
  return id;
}

async function register(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const spec = requireSpec(params);
  const names = readNames(params, true)!;
  const { store, dashboardId } = context.options;
  for (let attempt = 0; attempt < ID_ATTEMPTS; attempt++) {
    let saved: string | null;
    try {
      // The same names of a jobset are saved once: this answers their id.
      saved = await store.addDashboard({
        id: dashboardId(),
        specification: spec,
        jobs: names,
      }, { now: context.now });
    } catch (error) {
      if (error instanceof StoreError && error.code === "not-found") {
        throw new HttpError(
          404,
          `Specification ${quoteValue(spec)} doesn't exist.`,
          { cause: error },
        );
      }
      throw error;
    }
    if (saved !== null) return jsonResponse({ id: saved });
  }
  throw new Error(
    `Cannot register a dashboard of ${
      quoteValue(spec)
    }: ${ID_ATTEMPTS} new ids were all taken`,
  );
}

async function savedDashboard(context: RouteContext): Promise<Response> {
  const id = parseDashboardId(context.params.id);
  const { store } = context.options;
  const dashboard = await store.useDashboard(id, context.now);
  if (dashboard === null) {
    throw new HttpError(404, `Dashboard with ID ${id} doesn't exist.`);
  }
  const latest = await requireLatestEvaluation(
    store,
    dashboard.specification,
  );
  // The grid's own parameters (`system`, any other) ride along, encoded
  // anew: a Location header holds only ASCII.
  const query = context.url.searchParams.toString();
  return redirect(
    `/eval/${latest.id}/dashboard/${id}${query === "" ? "" : `?${query}`}`,
  );
}

async function latestDashboard(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const spec = requireSpec(params);
  const system = readSystem(params);
  const latest = await requireLatestEvaluation(context.options.store, spec);
  return redirect(
    `/eval/${latest.id}/dashboard${
      system === null ? "" : `?system=${encodeURIComponent(system)}`
    }`,
  );
}

async function evaluationGrid(context: RouteContext): Promise<Response> {
  const evaluation = await requireEvaluation(context);
  const { systems, system } = await gridSystem(context, evaluation);
  const jobs = await context.options.store.listJobs(
    evaluation.id,
    system === null ? {} : { system },
  );
  return htmlResponse(renderJobGrid({
    evaluation,
    jobs,
    systems,
    system,
    dashboard: null,
    missing: [],
  }));
}

async function dashboardGrid(context: RouteContext): Promise<Response> {
  const evaluation = await requireEvaluation(context);
  const id = parseDashboardId(context.params.dashboard);
  const { store } = context.options;
  const dashboard = await store.useDashboard(id, context.now);
  if (dashboard === null) {
    throw new HttpError(404, `Dashboard with ID ${id} doesn't exist.`);
  }
  // The saved names on one system, chosen as on the whole grid: the same
  // `system` parameter (kept by /dashboard/ID's redirect) and default.
  const { systems, system } = await gridSystem(context, evaluation);
  const names = dashboard.jobs;
  const jobs = await store.listJobs(
    evaluation.id,
    system === null ? { names } : { names, system },
  );
  // Missing are the names no job has on any system, not those of another.
  const anySystem = system === null
    ? jobs
    : await store.listJobs(evaluation.id, { names });
  const found = new Set(anySystem.map((job) => job.name));
  return htmlResponse(renderJobGrid({
    evaluation,
    jobs,
    systems,
    system,
    dashboard,
    missing: [...new Set(names)].filter((name) => !found.has(name)),
  }));
}

/**
 * The systems of the evaluation's specification, and the one a grid shows:
 * the `system` parameter, else {@linkcode defaultSystem}.
 */
async function gridSystem(
  context: RouteContext,
  evaluation: Evaluation,
): Promise<{ systems: string[]; system: string | null }> {
  const asked = readSystem(context.url.searchParams);
  const spec = await context.options.store.getSpecification(
    evaluation.specification,
  );
  const systems = spec?.systems ?? [];
  return { systems, system: asked ?? defaultSystem(systems) };
}

/** `x86_64-linux` when the specification builds for it, else its first. */
function defaultSystem(systems: string[]): string | null {
  return systems.includes(DEFAULT_SYSTEM) ? DEFAULT_SYSTEM : systems[0] ?? null;
}

function requireSpec(params: URLSearchParams): string {
  const spec = params.get("spec");
  if (spec === null || spec === "") {
    throw new HttpError(400, `Cannot read parameter "spec": missing`);
  }
  return spec;
}

async function requireEvaluation(context: RouteContext): Promise<Evaluation> {
  const id = parseId(context.params.id, "evaluation ID");
  const found = await context.options.store.getEvaluation(id);
  if (found === null) {
    throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
  }
  return found;
}
