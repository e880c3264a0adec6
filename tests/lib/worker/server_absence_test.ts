// A session's server away: said at once, with the server and how long it
// has been silent, again once an interval while it lasts (not at each
// attempt to connect), and said back when it is. Against the fake clock,
// then a real session whose real server (the dispatcher) is stopped and
// started again on its port.

import assert from "node:assert/strict";
import { ServerAbsence } from "../../../lib/worker/server_absence.ts";
import { runSession } from "../../../lib/worker/session.ts";
import { createLogger } from "../../../lib/log.ts";
import {
  eventually,
  FakeClock,
  type Fixture,
  startFixture,
} from "../server/_dispatch_fixture.ts";
import { bindAgain, quietPort } from "../../_ports.ts";
import { sessionOptions } from "./_session_helpers.ts";

function absence(clock: FakeClock, lines: string[]) {
  return new ServerAbsence({
    server: "10.0.0.1:5555",
    clock,
    logger: createLogger({
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    repeatMs: 60_000,
  });
}

const REFUSED = new Error("Connection refused (os error 111)");

Deno.test("ServerAbsence says the first failed attempt at once, then once a minute however many fail, then the server back", async () => {
  const clock = new FakeClock();
  const lines: string[] = [];
  const away = absence(clock, lines);
  await clock.advance(30_000);
  away.heard();
  await clock.advance(12_000);
  away.unreachable(REFUSED);
  assert.deepEqual(lines, [
    'warn server unreachable server=10.0.0.1:5555 silent=12 error="Connection refused (os error 111)"',
  ]);
  // The socket tries again every few seconds.
  for (let i = 0; i < 11; i++) {
    await clock.advance(5000);
    away.unreachable(REFUSED);
  }
  assert.equal(lines.length, 1, lines.join("\n"));
  await clock.advance(5000);
  away.unreachable(REFUSED);
  assert.equal(
    lines[1],
    'warn server unreachable server=10.0.0.1:5555 silent=72 error="Connection refused (os error 111)"',
  );
  await clock.advance(3000);
  away.connected();
  assert.equal(
    lines[2],
    "info server reachable again server=10.0.0.1:5555 silent=75",
  );
  // Away again: said at once again.
  away.heard();
  away.connected();
  away.unreachable(REFUSED);
  assert.equal(lines.length, 4, lines.join("\n"));
  assert.match(lines[3], /^warn server unreachable .* silent=0 /);
});

Deno.test("ServerAbsence counts the silence from the connection lost, not from the server's last message: a worker building for hours hears nothing meanwhile", async () => {
  const clock = new FakeClock();
  const lines: string[] = [];
  const away = absence(clock, lines);
  away.heard();
  away.connected();
  await clock.advance(3 * 3600_000);
  away.lost();
  await clock.advance(2000);
  away.unreachable(REFUSED);
  assert.deepEqual(lines, [
    'warn server unreachable server=10.0.0.1:5555 silent=2 error="Connection refused (os error 111)"',
  ]);
});

Deno.test("ServerAbsence says nothing of a connection that never failed, nor after close()", () => {
  const clock = new FakeClock();
  const lines: string[] = [];
  const away = absence(clock, lines);
  away.connected();
  away.close();
  away.unreachable(REFUSED);
  away.connected();
  assert.deepEqual(lines, []);
});

Deno.test({
  name:
    "a session whose server stops says at once that it is unreachable, naming it, and says when it is back",
  async fn() {
    let f: Fixture | undefined = await startFixture({ logPort: quietPort() });
    const port = f.port;
    const database = f.database;
    const firstRoot = f.root;
    const lines: string[] = [];
    const abort = new AbortController();
    const running = runSession(
      sessionOptions(port, "AWAY0001", lines, { requestPeriodMs: 60_000 }),
      abort.signal,
    );
    try {
      await eventually(
        () => lines.some((l) => l.startsWith("info worker registered ")),
        "registered",
      );
      await f.close(true);
      f = undefined;
      const stoppedAt = Date.now();
      await eventually(
        () => lines.some((l) => l.startsWith("warn server unreachable ")),
        `the server said away\n${lines.join("\n")}`,
      );
      assert.ok(Date.now() - stoppedAt < 2000, "said at once");
      assert.match(
        lines.find((l) => l.startsWith("warn server unreachable "))!,
        new RegExp(
          `^warn server unreachable worker=AWAY0001 server=127\\.0\\.0\\.1:${port} silent=\\d+ error=.*Connection refused`,
        ),
      );
      // Away for a moment more: its attempts fail, and say nothing more.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      f = await bindAgain(() =>
        startFixture({ port, database, logPort: quietPort() })
      );
      await eventually(
        () =>
          lines.some((l) =>
            l.startsWith(
              `info server reachable again worker=AWAY0001 server=127.0.0.1:${port} silent=`,
            )
          ),
        `the server said back\n${lines.join("\n")}`,
      );
      assert.equal(
        lines.filter((l) => l.startsWith("warn server unreachable ")).length,
        1,
        lines.join("\n"),
      );
    } finally {
      abort.abort();
      await running;
      await f?.close();
      await Deno.remove(firstRoot, { recursive: true }).catch(() => {});
    }
  },
});
