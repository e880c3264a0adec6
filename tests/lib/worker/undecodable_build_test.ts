// A worker handed a build it cannot decode (a number past the safe range,
// a field of the wrong type, an unknown one in a field's place) refuses it
// as it refuses a limit out of range, naming the field and its value, and
// goes on with its next work request: dropped, the build stayed submitted
// to it for good on a Cuirass server, and the worker waited its whole reply
// timeout. One whose derivation cannot be read is dropped, but ends the
// wait for the request it answers.

import assert from "node:assert/strict";
import type { Message } from "../../../lib/protocol/messages.ts";
import { BuildStatus } from "../../../lib/store/types.ts";
import type { RouterSocket } from "../../../lib/zmtp/router.ts";
import {
  eventually,
  type Fixture,
  job,
  routerWatched,
  startFixture,
  within,
} from "../server/_dispatch_fixture.ts";
import { quietPort } from "../../_ports.ts";
import {
  closing,
  runningSession,
  sessionOptions,
  untilStatus,
} from "./_session_helpers.ts";
import { succeedingGuix } from "./_losing_worker.ts";
import { GOOD_DRV, handingOutServer } from "./_handing_out_server.ts";
import { hashOf } from "../server/_dispatch_fixture.ts";

const HUGE = "99999999999999999999";

/** A derivation of the default store numbered `n`, other than GOOD_DRV. */
function drvNumbered(n: number): string {
  return `/gnu/store/${hashOf("drv", 100 + n)}-bad-${n}.drv`;
}

/** A build payload of `drv` with `fields` in place of the usual ones. */
function buildPayload(drv: string, fields: string): string {
  return `(build (drv "${drv}") ${fields})`;
}

const USUAL =
  '(priority 9) (timeout 3600) (max-silent 600) (timestamp #f) (system "x86_64-linux")';

/** Builds no worker can decode: the field to blame, the payload, its value. */
const UNDECODABLE: [string, string, string][] = [
  ["timeout", USUAL.replace("3600", HUGE), HUGE],
  [
    "max-silent",
    USUAL.replace("(max-silent 600)", `(max-silent -${HUGE})`),
    `-${HUGE}`,
  ],
  ["priority", USUAL.replace("(priority 9)", '(priority "high")'), "high"],
  ["timestamp", USUAL.replace("#f", "#t"), "#t"],
  ["system", USUAL.replace('"x86_64-linux"', "x86_64-linux"), "x86_64-linux"],
  ["timeout", USUAL.replace("(timeout", "(deadline"), "(deadline 3600)"],
  ["max-silent", USUAL.replace(" (max-silent 600)", ""), "(timestamp #f)"],
  ["system", USUAL.replace('"x86_64-linux"', '"x86\\u0007"'), "x86"],
  ["request-id", `${USUAL} (request-id ${HUGE})`, HUGE],
].map(([field, fields, value], i) => [
  field,
  buildPayload(drvNumbered(i), fields),
  value,
]);

Deno.test({
  name:
    "a worker refuses each build it cannot decode with build-failed, naming field and value, and then builds the next",
  async fn() {
    await using server = closing(
      await handingOutServer([
        ...UNDECODABLE.map(([, payload]) => payload),
        { ...buildRequestOf(GOOD_DRV) },
      ]),
    );
    const lines: string[] = [];
    const builds: string[][] = [];
    // The whole reply timeout, as a worker has it: one undecodable build
    // waited out would outlast the test's wait.
    await using session = runningSession(
      sessionOptions(server.port, "UNDECOD1", lines, {
        guix: succeedingGuix(builds),
        replyTimeoutMs: 60_000,
      }),
    );
    await eventually(() => builds.length === 1, "the good build runs");
    assert.equal(builds[0].at(-1), GOOD_DRV);
    const refused = lines.filter((l) => l.startsWith("warn build refused "));
    assert.equal(refused.length, UNDECODABLE.length, lines.join("\n"));
    UNDECODABLE.forEach(([field, , value], i) => {
      const drv = drvNumbered(i);
      assert.ok(refused[i].includes(` drv=${drv} `), refused[i]);
      assert.ok(refused[i].includes(` field=${field} `), refused[i]);
      assert.ok(refused[i].includes(value), `${refused[i]} names ${value}`);
      assert.ok(
        server.heard.some((m) => m.type === "build-failed" && m.drv === drv),
        `build-failed for ${drv}`,
      );
    });
    assert.deepEqual(
      server.heard.filter((m) => m.type === "build-started").map((m) =>
        (m as { drv: string }).drv
      ),
      [GOOD_DRV],
    );
    await within(session.stop(), 10_000, "session end");
  },
});

Deno.test({
  name:
    "a worker drops a build whose derivation it cannot read, says why, and asks again rather than wait its reply timeout",
  async fn() {
    await using server = closing(
      await handingOutServer([
        `(build (drv 42) ${USUAL})`,
        `(build (derivation "${drvNumbered(1)}") ${USUAL})`,
        `(no-build (request-id ${HUGE}))`,
        buildRequestOf(GOOD_DRV),
      ]),
    );
    const lines: string[] = [];
    const builds: string[][] = [];
    await using session = runningSession(
      sessionOptions(server.port, "UNDECOD2", lines, {
        guix: succeedingGuix(builds),
        replyTimeoutMs: 60_000,
      }),
    );
    await eventually(() => builds.length === 1, "the good build runs");
    assert.equal(builds[0].at(-1), GOOD_DRV);
    const dropped = lines.filter((l) => l.startsWith("warn reply dropped "));
    assert.equal(dropped.length, 3, lines.join("\n"));
    assert.match(dropped[0], /field \\"drv\\" is not a string: \\"42\\"/);
    assert.match(dropped[1], /field \\"drv\\" is expected here/);
    assert.match(dropped[2], /field \\"request-id\\"/);
    assert.equal(
      lines.filter((l) => l.startsWith("warn work reply unreadable ")).length,
      3,
      lines.join("\n"),
    );
    assert.ok(!lines.some((l) => l.startsWith("warn build refused ")));
    await within(session.stop(), 10_000, "session end");
  },
});

/** A decodable build request for `drv`. */
function buildRequestOf(drv: string): Message {
  return {
    type: "build",
    drv,
    priority: 9,
    timeout: 3600,
    maxSilent: 600,
    timestamp: null,
    system: "x86_64-linux",
  };
}

/**
 * A fixture whose dispatcher's build requests have `(timeout N)` replaced
 * by a timeout past the safe integers, as a server gone wrong would send.
 */
function mangledTimeoutFixture(): Promise<Fixture> {
  return startFixture({
    logPort: quietPort(),
    routerSeenByDispatcher: (router) =>
      mangling(
        router,
        (text) => text.replace(/\(timeout [0-9]+\)/, `(timeout ${HUGE})`),
      ),
  });
}

/** `router` sending each build request as `mangle` rewrites it. */
function mangling(
  router: RouterSocket,
  mangle: (text: string) => string,
): RouterSocket {
  const seen = routerWatched(router, () => {});
  seen.send = (routingId, frames) => {
    const text = new TextDecoder().decode(frames.at(-1));
    if (!text.startsWith("(build ")) return router.send(routingId, frames);
    const mangled = mangle(text);
    return router.send(routingId, [
      ...frames.slice(0, -1),
      new TextEncoder().encode(mangled),
    ]);
  };
  return seen;
}

Deno.test({
  name:
    "a worker speaking plain Cuirass refuses a build whose timeout is past the safe integers: the server records it failed",
  async fn() {
    await using f = closing(await mangledTimeoutFixture());
    const [drv] = await f.addJobs([job("hello", 1)]);
    const lines: string[] = [];
    const builds: string[][] = [];
    await using session = runningSession(
      sessionOptions(f.port, "UNDECOD3", lines, {
        guix: succeedingGuix(builds),
        extensions: false,
      }),
    );
    await untilStatus(f, drv, BuildStatus.failed, lines.join("\n"));
    assert.equal(builds.length, 0, "guix build never ran");
    const refused = lines.filter((l) => l.startsWith("warn build refused "));
    assert.equal(refused.length, 1, lines.join("\n"));
    assert.ok(refused[0].includes(` drv=${drv} field=timeout `), refused[0]);
    assert.ok(refused[0].includes(HUGE), refused[0]);
    assert.ok(refused[0].includes('action="reported failed"'), refused[0]);
    await within(session.stop(), 10_000, "session end");
  },
});

Deno.test({
  name:
    "a Lorica worker hands back a build whose timeout is past the safe integers, as one whose timeout is out of range",
  async fn() {
    await using f = closing(await mangledTimeoutFixture());
    const [drv] = await f.addJobs([job("hello", 1)]);
    const lines: string[] = [];
    await using session = runningSession(
      sessionOptions(f.port, "UNDECOD4", lines, {
        guix: succeedingGuix([]),
        requestPeriodMs: 60_000,
      }),
    );
    await eventually(
      () =>
        f.lines.some((l) => l.startsWith(`warn build requeued drv=${drv} `)),
      `build requeued\n${lines.join("\n")}`,
    );
    const build = await f.store.getBuildByDerivation(drv);
    assert.equal(build?.status, BuildStatus.scheduled);
    assert.ok(
      lines.some((l) =>
        l.startsWith(`warn build refused worker=UNDECOD4 drv=${drv} `) &&
        l.includes("field=timeout") && l.includes('action="handed back"')
      ),
      lines.join("\n"),
    );
    await within(session.stop(), 10_000, "session end");
  },
});

Deno.test({
  name:
    "a Lorica worker handed a build whose derivation it cannot read, its request id its own, asks again at once rather than wait its reply timeout",
  async fn() {
    let mangled = 0;
    await using f = closing(
      await startFixture({
        logPort: quietPort(),
        routerSeenByDispatcher: (router) =>
          mangling(
            router,
            (text) =>
              ++mangled === 1
                ? text.replace(/\(drv "[^"]*"\)/, "(drv 42)")
                : text,
          ),
      }),
    );
    const [drv] = await f.addJobs([job("hello", 1)]);
    const lines: string[] = [];
    const builds: string[][] = [];
    await using session = runningSession(
      sessionOptions(f.port, "UNDECOD5", lines, {
        guix: succeedingGuix(builds),
        replyTimeoutMs: 60_000,
      }),
    );
    await eventually(
      () => lines.some((l) => l.startsWith("warn work reply unreadable ")),
      `reply unreadable\n${lines.join("\n")}`,
    );
    assert.ok(
      lines.some((l) =>
        l.startsWith("warn reply dropped ") && l.includes('\\"drv\\"')
      ),
      lines.join("\n"),
    );
    // Its next request: the server hands it the build again, readable.
    await untilStatus(f, drv, BuildStatus.succeeded, lines.join("\n"));
    assert.equal(builds.length, 1);
    await within(session.stop(), 10_000, "session end");
  },
});
