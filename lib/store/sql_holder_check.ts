// The holder check of a write (the store's HolderCheck): a server in local
// mode writes the builds it holds only while its Workers row still has the
// address of the claim they were taken under. Whoever ended that claim put
// its builds back in the queue, and another server may hold them now under
// the same name: the old claim's writes must change nothing.

import { truncate } from "./rows.ts";
import { get } from "./sql_query.ts";
import type { Dialect, Step } from "./sql_query.ts";
import type { HolderCheck } from "./types.ts";

/** A holder: a worker name, and the address its claim was made with. */
export type Holder = { name: string; address: string };

/**
 * Whether `holder`'s Workers row still has its address. Run in the
 * transaction of the write it guards: on SQLite no claim can come between
 * the two; on PostgreSQL the row stays locked (FOR SHARE) until the write
 * commits, so that a claim of the name waits for the write, then finds
 * what it must requeue, or is waited for, and the row is found changed.
 */
export function* holderStands(d: Dialect, holder: Holder): Step<boolean> {
  const row = yield* get(
    `SELECT 1 AS held FROM Workers WHERE name = ? AND address = ?${d.forShare}`,
    [holder.name, holder.address],
  );
  return row !== undefined;
}

/**
 * The holder a write checks (see HolderCheck): `worker` with the address
 * `check` gives, or null without one.
 * @throws {Error} when an address is given without the worker it is of
 */
export function checkedHolder(
  derivation: string,
  worker: string | undefined,
  check: HolderCheck,
): Holder | null {
  const address = check.holderAddress;
  if (address === undefined) return null;
  if (worker === undefined) {
    throw new Error(
      `Cannot write build ${JSON.stringify(truncate(derivation))} for ` +
        `holder address ${JSON.stringify(address)}: no worker named`,
    );
  }
  return { name: worker, address };
}
