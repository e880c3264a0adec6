// Test helper: a build record as the store returns it.

import { type Build, Weather } from "../../../lib/store/types.ts";

/** A build as the store returns it, with the fields that matter here. */
export function sampleBuild(overrides: Partial<Build> = {}): Build {
  return {
    id: 42,
    derivation: "/gnu/store/aaaa-hello-2.12.drv",
    evaluation: 7,
    specification: "demo",
    jobName: "hello.x86_64-linux",
    system: "x86_64-linux",
    worker: null,
    nixName: "hello-2.12",
    log: "",
    status: 1,
    lastStatus: 0,
    weather: Weather.newFailure,
    priority: 2,
    maxSilent: 3600,
    timeout: 36000,
    timestamp: 1_700_000_000,
    starttime: 1_700_000_010,
    stoptime: 1_700_000_100,
    outputs: [],
    ...overrides,
  };
}
