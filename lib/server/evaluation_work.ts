// The work directories of running evaluations, <state>/evaluation-work/ID,
// each with the process that runs it. Several servers may share a state
// directory (docs/deployment.md, section 5); a server starting up must then
// clean up only what a dead process left, not the directories of
// evaluations another live server is running. Whether an evaluation runs
// is the database's to say (evaluation_owner.ts); the owner written here
// serves evaluations recorded before their rows named their owner, and
// keeps the directories of live local processes.

import { isLive, thisProcess } from "./evaluation_owner.ts";
import type { Logger } from "../log.ts";
import type { EvaluationOwner } from "../store/types.ts";

const OWNER_FILE = "owner.json";

/** The work directory of evaluation `id`. */
export function evaluationWorkDir(stateDir: string, id: number): string {
  return `${stateDir}/evaluation-work/${id}`;
}

/** Makes the work directory of evaluation `id`, owned by this process. */
export async function makeEvaluationWorkDir(
  stateDir: string,
  id: number,
): Promise<string> {
  const dir = evaluationWorkDir(stateDir, id);
  await Deno.mkdir(dir, { recursive: true });
  const owner = await thisProcess();
  await Deno.writeTextFile(`${dir}/${OWNER_FILE}`, JSON.stringify(owner));
  return dir;
}

/**
 * Whether evaluation `id` is run by a live process other than this one,
 * on this machine: its work directory names that process.
 */
export async function runByAnotherProcess(
  stateDir: string,
  id: number,
): Promise<boolean> {
  let owner: EvaluationOwner;
  try {
    owner = JSON.parse(
      await Deno.readTextFile(
        `${evaluationWorkDir(stateDir, id)}/${OWNER_FILE}`,
      ),
    );
  } catch {
    return false; // no work directory, or one cut short: nobody's
  }
  return owner.pid !== Deno.pid && await isLive(owner);
}

/**
 * Removes the work directories that no live process owns (a crash left
 * them): called at start, after stale evaluations were aborted. The
 * directories of evaluations in `running` (still started in the database,
 * after that abort: a live server elsewhere sharing the directory over
 * NFS runs them) are kept. Returns how many were removed.
 */
export async function removeLeftWorkDirs(
  stateDir: string,
  logger: Logger,
  { running = new Set() }: { running?: ReadonlySet<number> } = {},
): Promise<number> {
  const parent = `${stateDir}/evaluation-work`;
  let removed = 0;
  try {
    for await (const entry of Deno.readDir(parent)) {
      const id = Number(entry.name);
      if (
        Number.isInteger(id) &&
        (running.has(id) || await runByAnotherProcess(stateDir, id))
      ) {
        continue;
      }
      await Deno.remove(`${parent}/${entry.name}`, { recursive: true });
      removed++;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      logger.warn("evaluation work directories not removed", {
        path: parent,
        error,
      });
    }
  }
  if (removed > 0) {
    logger.info("evaluation work directories removed", {
      path: parent,
      count: removed,
    });
  }
  return removed;
}
