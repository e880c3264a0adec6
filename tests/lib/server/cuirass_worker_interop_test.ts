// The dispatcher serving a Cuirass worker played by libzmq itself
// (python3-zmq): two DEALERs, one for requests and one for pings, with no
// identity, sending exactly what `cuirass remote-worker` sends. Every reply
// is checked byte for byte against cuirass.md §1.3: Cuirass matches them
// positionally, and any other shape kills its worker fiber.

import assert from "node:assert/strict";
import { BuildStatus, type Store } from "../../../lib/store/types.ts";
import {
  eventually,
  type Fixture,
  job,
  startFixture,
} from "./_dispatch_fixture.ts";
import {
  fromHex,
  libzmqMissing,
  LibzmqPeer,
  toHex,
} from "../zmtp/libzmq_peer.ts";
import { connectLibzmqDealer, startLibzmqPeer } from "../zmtp/_sockets.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const ignore = libzmqMissing !== undefined;
const needs = ignore ? ` (skipped: ${libzmqMissing})` : "";

/** `fixture`, closed when the test's scope ends (`await using`). */
function closedAtEnd(fixture: Fixture): Fixture & AsyncDisposable {
  return Object.assign(fixture, {
    [Symbol.asyncDispose]: () => fixture.close(),
  });
}

/**
 * Sends `text` on the libzmq DEALER `name` as a Cuirass worker frames a
 * message: an empty delimiter, then the s-expression.
 */
function sendFramed(python: LibzmqPeer, name: string, text: string) {
  return python.must({
    op: "send",
    name,
    frames: ["", toHex(encoder.encode(text))],
  });
}

Deno.test({
  name:
    "the dispatcher answers a libzmq Cuirass worker byte for byte: probe, M2, M7 in Cuirass's field order, M6, and its result counts" +
    needs,
  ignore,
  async fn() {
    await using f = closedAtEnd(await startFixture());
    await using python = await startLibzmqPeer();
    const [drv] = await f.addJobs([job("hello", 1)], 9);
    for (const name of ["w", "ping"]) {
      await connectLibzmqDealer(python, f.port, { name });
      // ZMQ_PROBE_ROUTER: one empty frame, before anything is asked.
      assert.deepEqual(
        (await python.must({ op: "recv", name })).frames,
        [""],
        `the probe on ${name}`,
      );
    }
    const send = (name: string, text: string) => sendFramed(python, name, text);
    const reply = async () => {
      const { frames } = await python.must({ op: "recv", name: "w" });
      assert.equal(frames!.length, 2, "an empty delimiter and a payload");
      assert.equal(frames![0], "");
      return decoder.decode(fromHex(frames![1]));
    };
    const worker = '(worker (name "q3ZfA9kL") (address "127.0.0.1") ' +
      '(machine "builder1") (systems ("x86_64-linux" "i686-linux")) ' +
      "(last-seen 0))";

    await send("w", "(worker-request-info)");
    assert.equal(
      await reply(),
      '(server-info (worker-address "127.0.0.1") (log-port 9) (publish-port 5557))',
    );
    await send("w", `(worker-ready ${worker})`);
    await send("ping", `(worker-ping ${worker})`);
    await send("w", '(worker-request-work "q3ZfA9kL")');
    assert.equal(
      await reply(),
      `(build (drv "${drv}") (priority 9) (timeout 3600) (max-silent 600) (timestamp #f) (system "x86_64-linux"))`,
    );
    await send("w", `(build-started (drv "${drv}") (worker "q3ZfA9kL"))`);
    await send(
      "w",
      `(build-succeeded (drv "${drv}") (url "http://127.0.0.1:5558") (log #f))`,
    );
    await eventually(
      async () => (await f.status(drv)) === BuildStatus.succeeded,
      "the build recorded as succeeded",
    );
    await send("w", '(worker-request-work "q3ZfA9kL")');
    assert.equal(await reply(), "(no-build)");
    const row = await f.store.getWorker("q3ZfA9kL");
    assert.deepEqual(
      [row?.address, row?.machine, row?.systems],
      ["127.0.0.1", "builder1", ["x86_64-linux", "i686-linux"]],
    );
    assert.ok(
      !f.lines.some((l) => l.startsWith("warn ") || l.startsWith("error ")),
      f.lines.filter((l) => /^(warn|error) /.test(l)).join("\n"),
    );
  },
});

Deno.test({
  name:
    "a libzmq Cuirass worker whose work request fails in the store still gets its reply: no-build, the failure logged" +
    needs,
  ignore,
  async fn() {
    // A store write that fails for this worker's requests only (a
    // constraint, a serialization failure): no outage, so the turn commits
    // without it.
    let failing = false;
    await using f = closedAtEnd(
      await startFixture({
        storeSeenByDispatcher: (store) => {
          const faulty: Store = Object.create(store);
          faulty.batch = (work, options) =>
            store.batch((tx) => {
              const inner: Store = Object.create(tx);
              inner.touchWorker = (name, now, timeout) =>
                failing
                  ? Promise.reject(new Error(`touch of ${name} refused`))
                  : tx.touchWorker(name, now, timeout);
              return work(inner);
            }, options);
          return faulty;
        },
      }),
    );
    await using python = await startLibzmqPeer();
    await f.addJobs([job("hello", 1)]);
    await connectLibzmqDealer(python, f.port);
    await python.must({ op: "recv", name: "w" }); // the probe
    const send = (text: string) => sendFramed(python, "w", text);
    await send(
      '(worker-ready (worker (name "FAULTY01") (address "127.0.0.1") ' +
        '(machine "m") (systems ("x86_64-linux")) (last-seen 0)))',
    );
    await eventually(
      () => f.lines.some((l) => l.startsWith("info worker ready ")),
      "the registration",
    );
    // Long enough after its registration for the request to record its
    // last contact: the write that fails.
    await f.clock.advance(60_000);
    failing = true;
    await send('(worker-request-work "FAULTY01")');
    // A Cuirass worker waits for this reply without a time limit.
    const answer = await python.request({
      op: "recv",
      name: "w",
      timeout: 3000,
    });
    assert.ok(answer.ok, "a reply to the work request");
    assert.equal(decoder.decode(fromHex(answer.frames![1])), "(no-build)");
    assert.ok(
      f.lines.some((l) =>
        l.startsWith("error message handling failed") &&
        l.includes("touch of FAULTY01 refused")
      ),
    );
    // Once the store takes the write again, the worker gets its build.
    failing = false;
    await send('(worker-request-work "FAULTY01")');
    const build = await python.must({ op: "recv", name: "w" });
    assert.match(decoder.decode(fromHex(build.frames![1])), /^\(build /);
  },
});

Deno.test({
  name:
    "a libzmq Cuirass worker reading its replies one request late after a server restart keeps the build it was given, its result counts, and it is back in step for the next build" +
    needs,
  ignore,
  async fn() {
    const first = await startFixture();
    let firstRunning = true;
    let second: Fixture | undefined;
    const python = await LibzmqPeer.start();
    try {
      const [drv, next] = await first.addJobs(
        [job("hello", 1), job("world", 2)],
        9,
      );
      await connectLibzmqDealer(python, first.port);
      const receive = async () =>
        (await python.must({ op: "recv", name: "w" })).frames!;
      const send = (text: string) => sendFramed(python, "w", text);
      const reply = async () => decoder.decode(fromHex((await receive())[1]));
      const request = '(worker-request-work "ONELATE1")';
      assert.deepEqual(await receive(), [""], "the probe");
      await send(
        '(worker-ready (worker (name "ONELATE1") (address "127.0.0.1") ' +
          '(machine "m") (systems ("x86_64-linux")) (last-seen 0)))',
      );
      await eventually(
        () => first.lines.some((l) => l.startsWith("info worker ready ")),
        "the registration",
      );
      firstRunning = false;
      await first.close(true);
      // Asked while the server is away: libzmq keeps the request and sends
      // it to the new server as it connects.
      await send(request);
      second = await startFixture({
        database: first.database,
        port: first.port,
      });
      // The new server's probe comes first: Cuirass takes it for a restart
      // and asks again, before reading the answer to its first request.
      assert.deepEqual(await receive(), [""], "the new server's probe");
      await send(request);
      assert.match(await reply(), new RegExp(`^\\(build \\(drv "${drv}"\\)`));
      await send(`(build-started (drv "${drv}") (worker "ONELATE1"))`);
      await send(
        `(build-succeeded (drv "${drv}") (url "http://127.0.0.1:5558") (log #f))`,
      );
      const restarted = second;
      await eventually(
        async () => (await restarted.status(drv)) === BuildStatus.succeeded,
        "the build recorded as succeeded",
      );
      // The request it sent after the probe went unanswered, so the build
      // it read was that request's reply: its next request gets its own,
      // the next build at once, not a stale "no build" that would make it
      // sleep a request period (15-44 s) first.
      await send(request);
      assert.match(await reply(), new RegExp(`^\\(build \\(drv "${next}"\\)`));
      assert.ok(
        restarted.lines.some((l) =>
          l.startsWith("info work request left unanswered") &&
          l.includes("worker=ONELATE1")
        ),
        restarted.lines.join("\n"),
      );
      assert.ok(
        !restarted.lines.some((l) => l.startsWith("warn withheld reply sent")),
        restarted.lines.join("\n"),
      );
      assert.ok(
        !restarted.lines.some((l) =>
          /^warn (build requeued|start ignored)/.test(l)
        ),
        restarted.lines.join("\n"),
      );
    } finally {
      await python.stop();
      if (firstRunning) await first.close();
      else await Deno.remove(first.root, { recursive: true });
      await second?.close();
    }
  },
});
