import assert from "node:assert/strict";
import {
  isUnavailableDerivation,
  runBuild,
} from "../../../lib/worker/build_runner.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { fakeSpawner } from "../server/_dispatch_fixture.ts";

const DRV = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-x.drv";
// Port 9 on loopback: nothing listens, the log is dropped, the build goes on.
const NO_LOG = { hostname: "127.0.0.1", port: 9 };
const fast = { sleep: () => Promise.resolve(), now: () => 0 };

Deno.test("runBuild() retries a build whose derivation was unavailable, then succeeds", async () => {
  const calls: string[][] = [];
  let n = 0;
  const guix = new Guix({
    logger: silentLogger,
    spawn: fakeSpawner(
      () =>
        ++n < 3
          ? { code: 1, stderr: `cannot build missing derivation \`${DRV}'\n` }
          : { code: 0 },
      calls,
    ),
  });
  const lines: string[] = [];
  const ok = await runBuild({ drv: DRV, timeout: 0, maxSilent: 0 }, {
    guix,
    logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    substituteUrls: [],
    logServer: NO_LOG,
    clock: fast,
  });
  assert.equal(ok, true);
  assert.equal(calls.length, 3);
  assert.equal(
    lines.filter((l) => l.startsWith("warn build retried")).length,
    2,
  );
});

Deno.test("runBuild() reports a real build failure at once, and a lasting unavailability after its retries", async () => {
  for (
    const [stderr, expectedCalls] of [
      ["builder for `x.drv' failed with exit code 1\n", 1],
      [`cannot build missing derivation \`${DRV}'\n`, 3],
    ] as const
  ) {
    const calls: string[][] = [];
    const guix = new Guix({
      logger: silentLogger,
      spawn: fakeSpawner(() => ({ code: 1, stderr }), calls),
    });
    const ok = await runBuild({ drv: DRV, timeout: 0, maxSilent: 0 }, {
      guix,
      logger: silentLogger,
      substituteUrls: [],
      logServer: NO_LOG,
      clock: fast,
      retries: 2,
    });
    assert.equal(ok, false);
    assert.equal(calls.length, expectedCalls, stderr);
  }
});

Deno.test("isUnavailableDerivation() tells a missing derivation from a failed builder", () => {
  assert.ok(
    isUnavailableDerivation(`cannot build missing derivation \`${DRV}'`),
  );
  assert.ok(isUnavailableDerivation(`error: path '${DRV}' is not valid`));
  assert.ok(
    !isUnavailableDerivation("builder for `x.drv' failed with exit code 2"),
  );
  assert.ok(!isUnavailableDerivation(""));
});
