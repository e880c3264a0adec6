// The specification the bench's evaluations belong to: no channel, built
// by no one but the simulated workers.

import type { Specification } from "../lib/store/types.ts";

/** A specification `name` building every job for `systems`. */
export function benchSpecification(
  name = "bench",
  systems = ["x86_64-linux"],
): Specification {
  return {
    name,
    build: { type: "all", params: [] },
    channels: [],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 9,
    systems,
    isActive: true,
  };
}
