// Output helpers and the exact texts Guix prints, in one place.

/** Thrown to end a command the way Guix's `leave` does: message, exit 1. */
export class LeaveError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = "LeaveError";
  }
}

const encoder = new TextEncoder();

/** Writes text or bytes fully to standard output. */
export function writeStdout(data: string | Uint8Array): void {
  writeAll(Deno.stdout, data);
}

/** Writes text or bytes fully to standard error. */
export function writeStderr(data: string | Uint8Array): void {
  writeAll(Deno.stderr, data);
}

/** The `guix SUBCOMMAND: error: ` prefix of `guix/diagnostics.scm`. */
export function errorLine(command: string, message: string): string {
  return `guix ${command}: error: ${message}\n`;
}

/** The `guix SUBCOMMAND: warning: ` line. */
export function warningLine(command: string, message: string): string {
  return `guix ${command}: warning: ${message}\n`;
}

/** Daemon texts from `nix/libstore/build.cc` (file names in `…' quotes). */
export const daemonText = {
  builderFailed: (drv: string, code: number) =>
    `builder for \`${drv}' failed with exit code ${code}`,
  timedOut: (drv: string, seconds: number) =>
    `building of \`${drv}' timed out after ${seconds} seconds`,
  silentTooLong: (drv: string, seconds: number) =>
    `building of \`${drv}' timed out after ${seconds} seconds of silence`,
  dependenciesFailed: (drv: string, count: number) =>
    `cannot build derivation \`${drv}': ${count} dependencies couldn't be built`,
  missingDerivation: (drv: string) =>
    `cannot build missing derivation \`${drv}'`,
  substitutesFailed: (drv: string) =>
    `some substitutes for the outputs of derivation \`${drv}' failed (usually happens due to networking issues); try \`--fallback' to build derivation from source `,
  maxJobsZero: () =>
    "unable to start any build; either increase `--max-jobs' or enable distributed builds",
  wrongSystem: (system: string, drv: string, mine: string) =>
    `a \`${system}' is required to build \`${drv}', but I am a \`${mine}'`,
  buildsFailed: (drvs: string[]) =>
    `build of ${[...drvs].sort().map((d) => `\`${d}'`).join(", ")} failed`,
  pathNotValid: (path: string) => `path \`${path}' is not valid`,
};

/** Client-side status lines of `guix/status.scm`. */
export const statusText = {
  building: (drv: string) => `building ${drv}...`,
  buildFailed: (drv: string) => `build of ${drv} failed`,
  viewLog: (file: string) => `View build log at '${file}'.`,
  substituting: (item: string) => `substituting ${item}...`,
};

function writeAll(
  stream: { writeSync(p: Uint8Array): number },
  data: string | Uint8Array,
): void {
  let bytes = typeof data === "string" ? encoder.encode(data) : data;
  while (bytes.length > 0) {
    const n = stream.writeSync(bytes);
    bytes = bytes.subarray(n);
  }
}
