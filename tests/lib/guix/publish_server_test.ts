// The publish child against the fake guix: a start that fails is an error
// naming the port, a death afterwards is reported, a stop asked for is not.

import assert from "node:assert/strict";
import { Guix } from "../../../lib/guix/guix_command.ts";
import {
  PublishDiedError,
  PublishStartError,
  startPublish,
} from "../../../lib/guix/publish_server.ts";
import { createLogger, type Logger } from "../../../lib/log.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { GUIX, makeRoot, makeSigningDaemon } from "../../fake-guix/test_env.ts";
import { FakeClock, within } from "../server/_dispatch_fixture.ts";

/** A logger keeping its lines (without timestamps) in `lines`. */
function capture(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({
    level: "debug",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  return { logger, lines };
}

/** Runs `body` with a Guix on a fresh fake daemon; removes it afterwards. */
async function withFakeGuix(
  body: (guix: Guix, logger: Logger, lines: string[]) => Promise<void>,
) {
  const root = await makeRoot();
  const { logger, lines } = capture();
  try {
    const daemon = await makeSigningDaemon(root, "publisher");
    await body(
      new Guix({ command: GUIX, env: daemon.env, logger }),
      logger,
      lines,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("startPublish() fails naming the port when guix publish finds it in use", async () => {
  const held = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await withFakeGuix(async (guix, logger, lines) => {
      const error = await startPublish(guix, {
        port: held.addr.port,
        listen: "127.0.0.1",
        logger,
      }).then(() => null, (error) => error);
      assert.ok(error instanceof PublishStartError, String(error));
      assert.equal(
        error.message,
        `Cannot start guix publish on the publish port 127.0.0.1:${held.addr.port}: exit code 1: guix publish: error: Address already in use (os error 98)`,
      );
      assert.ok(
        lines.some((line) =>
          line.startsWith("error process exited ") &&
          line.includes(" code=1 ")
        ),
        lines.join("\n"),
      );
    });
  } finally {
    held.close();
  }
});

Deno.test("startPublish() names the key option when guix publish cannot read the key", async () => {
  await withFakeGuix(async (guix, logger) => {
    await assert.rejects(
      startPublish(guix, {
        port: 0,
        listen: "127.0.0.1",
        extraArgs: ["--private-key=/nonexistent/signing-key.sec"],
        logger,
      }),
      (error: Error) => {
        assert.ok(error instanceof PublishStartError);
        assert.match(
          error.message,
          /^Cannot start guix publish on the publish port 127\.0\.0\.1:0 \(with --private-key=\/nonexistent\/signing-key\.sec\): exit code 1: guix publish: error: cannot read private key: .*\/nonexistent\/signing-key\.sec/,
        );
        return true;
      },
    );
  });
});

Deno.test("startPublish() resolves once guix publish listens, and reports its death at error level", async () => {
  await withFakeGuix(async (guix, logger, lines) => {
    const publish = await startPublish(guix, {
      port: 0,
      listen: "127.0.0.1",
      logger,
    });
    try {
      assert.ok(
        lines.some((line) =>
          / line="guix publish: publishing .* port \d+"/.test(line)
        ),
        lines.join("\n"),
      );
      Deno.kill(publish.pid, "SIGKILL");
      const died = await within(publish.died, 30_000, "death reported");
      assert.ok(died instanceof PublishDiedError);
      assert.match(
        died.message,
        /^Cannot publish on the publish port 127\.0\.0\.1:0: guix publish was killed by SIGKILL; its last output: "guix publish: /,
      );
      assert.ok(
        lines.some((line) =>
          line.startsWith("error process exited ") &&
          line.includes("signal=SIGKILL")
        ),
        lines.join("\n"),
      );
    } finally {
      await publish.stop();
    }
  });
});

Deno.test("startPublish() reports no death for a stop it asked for", async () => {
  await withFakeGuix(async (guix, logger, lines) => {
    const publish = await startPublish(guix, {
      port: 0,
      listen: "127.0.0.1",
      logger,
    });
    await publish.stop();
    const first = await Promise.race([publish.died, Promise.resolve("none")]);
    assert.equal(first, "none");
    assert.ok(
      lines.some((line) => line.startsWith("info process exited ")),
      lines.join("\n"),
    );
    assert.ok(!lines.some((line) => line.startsWith("error ")));
  });
});

Deno.test("startPublish() goes on with a warning when guix publish runs but never says it listens", async () => {
  const { logger, lines } = capture();
  const clock = new FakeClock();
  const exit = Promise.withResolvers<{ code: number; signal: null }>();
  const spawn: Spawner = (argv) => {
    assert.equal(argv[1], "publish");
    const child: Child = {
      pid: 4242,
      stdout: ReadableStream.from<Uint8Array>([]),
      stderr: new ReadableStream({
        start(controller) {
          exit.promise.then(() => controller.close());
        },
      }),
      stdin: null,
      status: exit.promise,
      kill() {
        exit.resolve({ code: 0, signal: null });
      },
    };
    return child;
  };
  const starting = startPublish(
    new Guix({ command: "guix", logger, spawn }),
    { port: 5558, listen: "0.0.0.0", logger, clock, startTimeoutMs: 60_000 },
  );
  await clock.advance(60_000);
  const publish = await within(starting, 10_000, "start");
  assert.ok(
    lines.includes(
      'warn publish start unconfirmed address=0.0.0.0:5558 waited=60 reason="guix publish runs but did not say it listens"',
    ),
    lines.join("\n"),
  );
  await publish.stop();
});
