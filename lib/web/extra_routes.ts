// More of Cuirass's routes: jobs, outputs, logs by output, badges, RSS, metrics, live logs.

import { HttpError, quoteValue } from "./http_error.ts";
import { parseId, readNames, requireIdParam, requireLimit } from "./params.ts";
import { type BuildJson, buildToJson } from "./json_shapes.ts";
import { requireBuild } from "./api_routes.ts";
import { buildLogResponse, fileStream, openRegularFile } from "./build_log.ts";
import { logEventsResponse } from "./log_events.ts";
import {
  describeReason,
  explainQueue,
  servedSystems,
} from "./queue_reasons.ts";
import { type BadgeSubject, errorBadge, percentageBadge } from "./badge.ts";
import { renderRss, RSS_ITEMS } from "./rss.ts";
import {
  EVALUATION_WINDOW,
  latestSuccessfulEvaluation,
  requireLatestEvaluation,
  requireSpecification,
} from "./specification_lookup.ts";
import { parseSearchQuery, searchBuilds } from "./search.ts";
import { workerTimeout } from "./worker_status.ts";
import { renderFamily } from "./metrics.ts";
import {
  jsonResponse,
  type Route,
  type RouteContext,
} from "./route_context.ts";
import { parseStoreBasename } from "../guix/store_path.ts";
import {
  type Build,
  buildStatusName,
  type Checkout,
  type Store,
  Weather,
} from "../store/types.ts";

/** The routes, in matching order (before the API and page routes). */
export const EXTRA_ROUTES: Route[] = [
  { pattern: "/api/jobs", kind: "json", handle: jobs },
  { pattern: "/api/jobs/history", kind: "json", handle: jobsHistory },
  { pattern: "/api/queue/reasons", kind: "json", handle: queueReasons },
  { pattern: "/output/:basename", kind: "json", handle: output },
  { pattern: "/log/:basename", kind: "json", handle: outputLog },
  { pattern: "/eval/latest", kind: "json", handle: latestEvaluation },
  { pattern: "/eval/:id/log/raw", kind: "json", handle: evaluationLog },
  { pattern: "/jobset/:name/badge.svg", kind: "json", handle: badge },
  { pattern: "/events/rss/*", kind: "json", handle: rss },
  { pattern: "/metrics", kind: "json", handle: metrics },
  { pattern: "/build/:id/log/events", kind: "json", handle: logEvents },
  { pattern: "/build/:id/log", kind: "html", handle: logPage },
  { pattern: "/search/latest", kind: "json", handle: searchLatest },
  {
    pattern: "/search/latest/:type",
    kind: "json",
    handle: searchLatestProduct,
  },
];

/** `nr` of `/api/jobs/history` at most, as Cuirass allows. */
const MAX_HISTORY = 100;
/** Builds scanned for an output when the store cannot look one up. */
const OUTPUT_SCAN = 1000;

/** A store that may also find the build of an output path directly. */
type StoreWithOutputs = Store & {
  getBuildByOutput?: (path: string) => Promise<Build | null>;
};

async function jobs(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const id = requireIdParam(params, "evaluation");
  const { store } = context.options;
  if (await store.getEvaluation(id) === null) {
    throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
  }
  const names = readNames(params, false);
  const system = params.get("system") ?? undefined;
  const rows = await store.listJobs(id, { names, system });
  return jsonResponse(
    rows.map((row) => ({
      build: row.build,
      status: row.status,
      name: row.name,
    })),
  );
}

async function jobsHistory(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const spec = params.get("spec");
  if (spec === null || spec === "") {
    throw new HttpError(400, `Cannot read parameter "spec": missing`);
  }
  const names = readNames(params, true)!;
  const limit = requireLimit(params);
  if (limit > MAX_HISTORY) {
    throw new HttpError(
      400,
      `Cannot read parameter "nr": value ${limit} is above ${MAX_HISTORY}`,
    );
  }
  const { store } = context.options;
  await requireSpecification(store, spec);
  const successful = (await store.listEvaluations({
    specification: spec,
    limit: EVALUATION_WINDOW,
  })).filter((evaluation) => evaluation.status === 0);
  const out = [];
  for (let i = 0; i < successful.length && i < limit; i++) {
    const evaluation = successful[i];
    const checkouts = await store.getEvaluationCheckouts(evaluation.id);
    const older = successful[i + 1];
    const previous = older === undefined
      ? []
      : await store.getEvaluationCheckouts(older.id);
    out.push({
      evaluation: evaluation.id,
      checkouts: changedCheckouts(checkouts, previous).map((checkout) => ({
        commit: checkout.revision,
        channel: checkout.channel,
        directory: checkout.directory,
      })),
      jobs: (await store.listJobs(evaluation.id, { names })).map((row) => ({
        name: row.name,
        build: row.build,
        status: row.status,
      })),
    });
  }
  return jsonResponse(out);
}

/** The checkouts whose revision differs from the previous evaluation's. */
export function changedCheckouts(
  current: Checkout[],
  previous: Checkout[],
): Checkout[] {
  const before = new Map(previous.map((c) => [c.channel, c.revision]));
  return current.filter((c) => before.get(c.channel) !== c.revision);
}

async function queueReasons(context: RouteContext): Promise<Response> {
  const params = context.url.searchParams;
  const limit = requireLimit(params);
  const { store, workerTimeoutSeconds } = context.options;
  const entries = await explainQueue(store, {
    limit,
    now: context.now,
    timeoutSeconds: workerTimeoutSeconds,
    system: params.get("system") ?? undefined,
  });
  return jsonResponse(entries.map((entry) => ({
    build: buildToJson(entry.build),
    reason: entry.reason.kind,
    explanation: describeReason(entry.reason),
    ...("dependencies" in entry.reason
      ? { dependencies: entry.reason.dependencies.map((d) => d.id) }
      : {}),
  })));
}

async function output(context: RouteContext): Promise<Response> {
  const { path, basename } = requireOutputPath(context);
  const build = await findBuildByOutput(context.options.store, path);
  if (build === null) {
    throw new HttpError(404, `Output with ID ${basename} doesn't exist.`);
  }
  const name = build.outputs.find((o) => o.path === path)?.name ?? "out";
  const json: { name: string; derivation: string; build: BuildJson } = {
    name,
    derivation: build.derivation,
    build: buildToJson(build),
  };
  return jsonResponse(json);
}

async function outputLog(context: RouteContext): Promise<Response> {
  const { path, basename } = requireOutputPath(context);
  const build = await findBuildByOutput(context.options.store, path);
  if (build === null) {
    throw new HttpError(404, `Output with ID ${basename} doesn't exist.`);
  }
  return await buildLogResponse(
    context.options.logCacheDir,
    build,
    context.request.headers.get("accept-encoding"),
  );
}

async function latestEvaluation(context: RouteContext): Promise<Response> {
  const spec = context.url.searchParams.get("spec");
  if (spec === null || spec === "") {
    throw new HttpError(400, `Cannot read parameter "spec": missing`);
  }
  const found = await requireLatestEvaluation(context.options.store, spec);
  return redirect(`/eval/${found.id}`);
}

async function evaluationLog(context: RouteContext): Promise<Response> {
  const id = parseId(context.params.id, "evaluation ID");
  if (await context.options.store.getEvaluation(id) === null) {
    throw new HttpError(404, `Evaluation with ID ${id} doesn't exist.`);
  }
  const path = context.options.evaluationLog(id);
  const opened = path === null ? null : await openRegularFile(path);
  if (opened === null) {
    // Servers sharing a database each keep the logs of the evaluations
    // they ran in their own state directory: name the one that has it.
    const owner = await context.options.store.evaluationOwner(id);
    throw new HttpError(
      404,
      owner === null
        ? `Log of evaluation ${id} doesn't exist.`
        // The host name, without the PID namespace that follows it.
        : `Log of evaluation ${id} doesn't exist here: it was evaluated by ${
          owner.host.split(" ")[0]
        } (pid ${owner.pid}); its log is in that server's state directory.`,
    );
  }
  const headers: Record<string, string> = {
    "content-type": "text/plain; charset=UTF-8",
    "content-disposition": "inline",
    "content-length": String(opened.size),
  };
  if (path!.endsWith(".gz")) headers["content-encoding"] = "gzip";
  return new Response(fileStream(opened.file, opened.size), { headers });
}

async function badge(context: RouteContext): Promise<Response> {
  const name = context.params.name;
  const typeText = context.url.searchParams.get("type") ?? "0";
  // The badge comes in two kinds, the two types Cuirass documents: any
  // other value would draw one of them while seeming to ask for a third.
  if (typeText !== "0" && typeText !== "1") {
    throw new HttpError(
      400,
      `Cannot read parameter "type": value ${
        quoteValue(typeText)
      } is not 0 or 1`,
    );
  }
  const { store } = context.options;
  const spec = await store.getSpecification(name);
  const subject: BadgeSubject = {
    type: typeText === "0" ? 0 : 1,
    spec: name.slice(0, 40),
  };
  let svg: string;
  if (spec === null) {
    svg = errorBadge("unknown", subject);
  } else {
    const latest = await latestSuccessfulEvaluation(store, name);
    if (latest === null) {
      svg = errorBadge("no evaluation", subject);
    } else {
      const counts = await store.countBuildsByStatus({
        evaluation: latest.id,
      });
      let total = 0;
      for (const count of counts.values()) total += count;
      svg = percentageBadge(counts.get(0) ?? 0, total, subject);
    }
  }
  return new Response(svg, {
    status: spec === null ? 404 : 200,
    headers: {
      "content-type": "image/svg+xml",
      "cache-control": "no-cache",
    },
  });
}

async function rss(context: RouteContext): Promise<Response> {
  const specification = context.url.searchParams.get("specification") ??
    undefined;
  const builds = await context.options.store.latestBuilds(
    { specification, weathers: [Weather.newSuccess, Weather.newFailure] },
    RSS_ITEMS,
  );
  // Never the request's own origin: Deno takes it from the Host header,
  // which any client chooses, and a cache in front would serve the feed
  // it got, links to the host of its choice included, to everyone.
  // Without --base-url, the address the server listens on.
  const { publicUrl, ownOrigin } = context.options;
  const baseUrl = (publicUrl ?? ownOrigin()).replace(/\/+$/, "");
  return new Response(renderRss(builds, { baseUrl, specification }), {
    headers: { "content-type": "application/rss+xml; charset=utf-8" },
  });
}

async function metrics(context: RouteContext): Promise<Response> {
  const { store, workerTimeoutSeconds, metrics: fed, liveStreams } =
    context.options;
  const queue = await store.queueLengthBySystem();
  const counts = await store.countBuildsByStatus();
  const workers = await store.listWorkers();
  const responsive = workers.filter((worker) =>
    context.now - worker.lastSeen <=
      workerTimeout(worker, workerTimeoutSeconds)
  );
  const parts = [
    renderFamily(
      "lorica_queue_length",
      "Scheduled builds waiting for a worker, by system.",
      "gauge",
      [...queue].sort().map(([system, n]) => [{ system }, n]),
    ),
    renderFamily(
      "lorica_builds",
      "Builds in the database, by status.",
      "gauge",
      [-3, -2, -1, 0, 1, 2, 3, 4].map((
        status,
      ) => [
        { status: buildStatusName(status) },
        counts.get(status as Build["status"]) ?? 0,
      ]),
    ),
    renderFamily(
      "lorica_workers_connected",
      "Workers heard from within the worker timeout.",
      "gauge",
      [[{}, responsive.length]],
    ),
    renderFamily(
      "lorica_workers_known",
      "Workers registered in the database.",
      "gauge",
      [[{}, workers.length]],
    ),
    renderFamily(
      "lorica_systems_served",
      "Systems at least one connected worker builds.",
      "gauge",
      [[{}, servedSystems(workers, context.now, workerTimeoutSeconds).size]],
    ),
    renderFamily(
      "lorica_live_log_streams",
      "Live build log streams open in the web interface.",
      "gauge",
      [[{}, liveStreams.open]],
    ),
  ];
  if (fed) parts.push(fed.registry.render());
  return new Response(parts.join(""), {
    headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
  });
}

async function logEvents(context: RouteContext): Promise<Response> {
  return logEventsResponse(context, await requireBuild(context));
}

async function logPage(context: RouteContext): Promise<Response> {
  const build = await requireBuild(context);
  return redirect(`/build/${build.id}/details#log`);
}

async function searchLatest(context: RouteContext): Promise<Response> {
  const query = parseSearchQuery(context.url.searchParams.get("query"));
  const [found] = await searchBuilds(context.options.store, query, {
    limit: 1,
  });
  if (found === undefined) {
    throw new HttpError(404, "Cannot find a build matching the query.");
  }
  return redirect(`/build/${found.id}/details`);
}

/**
 * The newest build matching the query, as its product of the given type:
 * a stable link to "the latest ISO image" or "the latest tarball", which
 * is how Guix's web site points at its downloads.
 */
async function searchLatestProduct(context: RouteContext): Promise<Response> {
  const type = context.params.type;
  const query = parseSearchQuery(context.url.searchParams.get("query"));
  const [found] = await searchBuilds(context.options.store, query, {
    limit: 1,
  });
  if (found === undefined) {
    throw new HttpError(404, "Cannot find a build matching the query.");
  }
  const product = (found.products ?? []).find((p) => p.type === type);
  if (product === undefined) {
    throw new HttpError(
      404,
      `Build ${found.id} has no product of type ${quoteValue(type)}.`,
    );
  }
  return redirect(`/download/${product.id}`);
}

/**
 * Finds the build producing an output path: directly when the store can,
 * else among the newest finished and pending builds.
 */
export async function findBuildByOutput(
  store: Store,
  path: string,
): Promise<Build | null> {
  const direct = (store as StoreWithOutputs).getBuildByOutput;
  if (typeof direct === "function") return await direct.call(store, path);
  for (
    const list of [
      await store.latestBuilds({}, OUTPUT_SCAN),
      await store.queue({}, OUTPUT_SCAN),
    ]
  ) {
    const found = list.find((build) =>
      build.outputs.some((o) => o.path === path)
    );
    if (found !== undefined) return found;
  }
  return null;
}

function requireOutputPath(
  context: RouteContext,
): { path: string; basename: string } {
  const basename = context.params.basename;
  try {
    parseStoreBasename(basename);
  } catch {
    throw new HttpError(
      400,
      `Cannot read output ${quoteValue(basename)}: not a store item name`,
    );
  }
  if (basename.endsWith(".drv")) {
    throw new HttpError(
      400,
      `Cannot read output ${quoteValue(basename)}: a derivation, not an output`,
    );
  }
  return { path: `${context.options.storeDir}/${basename}`, basename };
}

/** A 302 to `location`, a path of this server. */
export function redirect(location: string): Response {
  return new Response(null, { status: 302, headers: { location } });
}
