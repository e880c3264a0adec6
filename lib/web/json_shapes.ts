// Store records as the Cuirass/Hydra JSON objects of the web API (cuirass.md §7.1).

import type {
  Build,
  BuildSelector,
  Checkout,
  Evaluation,
  Specification,
  Worker,
} from "../store/types.ts";

/** A build product; Lorica records none yet, so the array stays empty. */
export interface BuildProductJson {
  id: number;
  type: string;
  path: string;
  "file-size": number;
}

/** The Hydra-style build object, fields in Cuirass's order. */
export interface BuildJson {
  id: number;
  evaluation: number;
  jobset: string;
  job: string;
  timestamp: number;
  starttime: number;
  stoptime: number;
  derivation: string;
  buildoutputs: Record<string, { path: string }>;
  system: string;
  nixname: string;
  buildstatus: number;
  weather: number;
  busy: 0 | 1;
  priority: number;
  finished: 0 | 1;
  buildproducts: BuildProductJson[];
}

/** The evaluation object of `/api/evaluation(s)`. */
export interface EvaluationJson {
  id: number;
  specification: string;
  status: number;
  timestamp: number;
  checkouttime: number;
  evaltime: number;
  checkouts: { commit: string; channel: string; directory: string }[];
}

/** The specification object of `/specifications` and `/jobsets`. */
export interface SpecificationJson {
  name: string;
  build: string | Record<string, string[]>;
  channels: {
    name: string;
    url: string;
    branch: string;
    commit: string | false;
  }[];
  "build-outputs": {
    job: string;
    type: string;
    output: string;
    path: string;
  }[];
  notifications: Record<string, string>[];
  period: number;
  priority: number;
  systems: string[];
}

/** The worker object of `/api/workers` (a Lorica extension). */
export interface WorkerJson {
  name: string;
  address: string;
  machine: string;
  systems: string[];
  lastseen: number;
  currentbuild: number | null;
}

/** Build types whose parameters Cuirass shows as `{"<type>": [...]}`. */
const LISTED_BUILD_TYPES = new Set(["packages", "channels", "manifests"]);

/** The JSON object of a build. */
export function buildToJson(build: Build): BuildJson {
  const finished = build.status >= 0;
  const buildoutputs: Record<string, { path: string }> = {};
  for (const output of build.outputs) {
    buildoutputs[output.name] = { path: output.path };
  }
  return {
    id: build.id,
    evaluation: build.evaluation,
    jobset: build.specification,
    job: build.jobName,
    // Hydra clients read `timestamp` as "when it finished" for done builds.
    timestamp: finished ? build.stoptime : build.timestamp,
    starttime: build.starttime,
    stoptime: build.stoptime,
    derivation: build.derivation,
    buildoutputs,
    system: build.system,
    nixname: build.nixName,
    buildstatus: build.status,
    weather: build.weather,
    busy: build.status === -1 ? 1 : 0,
    priority: build.priority,
    finished: finished ? 1 : 0,
    buildproducts: (build.products ?? []).map((product) => ({
      id: product.id,
      type: product.type,
      path: product.path,
      "file-size": product.fileSize,
    })),
  };
}

/** The JSON object of an evaluation with its checkouts. */
export function evaluationToJson(
  evaluation: Evaluation,
  checkouts: Checkout[],
): EvaluationJson {
  return {
    id: evaluation.id,
    specification: evaluation.specification,
    status: evaluation.status,
    timestamp: evaluation.timestamp,
    checkouttime: evaluation.checkouttime,
    evaltime: evaluation.evaltime,
    checkouts: checkouts.map((checkout) => ({
      commit: checkout.revision,
      channel: checkout.channel,
      directory: checkout.directory,
    })),
  };
}

/** The JSON object of a specification (`is_active` is not exposed). */
export function specificationToJson(spec: Specification): SpecificationJson {
  return {
    name: spec.name,
    build: buildSelectorToJson(spec.build),
    channels: spec.channels.map((channel) => ({
      name: channel.name,
      url: channel.url,
      branch: channel.branch,
      commit: channel.commit ?? false,
    })),
    "build-outputs": spec.buildOutputs.map((output) => ({
      job: output.job,
      type: output.type,
      output: output.output,
      path: output.path,
    })),
    notifications: spec.notifications.map((sink) => ({ ...sink })),
    period: spec.period,
    priority: spec.priority,
    systems: [...spec.systems],
  };
}

/** The JSON object of a worker and the id of the build it is busy with. */
export function workerToJson(
  worker: Worker,
  currentBuild: number | null,
): WorkerJson {
  return {
    name: worker.name,
    address: worker.address,
    machine: worker.machine,
    systems: [...worker.systems],
    lastseen: worker.lastSeen,
    currentbuild: currentBuild,
  };
}

function buildSelectorToJson(
  build: BuildSelector,
): string | Record<string, string[]> {
  if (build.params.length === 0) return build.type;
  if (LISTED_BUILD_TYPES.has(build.type)) {
    return { [build.type]: [...build.params] };
  }
  // Cuirass shows a custom build (modules as s-expressions) as just "custom".
  return build.type;
}
