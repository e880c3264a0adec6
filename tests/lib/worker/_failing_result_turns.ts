// A dispatcher whose turns carrying build results fail for no outage of its
// database (a fault of the turn itself): the server stays up, and nothing of
// such a turn is committed or answered. For the tests of what a worker does
// when its result's ack does not come.

import { decodeMessage } from "../../../lib/protocol/messages.ts";
import type { Store } from "../../../lib/store/types.ts";
import type { RouterMessage } from "../../../lib/zmtp/router.ts";

/**
 * Whether `message`, as a dispatcher's ROUTER receives it, is a build
 * result; one that cannot be decoded is not (the dispatcher logs it).
 */
export function carriesResult(message: RouterMessage): boolean {
  const payload = message.frames[message.frames.length - 1];
  try {
    const type = decodeMessage(payload).type;
    return type === "build-succeeded" || type === "build-failed";
  } catch {
    return false;
  }
}

/**
 * Fails the turns that take the first `times` build results the dispatcher
 * receives (its ROUTER seen through {@link watch}, its store through
 * {@link failing}).
 */
export class ResultTurnFailure {
  readonly #times: number;
  #armed = false;
  /** Turns failed so far. */
  failed = 0;

  constructor(times = 1) {
    this.#times = times;
  }

  /** Arms the failure when `message` is a build result still to fail. */
  watch = (message: RouterMessage) => {
    if (this.failed < this.#times && carriesResult(message)) {
      this.#armed = true;
    }
  };

  /** `store` whose batch, once armed, fails before it commits. */
  failing = (store: Store): Store => {
    const seen: Store = Object.create(store);
    seen.batch = (work, options) =>
      store.batch(async (tx) => {
        const result = await work(tx);
        if (this.#armed) {
          this.#armed = false;
          this.failed++;
          throw new Error("turn failed before its commit (injected)");
        }
        return result;
      }, options);
    return seen;
  };
}
