// The daemon's configuration directory: signing key pair and ACL.

import {
  parseAcl,
  parsePublicKey,
  parseSecretKey,
} from "../../lib/guix/signing_key.ts";

/** The authorised keys, as `parseAcl` returns them. */
export type PublicKeyList = ReturnType<typeof parseAcl>;

/** `GUIX_CONFIGURATION_DIRECTORY`, default `/etc/guix`. */
export function configDir(): string {
  return (Deno.env.get("GUIX_CONFIGURATION_DIRECTORY") ?? "/etc/guix")
    .replace(/\/+$/, "");
}

/**
 * The ACL; when the file is missing, the machine's own public key alone
 * (as Guix creates it on first read), or nothing.
 */
export async function loadAcl(): Promise<PublicKeyList> {
  const dir = configDir();
  try {
    return parseAcl(await Deno.readTextFile(`${dir}/acl`));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) return [];
  }
  try {
    const own = parsePublicKey(
      await Deno.readTextFile(`${dir}/signing-key.pub`),
    );
    return [own] as PublicKeyList;
  } catch {
    return [];
  }
}

/** Reads the secret key used to sign narinfos. */
export async function loadSecretKey(
  file: string,
): Promise<ReturnType<typeof parseSecretKey>> {
  return parseSecretKey(await Deno.readTextFile(file));
}
