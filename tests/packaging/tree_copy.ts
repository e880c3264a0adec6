// Test helper: copies the working tree (without .git, dist, node_modules,
// vendor) into a fresh temp directory, and builds environments that cannot
// reach any registry.

import { fileURLToPath as fromFileUrl } from "node:url";
import { quietPort } from "../_ports.ts";

export const REPO = fromFileUrl(new URL("../..", import.meta.url)).replace(
  /\/$/,
  "",
);

const SKIP = new Set([".git", "dist", "node_modules", "vendor"]);

/** A copy of the tree in a temp directory, removed on dispose. */
export async function copyTree(prefix: string) {
  const dir = await Deno.makeTempDir({ prefix });
  const entries: string[] = [];
  for await (const entry of Deno.readDir(REPO)) {
    if (!SKIP.has(entry.name)) entries.push(`${REPO}/${entry.name}`);
  }
  const result = await new Deno.Command("cp", {
    args: ["-a", ...entries, dir],
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(
      `Cannot copy the tree: ${new TextDecoder().decode(result.stderr)}`,
    );
  }
  return {
    dir,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * An environment whose HTTP(S) traffic goes to a closed loopback port, so
 * that any registry or download attempt fails at once without leaving the
 * machine.
 */
export function offlineEnv(
  extra: Record<string, string> = {},
): Record<string, string> {
  const dead = `http://127.0.0.1:${quietPort()}`;
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    HTTPS_PROXY: dead,
    HTTP_PROXY: dead,
    https_proxy: dead,
    http_proxy: dead,
    ALL_PROXY: dead,
    // Loopback stays direct: the farm talks to itself over 127.0.0.1.
    NO_PROXY: "127.0.0.1,localhost,::1",
    no_proxy: "127.0.0.1,localhost,::1",
    NO_COLOR: "1",
    ...extra,
  };
  return env;
}

/** Runs a command; returns its exit code and outputs as text. */
export async function run(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string> },
) {
  const result = await new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: result.code,
    stdout: decoder.decode(result.stdout),
    stderr: decoder.decode(result.stderr),
  };
}
