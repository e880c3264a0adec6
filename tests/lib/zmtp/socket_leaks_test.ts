// The leak check every test relies on: deno.json's "test" settings turn
// Deno's op and resource sanitizers on (off by default since Deno 2.8), so
// that a test leaving a RouterSocket, a DealerSocket or a libzmq peer open
// fails, and one that closes them passes. The fixture runs under the
// project's deno.json and no sanitizer flag: without the settings, its
// leaking tests pass and this test fails.

import assert from "node:assert/strict";
import { libzmqMissing } from "./libzmq_peer.ts";
import { within } from "../../_within.ts";

const FIXTURE = new URL("./_socket_leaks_fixture.ts", import.meta.url)
  .pathname;
const ROOT = new URL("../../../", import.meta.url).pathname;
const CONFIG = `${ROOT}deno.json`;

Deno.test("a test leaving a ZMTP socket or a libzmq peer open fails, naming what it left", async () => {
  const report = await runFixture();

  assert.match(errorOf(report, "leaks a RouterSocket"), /A TCP listener/);
  assert.match(errorOf(report, "leaks a DealerSocket"), /A timer/);
  if (libzmqMissing === undefined) {
    assert.match(errorOf(report, "leaks a libzmq peer"), /A child process/);
  }
  assert.match(report, /closes its RouterSocket and DealerSocket \.\.\. ok/);
});

/** What `deno test` said about the failure of the test `name`. */
function errorOf(report: string, name: string): string {
  assert.match(report, new RegExp(`${name} \\.\\.\\. FAILED`));
  const errors = report.slice(report.indexOf(" ERRORS "));
  const block = errors.split("\n\n").find((text) => text.startsWith(name));
  assert.ok(block !== undefined, `no error reported for "${name}"`);
  return block;
}

/** Runs the fixture module in a child `deno test`; its output, colourless. */
async function runFixture(): Promise<string> {
  const killer = new AbortController();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", "--no-check", `--config=${CONFIG}`, FIXTURE],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: killer.signal,
  }).output();
  try {
    const { stdout, stderr } = await within(child, 60_000, "fixture run");
    return new TextDecoder().decode(stdout) +
      new TextDecoder().decode(stderr);
  } catch (error) {
    killer.abort();
    await child.catch(() => {});
    throw error;
  }
}
