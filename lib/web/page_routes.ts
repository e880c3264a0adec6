// The HTML routes: gather data from the store, then render a page template.

import { HttpError, quoteValue } from "./http_error.ts";
import { parseId } from "./params.ts";
import { requireBuild } from "./api_routes.ts";
import { listWorkerStatuses } from "./worker_status.ts";
import { logFilePath } from "./build_log.ts";
import {
  htmlResponse,
  type Route,
  type RouteContext,
} from "./route_context.ts";
import { summarizeCounts } from "./pages/builds_table.ts";
import { renderDashboard } from "./pages/dashboard.ts";
import { renderJobset } from "./pages/jobset.ts";
import { EVALUATION_FILTERS, renderEvaluation } from "./pages/evaluation.ts";
import { renderBuildDetails } from "./pages/build_details.ts";
import { renderMachine, renderWorkers } from "./pages/workers.ts";
import { renderStatus } from "./pages/status.ts";
import { renderSearch } from "./pages/search.ts";
import { renderSpecForm } from "./pages/spec_form.ts";
import { explainQueue } from "./queue_reasons.ts";
import { parseSearchQuery, searchBuilds } from "./search.ts";
import { renderWorkerCards, type SystemRow } from "./pages/workers.ts";
import type { Build, Store } from "../store/types.ts";

/** The HTML routes, in matching order. */
export const PAGE_ROUTES: Route[] = [
  { pattern: "/", kind: "html", handle: dashboard },
  { pattern: "/jobset/:name", kind: "html", handle: jobset },
  { pattern: "/eval/:id", kind: "html", handle: evaluation },
  { pattern: "/build/:id/details", kind: "html", handle: buildDetails },
  { pattern: "/workers", kind: "html", handle: workers },
  { pattern: "/workers/cards", kind: "html", handle: workerCards },
  { pattern: "/machine/:name", kind: "html", handle: machine },
  { pattern: "/queue", kind: "html", handle: status },
  { pattern: "/status", kind: "html", handle: status },
  { pattern: "/search", kind: "html", handle: search },
  { pattern: "/specification/add", kind: "html", handle: addSpec },
  { pattern: "/specification/edit/:name", kind: "html", handle: editSpec },
];

/** Search results per page. */
const SEARCH_PAGE = 50;

/** Evaluations listed on a jobset page. */
const JOBSET_EVALUATIONS = 30;
/** Builds of each kind (pending, finished) listed on an evaluation page. */
const EVALUATION_BUILDS = 500;
/** Builds scanned for the status page. */
const STATUS_BUILDS = 1000;
/** Waiting builds listed on the status page. */
const STATUS_WAITING = 100;

async function dashboard(context: RouteContext): Promise<Response> {
  const { store } = context.options;
  const specs = await store.listSpecifications();
  specs.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const rows = [];
  for (const spec of specs) {
    const counts = await store.countBuildsByStatus({
      specification: spec.name,
    });
    const [latestEvaluation = null] = await store.listEvaluations({
      specification: spec.name,
      limit: 1,
    });
    rows.push({ spec, counts: summarizeCounts(counts), latestEvaluation });
  }
  return htmlResponse(
    renderDashboard(rows, adminEnabled(context)),
  );
}

async function jobset(context: RouteContext): Promise<Response> {
  const { store } = context.options;
  const name = context.params.name;
  const spec = await store.getSpecification(name);
  if (spec === null) {
    throw new HttpError(404, `Jobset ${quoteValue(name)} doesn't exist.`);
  }
  const evaluations = await store.listEvaluations({
    specification: name,
    limit: JOBSET_EVALUATIONS,
  });
  const rows = [];
  for (const item of evaluations) {
    const counts = await store.countBuildsByStatus({ evaluation: item.id });
    rows.push({ evaluation: item, counts: summarizeCounts(counts) });
  }
  return htmlResponse(renderJobset(spec, rows, adminEnabled(context)));
}

async function evaluation(context: RouteContext): Promise<Response> {
  const { store } = context.options;
  const id = parseId(context.params.id, "evaluation ID");
  const statusFilter = readStatusFilter(context.url.searchParams);
  const found = await store.getEvaluation(id);
  if (found === null) {
    throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
  }

  const filter = { evaluation: id };
  const pending = statusFilter === null || statusFilter === "pending"
    ? await store.queue(filter, EVALUATION_BUILDS)
    : [];
  const finished = statusFilter === "pending"
    ? []
    : (await store.latestBuilds(filter, EVALUATION_BUILDS)).filter((build) =>
      statusFilter === null ||
      (statusFilter === "succeeded" ? build.status === 0 : build.status > 0)
    );
  finished.sort((a, b) => (b.stoptime - a.stoptime) || (b.id - a.id));

  return htmlResponse(renderEvaluation({
    evaluation: found,
    checkouts: await store.getEvaluationCheckouts(id),
    builds: [...pending, ...finished],
    statusFilter,
    limited: pending.length === EVALUATION_BUILDS ||
      finished.length === EVALUATION_BUILDS,
    now: context.now,
    admin: adminEnabled(context),
    hasLog: context.options.evaluationLog(id) !== null,
  }));
}

async function buildDetails(context: RouteContext): Promise<Response> {
  const { store, logCacheDir, logTails } = context.options;
  const build = await requireBuild(context);
  const dependencies: Build[] = [];
  for (const id of await store.buildDependencies(build.id)) {
    const dependency = await store.getBuild(id);
    if (dependency !== null) dependencies.push(dependency);
  }
  const path = logFilePath(logCacheDir, build.derivation);
  const log = path === null ? null : await logTails.tail(path);
  return htmlResponse(
    renderBuildDetails({
      build,
      dependencies,
      log,
      now: context.now,
      admin: adminEnabled(context),
    }),
  );
}

async function workers(context: RouteContext): Promise<Response> {
  const { statuses, systems } = await workersData(context);
  return htmlResponse(renderWorkers(statuses, systems));
}

async function workerCards(context: RouteContext): Promise<Response> {
  const { statuses, systems } = await workersData(context);
  const response = htmlResponse(renderWorkerCards(statuses, systems).value);
  response.headers.set("cache-control", "no-store");
  return response;
}

async function machine(context: RouteContext): Promise<Response> {
  const name = context.params.name;
  const { store, workerTimeoutSeconds, workerDiskLow } = context.options;
  const statuses = (await listWorkerStatuses(
    store,
    context.now,
    workerTimeoutSeconds,
    workerDiskLow,
  )).filter((status) => status.worker.machine === name);
  if (statuses.length === 0) {
    throw new HttpError(
      404,
      `Machine ${quoteValue(name)} has no registered worker.`,
    );
  }
  return htmlResponse(renderMachine(name, statuses));
}

async function workersData(context: RouteContext) {
  const { store, workerTimeoutSeconds, workerDiskLow } = context.options;
  const statuses = await listWorkerStatuses(
    store,
    context.now,
    workerTimeoutSeconds,
    workerDiskLow,
  );
  return { statuses, systems: await systemRows(store, statuses) };
}

async function systemRows(
  store: Store,
  statuses: { worker: { systems: string[] }; unresponsive: boolean }[],
): Promise<SystemRow[]> {
  const queued = await store.queueLengthBySystem();
  const counts = new Map<string, number>();
  for (const status of statuses) {
    for (const system of status.worker.systems) {
      counts.set(
        system,
        (counts.get(system) ?? 0) + (status.unresponsive ? 0 : 1),
      );
    }
  }
  for (const system of queued.keys()) {
    if (!counts.has(system)) counts.set(system, 0);
  }
  return [...counts.keys()].sort().map((system) => ({
    system,
    workers: counts.get(system) ?? 0,
    queued: queued.get(system) ?? 0,
  }));
}

async function status(context: RouteContext): Promise<Response> {
  const { store, workerTimeoutSeconds } = context.options;
  // The queue lists started builds first (status descending, as Cuirass
  // orders it), so running builds are never cut off by the waiting ones.
  const pending = await store.queue({}, STATUS_BUILDS);
  const running = pending.filter((build) => build.status === -1);
  const explained = await explainQueue(store, {
    limit: running.length + STATUS_WAITING,
    now: context.now,
    timeoutSeconds: workerTimeoutSeconds,
  });
  // Builds already handed to a worker come first: they run next.
  const waiting = [
    ...explained.filter((entry) => entry.build.status === -3),
    ...explained.filter((entry) => entry.build.status === -2),
  ];
  const queued = [...await store.queueLengthBySystem()].sort();
  return htmlResponse(
    renderStatus({ running, waiting, queued, now: context.now }),
  );
}

async function search(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const text = params.get("query");
  const query = parseSearchQuery(text);
  const border = params.get("border-high-id");
  const beforeId = border === null || border === ""
    ? undefined
    : parseId(border, `parameter "border-high-id"`);
  const builds = await searchBuilds(context.options.store, query, {
    limit: SEARCH_PAGE + 1,
    beforeId,
  });
  const more = builds.length > SEARCH_PAGE;
  const shown = builds.slice(0, SEARCH_PAGE);
  return htmlResponse(renderSearch({
    query: text!,
    builds: shown,
    nextBeforeId: more ? shown[shown.length - 1].id : null,
    now: context.now,
  }));
}

function addSpec(context: RouteContext): Promise<Response> {
  return Promise.resolve(
    htmlResponse(renderSpecForm(null, adminEnabled(context))),
  );
}

async function editSpec(context: RouteContext): Promise<Response> {
  const name = context.params.name;
  const spec = await context.options.store.getSpecification(name);
  if (spec === null) {
    throw new HttpError(404, `Jobset ${quoteValue(name)} doesn't exist.`);
  }
  return htmlResponse(renderSpecForm(spec, adminEnabled(context)));
}

function adminEnabled(context: RouteContext): boolean {
  const token = context.options.adminToken;
  return token !== null && token !== "";
}

function readStatusFilter(params: URLSearchParams): string | null {
  const value = params.get("status");
  if (value === null || value === "") return null;
  if (!(EVALUATION_FILTERS as readonly string[]).includes(value)) {
    throw new HttpError(
      400,
      `Cannot read parameter "status": value ${
        quoteValue(value)
      } is not one of ${EVALUATION_FILTERS.join(", ")}`,
    );
  }
  return value;
}
