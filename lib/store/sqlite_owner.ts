// One lorica-server per SQLite database. SQLite itself would let a second
// server open the file, and the two would then take each other's work:
// the second resumes the first's output fetches, hands out builds the
// first holds, expires its workers. Several servers on one database is
// what PostgreSQL is for (it locks rows; a SQLite file has one writer).
//
// The claim is flock(2) on a file beside the database, taken for the life
// of the server: the kernel releases it when the server exits or dies, so
// a crash leaves no stale claim. The file stays, holding the last owner's
// pid for the message of the next refusal.

import type { Clock } from "../clock.ts";

/** The claim's file beside `database`. */
export function ownerFileOf(database: string): string {
  return `${database}.owner`;
}

/** Another process holds the database. */
export class DatabaseInUseError extends Error {
  constructor(readonly database: string, readonly ownerPid: number | null) {
    super(
      `Cannot use SQLite database ${
        JSON.stringify(database)
      }: another lorica-server${
        ownerPid === null ? "" : ` (pid ${ownerPid})`
      } uses it; several servers share a database only on PostgreSQL`,
    );
    this.name = "DatabaseInUseError";
  }
}

/** A held claim; release() ends it (exiting does too). */
export interface DatabaseClaim {
  release(): void;
}

/**
 * Claims `database` for this process, waiting at most `waitMs` for a
 * previous owner still exiting (a restart).
 * @throws {DatabaseInUseError} when another process keeps it.
 */
export async function claimDatabase(
  database: string,
  options: { clock: Clock; waitMs?: number },
): Promise<DatabaseClaim> {
  const path = ownerFileOf(database);
  const file = await Deno.open(path, { create: true, read: true, write: true });
  // flock has no timeout: the wait races a timer. Should the timer win,
  // the lock call stays pending until this process exits or the holder
  // lets go, which is why the file is then closed: closing it drops a
  // lock taken late.
  const stop = new AbortController();
  const locked = file.lock(true).then(() => true, () => false);
  const timedOut = options.clock.sleep(options.waitMs ?? 2000, stop.signal)
    .then(() => false, () => false);
  const got = await Promise.race([locked, timedOut]);
  stop.abort();
  if (!got) {
    const owner = await ownerPid(path);
    file.close();
    throw new DatabaseInUseError(database, owner);
  }
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  return {
    release() {
      try {
        file.close();
      } catch {
        // Closed already.
      }
    },
  };
}

/** The pid the owner file names, or null. */
async function ownerPid(path: string): Promise<number | null> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}
