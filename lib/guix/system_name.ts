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
