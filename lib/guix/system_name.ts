// Guix system names ("system types"): an architecture and a kernel.

const SYSTEM_REGEXP = /^[a-z0-9_]+-[a-z0-9_]+$/;

/**
 * True when `text` has the shape of a Guix system name such as
 * `x86_64-linux`, `aarch64-linux` or `i586-gnu`. Specifications and the
 * worker's `--systems` are both held to it.
 */
export function isSystemName(text: string): boolean {
  return SYSTEM_REGEXP.test(text);
}

/**
 * The Guix system name of the machine this runs on (`aarch64-linux` on
 * 64-bit ARM Linux), as Guix's `%current-system` gives it: Deno's
 * architecture names are Guix's for the two it runs on.
 */
export function hostSystem(
  build: { arch: string; os: string } = Deno.build,
): string {
  return `${build.arch}-${build.os}`;
}
