// `guix gc`: queries of the valid-path registry and the GC roots.

import { hasFlag, type OptionSpec, parseOptions } from "./cli_options.ts";
import { DaemonStore } from "./daemon_store.ts";
import {
  daemonText,
  LeaveError,
  writeStderr,
  writeStdout,
} from "./messages.ts";

const OPTIONS: OptionSpec[] = [
  { long: "references", arg: "none" },
  { long: "requisites", short: "R", arg: "none" },
  { long: "derivers", arg: "none" },
  { long: "list-roots", arg: "none" },
  { long: "collect-garbage", short: "C", arg: "optional" },
  { long: "delete", short: "D", arg: "none" },
];

/** Runs `guix gc ARGS`; returns the exit status. */
export async function gcCommand(args: string[]): Promise<number> {
  const parsed = parseOptions(args, OPTIONS);
  const store = DaemonStore.fromEnv();
  if (hasFlag(parsed, "list-roots")) {
    writeStdout((await store.listRoots()).map((r) => r + "\n").join(""));
    return 0;
  }
  if (hasFlag(parsed, "collect-garbage")) {
    // Nothing is ever deleted by this stand-in.
    return 0;
  }
  if (hasFlag(parsed, "delete")) {
    return await deletePaths(store, parsed.operands);
  }
  const query = ["references", "requisites", "derivers"].find((q) =>
    hasFlag(parsed, q)
  );
  if (!query) throw new LeaveError("no action specified");
  const results = new Set<string>();
  for (const item of parsed.operands) {
    const info = await store.queryPathInfo(item);
    if (!info) throw new LeaveError(daemonText.pathNotValid(item));
    if (query === "references") info.references.forEach((r) => results.add(r));
    if (query === "derivers" && info.deriver) results.add(info.deriver);
    if (query === "requisites") await closure(store, item, results);
  }
  writeStdout([...results].sort().map((path) => path + "\n").join(""));
  return 0;
}

async function closure(
  store: DaemonStore,
  path: string,
  seen: Set<string>,
): Promise<void> {
  if (seen.has(path)) return;
  seen.add(path);
  const info = await store.queryPathInfo(path);
  for (const reference of info?.references ?? []) {
    await closure(store, reference, seen);
  }
}

/**
 * `guix gc -D PATHS`: deletes each path unless it is reachable from a GC
 * root (the closure of every root's target).
 */
async function deletePaths(
  store: DaemonStore,
  paths: string[],
): Promise<number> {
  writeStderr("finding garbage collector roots...\n");
  const live = new Set<string>();
  for (const root of await store.listRoots()) {
    let target: string;
    try {
      target = await Deno.realPath(root);
    } catch {
      continue;
    }
    const rest = target.slice(store.storeDir.length + 1);
    if (!target.startsWith(store.storeDir + "/")) continue;
    await closure(store, `${store.storeDir}/${rest.split("/")[0]}`, live);
  }
  for (const path of paths) {
    if (live.has(path)) {
      throw new LeaveError(
        `cannot delete path \`${path}' since it is still alive`,
      );
    }
    if (!(await store.isValid(path))) continue;
    writeStderr(`deleting \`${path}'\n`);
    await Deno.remove(path, { recursive: true });
  }
  return 0;
}
