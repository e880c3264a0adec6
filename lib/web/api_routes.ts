// The JSON routes, compatible with Cuirass's API (cuirass.md §7.2).

import { HttpError } from "./http_error.ts";
import {
  parseBuildRef,
  readBuildFilter,
  requireIdParam,
  requireLimit,
} from "./params.ts";
import {
  buildToJson,
  evaluationToJson,
  specificationToJson,
  workerToJson,
} from "./json_shapes.ts";
import { listWorkerStatuses } from "./worker_status.ts";
import { requireSpecification } from "./specification_lookup.ts";
import { buildLogResponse } from "./build_log.ts";
import {
  jsonResponse,
  type Route,
  type RouteContext,
} from "./route_context.ts";
import type { Build } from "../store/types.ts";

/** The JSON routes, in matching order. */
export const API_ROUTES: Route[] = [
  { pattern: "/api/latestbuilds", kind: "json", handle: latestBuilds },
  { pattern: "/api/queue", kind: "json", handle: queue },
  { pattern: "/api/evaluations", kind: "json", handle: evaluations },
  { pattern: "/api/evaluation", kind: "json", handle: evaluation },
  { pattern: "/api/workers", kind: "json", handle: workers },
  { pattern: "/specifications/*", kind: "json", handle: specifications },
  { pattern: "/jobsets/*", kind: "json", handle: specifications },
  { pattern: "/build/:id/log/raw", kind: "json", handle: rawLog },
  { pattern: "/build/:id", kind: "json", handle: build },
];

/**
 * Finds the build named by `/build/:id`, by id or derivation basename.
 * @throws {HttpError} 400 for a malformed id, 404 for an unknown build.
 */
export async function requireBuild(context: RouteContext): Promise<Build> {
  const segment = context.params.id;
  const ref = parseBuildRef(segment);
  const { store, storeDir } = context.options;
  const found = "id" in ref
    ? await store.getBuild(ref.id)
    : await store.getBuildByDerivation(`${storeDir}/${ref.basename}`);
  if (found === null) {
    throw new HttpError(404, `Build with ID ${segment} doesn't exist.`);
  }
  return found;
}

async function latestBuilds(context: RouteContext): Promise<Response> {
  const { searchParams } = context.url;
  const limit = requireLimit(searchParams);
  const filter = readBuildFilter(searchParams);
  const builds = await context.options.store.latestBuilds(filter, limit);
  return jsonResponse(builds.map(buildToJson));
}

async function queue(context: RouteContext): Promise<Response> {
  const { searchParams } = context.url;
  const limit = requireLimit(searchParams);
  const filter = readBuildFilter(searchParams);
  const builds = await context.options.store.queue(filter, limit);
  return jsonResponse(builds.map(buildToJson));
}

async function evaluations(context: RouteContext): Promise<Response> {
  const { searchParams } = context.url;
  const limit = requireLimit(searchParams);
  const spec = searchParams.get("spec") ?? undefined;
  const { store } = context.options;
  if (spec !== undefined) await requireSpecification(store, spec);
  const list = await store.listEvaluations({ specification: spec, limit });
  const out = [];
  for (const item of list) {
    out.push(
      evaluationToJson(item, await store.getEvaluationCheckouts(item.id)),
    );
  }
  return jsonResponse(out);
}

async function evaluation(context: RouteContext): Promise<Response> {
  const id = requireIdParam(context.url.searchParams, "id");
  const { store } = context.options;
  const found = await store.getEvaluation(id);
  if (found === null) {
    throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
  }
  return jsonResponse(
    evaluationToJson(found, await store.getEvaluationCheckouts(id)),
  );
}

async function workers(context: RouteContext): Promise<Response> {
  const { store, workerTimeoutSeconds, workerDiskLow } = context.options;
  const statuses = await listWorkerStatuses(
    store,
    context.now,
    workerTimeoutSeconds,
    workerDiskLow,
  );
  return jsonResponse(
    statuses.map((status) => ({
      ...workerToJson(status.worker, status.currentBuild?.id ?? null),
      disklow: status.diskLow,
    })),
  );
}

async function specifications(context: RouteContext): Promise<Response> {
  const specs = (await context.options.store.listSpecifications())
    .filter((spec) => spec.isActive)
    .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return jsonResponse(specs.map(specificationToJson));
}

async function build(context: RouteContext): Promise<Response> {
  return jsonResponse(buildToJson(await requireBuild(context)));
}

async function rawLog(context: RouteContext): Promise<Response> {
  return await buildLogResponse(
    context.options.logCacheDir,
    await requireBuild(context),
    context.request.headers.get("accept-encoding"),
  );
}
