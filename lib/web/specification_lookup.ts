// Finding a specification named by a request, and its latest successful evaluation.

import { HttpError, quoteValue } from "./http_error.ts";
import type { Evaluation, Specification, Store } from "../store/types.ts";

/** Evaluations scanned for the successful ones of a specification. */
export const EVALUATION_WINDOW = 1000;

/**
 * The specification named `name`.
 * @throws {HttpError} 404 naming it when it does not exist.
 */
export async function requireSpecification(
  store: Store,
  name: string,
): Promise<Specification> {
  const found = await store.getSpecification(name);
  if (found === null) {
    throw new HttpError(
      404,
      `Specification ${quoteValue(name)} doesn't exist.`,
    );
  }
  return found;
}

/**
 * The newest successful evaluation of `specification` among its last
 * 1000 (read newest first through its index), or null.
 */
export async function latestSuccessfulEvaluation(
  store: Store,
  specification: string,
): Promise<Evaluation | null> {
  const found = (await store.listEvaluations({
    specification,
    limit: EVALUATION_WINDOW,
  })).find((evaluation) => evaluation.status === 0);
  return found ?? null;
}

/**
 * The newest successful evaluation of the specification named `name`.
 * @throws {HttpError} 404 when the specification does not exist, or has
 * no successful evaluation: each said apart, as a client acts on them
 * differently (fix the name, or wait).
 */
export async function requireLatestEvaluation(
  store: Store,
  name: string,
): Promise<Evaluation> {
  await requireSpecification(store, name);
  const found = await latestSuccessfulEvaluation(store, name);
  if (found === null) {
    throw new HttpError(
      404,
      `Specification ${quoteValue(name)} has no successful evaluation.`,
    );
  }
  return found;
}
