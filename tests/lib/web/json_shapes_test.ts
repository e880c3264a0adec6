import assert from "node:assert/strict";
import {
  buildToJson,
  specificationToJson,
} from "../../../lib/web/json_shapes.ts";
import { job, spec } from "./_fixture.ts";
import type { Build } from "../../../lib/store/types.ts";

function build(status: Build["status"]): Build {
  const { derivation, system, nixName, outputs, name } = job(1, "hello");
  return {
    id: 3,
    derivation,
    evaluation: 2,
    specification: "s",
    jobName: name,
    system,
    worker: null,
    nixName,
    log: "",
    status,
    lastStatus: null,
    weather: -1,
    priority: 4,
    maxSilent: 600,
    timeout: 3600,
    timestamp: 100,
    starttime: 150,
    stoptime: status >= 0 ? 200 : 0,
    outputs,
  };
}

Deno.test("buildToJson() derives timestamp, busy and finished from the status", () => {
  const table: [Build["status"], number, 0 | 1, 0 | 1][] = [
    [-3, 100, 0, 0],
    [-2, 100, 0, 0],
    [-1, 100, 1, 0],
    [0, 200, 0, 1],
    [2, 200, 0, 1],
    [4, 200, 0, 1],
  ];
  for (const [status, timestamp, busy, finished] of table) {
    const json = buildToJson(build(status));
    assert.deepEqual(
      [json.timestamp, json.busy, json.finished],
      [timestamp, busy, finished],
      `status ${status}`,
    );
  }
});

Deno.test("specificationToJson() shows the build type the way Cuirass does", () => {
  const table: [string, string[], unknown][] = [
    ["guix", [], "guix"],
    ["packages", ["hello", "gcc"], { packages: ["hello", "gcc"] }],
    ["channels", ["guix"], { channels: ["guix"] }],
    ["manifests", ["m.scm"], { manifests: ["m.scm"] }],
    ["custom", ["(gnu ci)"], "custom"],
  ];
  for (const [type, params, expected] of table) {
    const value = spec("s");
    value.build = { type, params };
    assert.deepEqual(specificationToJson(value).build, expected, type);
  }
  const pinned = spec("s");
  pinned.channels[0].commit = "c".repeat(40);
  assert.equal(specificationToJson(pinned).channels[0].commit, "c".repeat(40));
});
