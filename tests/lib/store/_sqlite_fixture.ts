// What the SQLite store tests share: database files in a temporary
// directory removed at exit, and a logger whose lines can be read back.

import { createLogger } from "../../../lib/log.ts";

/**
 * A temporary directory (removed when the test process ends) and a maker
 * of fresh database file names in it.
 */
export function sqliteTempFiles(
  prefix: string,
): { tempDir: string; tempFile(): string } {
  const tempDir = Deno.makeTempDirSync({ prefix });
  globalThis.addEventListener("unload", () => {
    Deno.removeSync(tempDir, { recursive: true });
  });
  let files = 0;
  return { tempDir, tempFile: () => `${tempDir}/store-${++files}.sqlite` };
}

/** A logger whose lines, without timestamps, land in `lines`. */
export function capturedLog() {
  const lines: string[] = [];
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  return { lines, logger };
}
