// Deno's op and resource sanitizers, turned back on for a test module.
//
// Since Deno 2.8 `deno test` runs with both off unless asked: a test that
// leaves a ZMTP socket, a timer or a child process open passes, and the
// next test (or the whole run) pays for it. A module that opens such things
// calls this before its tests, so that the test that leaks one fails,
// naming what was left open. tests/lib/zmtp/socket_leaks_test.ts shows it
// catching an unclosed RouterSocket, DealerSocket and libzmq peer.

/**
 * Enables the op and resource sanitizers for every test the calling
 * module registers after this call (Deno scopes the setting to the module).
 */
export function sanitizeOpsAndResources(): void {
  Deno.test.sanitizer({ ops: true, resources: true });
}
