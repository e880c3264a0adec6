// Whether a specification's newest evaluation was cut short: the server
// stopped or died during it (evaluators killed, or its registration ended
// between two chunks). Its commits were never evaluated to the end, so
// they count as new, with channel polling (jobset_monitor.ts) as without
// (--no-poll, evaluateOnce in server.ts). A canceled evaluation ends
// aborted too, but on purpose: its commits wait for new ones.

import { EvaluationStatus, type Store } from "../store/types.ts";

/** True when the newest evaluation of `specification` was interrupted. */
export async function newestInterrupted(
  store: Pick<Store, "listEvaluations" | "evaluationCanceled">,
  specification: string,
): Promise<boolean> {
  const [latest] = await store.listEvaluations({ specification, limit: 1 });
  return latest?.status === EvaluationStatus.aborted &&
    !await store.evaluationCanceled(latest.id);
}
