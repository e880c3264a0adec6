// What `--version` prints: the version and the Git revision it was built from.

import { fileURLToPath } from "node:url";
import { VERSION } from "./args.ts";
import { gitRevision } from "./git_revision.ts";

/** `<program> <version> (<revision>)`, the revision when it is known. */
export async function versionLine(program: string): Promise<string> {
  const revision = await buildRevision();
  return revision
    ? `${program} ${VERSION} (${revision})`
    : `${program} ${VERSION}`;
}

async function buildRevision(): Promise<string | null> {
  if (Deno.build.standalone) {
    // scripts/compile.ts embeds the facts of the build.
    try {
      const info = JSON.parse(
        await Deno.readTextFile(
          new URL("../../dist/build_info.json", import.meta.url),
        ),
      );
      return typeof info.revision === "string" ? info.revision : null;
    } catch {
      return null;
    }
  }
  return await gitRevision(fileURLToPath(new URL("../..", import.meta.url)));
}
