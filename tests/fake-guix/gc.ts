// `guix gc`: queries of the valid-path registry and the GC roots.

import { hasFlag, type OptionSpec, parseOptions } from "./cli_options.ts";
import { DaemonStore } from "./daemon_store.ts";
import { daemonText, LeaveError, writeStdout } from "./messages.ts";

const OPTIONS: OptionSpec[] = [
  { long: "references", arg: "none" },
  { long: "requisites", short: "R", arg: "none" },
  { long: "derivers", arg: "none" },
  { long: "list-roots", arg: "none" },
  { long: "collect-garbage", short: "C", arg: "optional" },
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
