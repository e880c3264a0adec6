// Build products of a succeeded build (cuirass.md 5.9): for each
// `build-output` of its specification whose job pattern matches the job,
// the named output (or a file inside it) is offered for download at
// /download/ID, kept alive by a GC root.

import type { Logger } from "../log.ts";
import type { GcRoots } from "../guix/gc_roots.ts";
import type { Build, BuildProduct, Store } from "../store/types.ts";
import { productPathProblem } from "../spec/spec_fields.ts";

export interface BuildProductsOptions {
  store: Store;
  logger: Logger;
  gcRoots?: GcRoots;
  /** Default: Deno.stat. */
  stat?: (path: string) => Promise<Deno.FileInfo>;
}

type NewProduct = Pick<BuildProduct, "type" | "fileSize" | "path">;

/**
 * Records the products of `build`, which just succeeded with its outputs
 * in this machine's store; returns how many. A pattern that is no regular
 * expression, a path leaving its output or a file that is not there is
 * logged and skipped: none of them may fail the build.
 */
export async function registerBuildProducts(
  build: Build,
  options: BuildProductsOptions,
): Promise<number> {
  const { store, logger } = options;
  const stat = options.stat ?? Deno.stat;
  const spec = await store.getSpecification(build.specification);
  const found: NewProduct[] = [];
  const items = new Set<string>();
  for (const wanted of spec?.buildOutputs ?? []) {
    let pattern: RegExp;
    try {
      pattern = new RegExp(wanted.job);
    } catch (error) {
      logger.warn("build product skipped", {
        spec: build.specification,
        job: wanted.job,
        reason: error,
      });
      continue;
    }
    if (!pattern.test(build.jobName)) continue;
    const output = build.outputs.find((o) => o.name === wanted.output);
    if (output === undefined) continue;
    const path = productPath(output.path, wanted.path);
    if (path === null) {
      logger.warn("build product skipped", {
        build: build.id,
        path: wanted.path,
        reason: "the path leaves the output",
      });
      continue;
    }
    try {
      const info = await stat(path);
      found.push({ type: wanted.type, fileSize: info.size, path });
      items.add(output.path);
    } catch {
      logger.warn("build product skipped", {
        build: build.id,
        path,
        reason: "no such file",
      });
    }
  }
  if (found.length === 0) return 0;
  // The store items holding them: a root inside an item is no root.
  await options.gcRoots?.register(items);
  await store.addBuildProducts(build.id, found);
  logger.info("build products recorded", {
    build: build.id,
    count: found.length,
  });
  return found.length;
}

/**
 * `output` joined with the relative `path` (empty: the output itself); null
 * when `path` is absolute or climbs out with "..".
 */
export function productPath(output: string, path: string): string | null {
  if (path === "") return output;
  if (productPathProblem(path) !== null) return null;
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  return parts.length === 0 ? output : `${output}/${parts.join("/")}`;
}
