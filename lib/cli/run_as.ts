// `--user=USER`, as in Cuirass: a program started by root continues as USER
// before it opens or writes anything. Deno cannot change its own user, so
// the root process starts this same command line again through setpriv(1)
// with USER's ids and groups, relays signals to it and exits as it does.

import { readTail, type Spawner, spawnProcess } from "../process.ts";
import { UsageError } from "./args.ts";

/** A user account, from the passwd database. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/**
 * Looks `name` up with getent(1), so that accounts from LDAP or other NSS
 * sources count too.
 * @throws {UsageError} naming the user when there is no such account
 */
export async function lookupAccount(
  name: string,
  spawn: Spawner = spawnProcess,
): Promise<Account> {
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(name)) {
    throw new UsageError(
      `Cannot use --user ${JSON.stringify(name)}: not a user name`,
    );
  }
  const child = spawn(["getent", "passwd", name]);
  const [out] = await Promise.all([
    readTail(child.stdout, 64 * 1024),
    readTail(child.stderr, 64 * 1024),
  ]);
  const status = await child.status;
  const fields = new TextDecoder().decode(out).trim().split(":");
  if (status.code !== 0 || fields.length < 7) {
    throw new UsageError(
      `Cannot use --user ${JSON.stringify(name)}: no such user`,
    );
  }
  return {
    name: fields[0],
    uid: Number(fields[2]),
    gid: Number(fields[3]),
    home: fields[5],
  };
}

/**
 * The command that runs `argv` as `account`, or null when this process
 * (`currentUid`) already runs as it.
 * @throws {UsageError} when only root could change user
 */
export function switchUserCommand(
  account: Account,
  currentUid: number,
  argv: string[],
): string[] | null {
  if (currentUid === account.uid) return null;
  if (currentUid !== 0) {
    throw new UsageError(
      `Cannot run as user ${
        JSON.stringify(account.name)
      }: only root can change user (this process runs as uid ${currentUid})`,
    );
  }
  return [
    "setpriv",
    `--reuid=${account.uid}`,
    `--regid=${account.gid}`,
    "--init-groups",
    "--",
    ...argv,
  ];
}

/** This process's own command line, as the kernel has it. */
export function ownCommandLine(): string[] {
  // Each argument ends with a NUL, the last one included.
  return Deno.readTextFileSync("/proc/self/cmdline").replace(/\0$/, "")
    .split("\0");
}

const RELAYED: Deno.Signal[] = ["SIGTERM", "SIGINT", "SIGHUP"];

/**
 * Runs `command` with inherited standard streams and `account`'s HOME,
 * USER and LOGNAME, relaying termination signals; resolves with its exit
 * status (128 + the signal's number when a signal ended it).
 */
export async function runSwitched(
  command: string[],
  account: Account,
): Promise<number> {
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    env: { HOME: account.home, USER: account.name, LOGNAME: account.name },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const relays = RELAYED.map((signal) => {
    const relay = () => {
      try {
        child.kill(signal);
      } catch {
        // Already gone.
      }
    };
    Deno.addSignalListener(signal, relay);
    return () => Deno.removeSignalListener(signal, relay);
  });
  try {
    // Deno reports a child ended by a signal as 128 + its number already.
    return (await child.status).code;
  } finally {
    for (const remove of relays) remove();
  }
}

/**
 * Applies `--user`: null when this process goes on (no user asked for, or
 * already running as it), else the exit status of this same command line
 * run as that user.
 */
export async function continueAsUser(
  user: string | undefined,
): Promise<number | null> {
  if (user === undefined) return null;
  const account = await lookupAccount(user);
  const command = switchUserCommand(
    account,
    Deno.uid() ?? -1,
    ownCommandLine(),
  );
  return command === null ? null : await runSwitched(command, account);
}
