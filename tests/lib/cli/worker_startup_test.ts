// lorica-worker's command line: a value it cannot use stops it at once with
// status 2, before it connects anywhere.

import assert from "node:assert/strict";

const WORKER = new URL("../../../worker.ts", import.meta.url).pathname;

Deno.test("lorica-worker --systems=x86_64 exits 2: not a system name, as the admin API would say", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      WORKER,
      "--systems=x86_64",
      // A loopback address, and a --workers checked later that stops the
      // worker anyway if --systems were accepted.
      "--server=127.0.0.1:1",
      "--workers=0",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 2, stderr);
  assert.match(
    stderr,
    /Cannot use --systems "x86_64": "x86_64" is not a system name/,
  );
});
