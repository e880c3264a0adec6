// Case C10's log, as the demo's libunistring build writes it
// (demo/make_scenario.ts), for the end-to-end tests of both modes.

/** What the demo's libunistring build writes (case C10). */
export const C10_BYTES = new Uint8Array([
  ...new TextEncoder().encode("ok\n"),
  0xfc,
  0xff,
  0xc3,
  0x28,
  0x0a,
  0x1b,
  ...new TextEncoder().encode("[31mred"),
  0x1b,
  ...new TextEncoder().encode("[0m\n"),
  0x0d,
]);

/** Whether `needle` occurs in `haystack`. */
export function includesBytes(haystack: Uint8Array, needle: Uint8Array) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}
