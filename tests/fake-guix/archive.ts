// `guix archive --generate-key` and `--authorize`: the key pair and the ACL.

import {
  formatAcl,
  formatPublicKey,
  formatSecretKey,
  generateKeyPair,
  parseAcl,
  parsePublicKey,
  type PublicKey,
  samePublicKey,
} from "../../lib/guix/signing_key.ts";
import { hasFlag, type OptionSpec, parseOptions } from "./cli_options.ts";
import { exists, writeAtomic } from "./daemon_store.ts";
import { configDir } from "./keys.ts";
import { LeaveError, writeStderr } from "./messages.ts";

const OPTIONS: OptionSpec[] = [
  { long: "generate-key", arg: "optional" },
  { long: "authorize", arg: "none" },
  { long: "export", arg: "none" },
  { long: "import", arg: "none" },
  { long: "missing", arg: "none" },
  { long: "recursive", short: "r", arg: "none" },
];

/** Runs `guix archive ARGS`; returns the exit status. */
export async function archiveCommand(args: string[]): Promise<number> {
  const parsed = parseOptions(args, OPTIONS);
  if (hasFlag(parsed, "generate-key")) return await generateKey();
  if (hasFlag(parsed, "authorize")) return await authorize();
  if (hasFlag(parsed, "export") || hasFlag(parsed, "import")) {
    throw new LeaveError("this stand-in does not export or import bundles");
  }
  throw new LeaveError("either '--export' or '--import' must be specified");
}

async function generateKey(): Promise<number> {
  const dir = configDir();
  const pub = `${dir}/signing-key.pub`;
  const sec = `${dir}/signing-key.sec`;
  if ((await exists(pub)) || (await exists(sec))) {
    throw new LeaveError(`key pair exists under '${dir}'; remove it first`);
  }
  writeStderr(
    "Please wait while gathering entropy to generate the key pair;\nthis may take time...\n",
  );
  const key = generateKeyPair();
  await writeAtomic(sec, formatSecretKey(key), 0o400);
  await writeAtomic(pub, formatPublicKey(key), 0o444);
  return 0;
}

async function authorize(): Promise<number> {
  const input = await new Response(Deno.stdin.readable).text();
  let key: PublicKey;
  try {
    key = parsePublicKey(input);
  } catch {
    throw new LeaveError("s-expression does not denote a public key");
  }
  const file = `${configDir()}/acl`;
  let keys: PublicKey[] = [];
  try {
    keys = parseAcl(await Deno.readTextFile(file));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  if (!keys.some((known) => samePublicKey(known, key))) keys.push(key);
  await writeAtomic(file, formatAcl(keys), 0o644);
  return 0;
}
