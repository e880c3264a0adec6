// Looks at processes a test started, through /proc (Linux).

/** Whether process `pid` exists (a child once reaped does not). */
export function processExists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether process `pid` catches or ignores SIGTERM, as the fake guix of a
 * build with `ignoresSigterm` does once that build started; false once it
 * is gone.
 */
export function catchesSigterm(pid: number): boolean {
  let status: string;
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return false;
  }
  const bit = 1n << 14n; // SIGTERM is signal 15.
  return ["SigCgt", "SigIgn"].some((field) => {
    const mask = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(status);
    return mask !== null && (BigInt(`0x${mask[1]}`) & bit) !== 0n;
  });
}
