// Paths of the Guile scripts Lorica ships, readable by `guix repl`.

import { fileURLToPath } from "node:url";

let extracted: string | null = null;

/**
 * A file path `guix repl` can read for the shipped script at `url`. In a
 * compiled binary the scripts live in its embedded file system, which other
 * processes cannot see, so they are copied out once per process.
 */
export function shippedScriptPath(url: URL): string {
  if (url.protocol !== "file:") return url.href;
  const path = fileURLToPath(url);
  if (!Deno.build.standalone) return path;
  extracted ??= Deno.makeTempDirSync({ prefix: "lorica-scripts-" });
  const copy = `${extracted}/${path.slice(path.lastIndexOf("/") + 1)}`;
  try {
    Deno.statSync(copy);
  } catch {
    Deno.writeTextFileSync(copy, Deno.readTextFileSync(path));
  }
  return copy;
}
