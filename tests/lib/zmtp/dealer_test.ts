// Tests for DealerSocket: against a real libzmq ROUTER (python3-zmq in a child
// process, set up like Cuirass's server) and on its own.

import assert from "node:assert/strict";
import { ZmtpClosedError } from "../../../lib/zmtp/connection.ts";
import { DealerSocket } from "../../../lib/zmtp/dealer.ts";
import {
  fromHex,
  libzmqMissing,
  pattern,
  PEER_TIMEOUT_MS,
  sha256,
  toHex,
} from "./libzmq_peer.ts";
import { bindCuirassRouter, localDealer, startLibzmqPeer } from "./_sockets.ts";
import { bindAgain, quietPort } from "../../_ports.ts";
import { within } from "../../_within.ts";

const text = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * Waits until nothing listens on `port` any more: libzmq closes a socket
 * in its I/O thread, after `close` returned, and a listener still closing
 * may take a connection only to drop it (and what was sent on it).
 */
async function nothingListens(port: number): Promise<void> {
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionRefused) return;
      throw error;
    }
    assert.ok(i < 250, `port ${port} still listens`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test("DealerSocket.send() waits for a connection and rejects on abort or close", async () => {
  const port = quietPort();
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port,
    reconnectMaxMs: 50,
  });
  assert.equal(dealer.connected, false);
  const controller = new AbortController();
  const aborted = assert.rejects(
    dealer.send([text.encode("stale")], controller.signal),
    /gave up/,
  );
  controller.abort(new Error("gave up"));
  await aborted;
  const pendingSend = assert.rejects(dealer.send([EMPTY]), ZmtpClosedError);
  const pendingReceive = assert.rejects(dealer.receive(), ZmtpClosedError);
  await dealer.close();
  await pendingSend;
  await pendingReceive;
  await assert.rejects(dealer.send([EMPTY]), ZmtpClosedError);
});

Deno.test("DealerSocket.connect() says each connection attempt that fails, until closed", async () => {
  const port = quietPort();
  const errors: unknown[] = [];
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port,
    reconnectInitialMs: 10,
    reconnectMaxMs: 20,
    onConnectFailed: (error) => errors.push(error),
  });
  try {
    for (let i = 0; errors.length < 2; i++) {
      assert.ok(i < 250, "two failed attempts said");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(
      errors.every((error) => error instanceof Deno.errors.ConnectionRefused),
      String(errors),
    );
  } finally {
    await dealer.close();
  }
  const said = errors.length;
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(errors.length, said, "nothing said once closed");
});

const ignore = libzmqMissing !== undefined;
const needs = ignore ? ` (skipped: ${libzmqMissing})` : "";

Deno.test({
  name:
    `DealerSocket talks to a libzmq ROUTER: probe, request/reply, Peer-Address${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python);
    await using dealer = localDealer(port);
    await dealer.send([EMPTY, text.encode("(worker-ready)")]);
    // The libzmq ROUTER sends its probe once the application polls it.
    const request = await python.must({ op: "recv", name: "server" });
    assert.equal(request.peerAddress, "127.0.0.1");
    assert.equal(request.frames!.length, 3);
    assert.deepEqual(request.frames!.slice(1).map(fromHex), [
      EMPTY,
      text.encode("(worker-ready)"),
    ]);
    assert.deepEqual(await dealer.receive(), [EMPTY]);

    await python.must({
      op: "send",
      name: "server",
      frames: [request.frames![0], "", toHex(text.encode("(reply)"))],
    });
    assert.deepEqual(await dealer.receive(), [EMPTY, text.encode("(reply)")]);
  },
});

Deno.test({
  name: `DealerSocket identity becomes the libzmq ROUTER's routing id${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python);
    const identity = text.encode("lorica-worker-1");
    await using dealer = localDealer(port, {
      identity,
    });
    await dealer.send([text.encode("x")]);
    const request = await python.must({ op: "recv", name: "server" });
    assert.deepEqual(request.frames, [
      toHex(identity),
      toHex(text.encode("x")),
    ]);
    await python.must({
      op: "send",
      name: "server",
      frames: [toHex(identity), "ab"],
    });
    assert.deepEqual(await dealer.receive(), [EMPTY]);
    assert.deepEqual(await dealer.receive(), [new Uint8Array([0xab])]);
  },
});

Deno.test({
  name:
    `DealerSocket sends and receives long, 10 MiB and multipart frames with libzmq${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python);
    await using dealer = localDealer(port);
    const big = 10 * 1024 * 1024;
    const frames = [
      EMPTY,
      pattern(255, 3),
      pattern(256, 4),
      pattern(big, 6),
      text.encode("last"),
    ];
    await dealer.send(frames);
    const echoed = await python.must({ op: "echo", name: "server" });
    const digests = await Promise.all(frames.map(sha256));
    assert.deepEqual(echoed.sizes!.slice(1), [0, 255, 256, big, 4]);
    assert.deepEqual(echoed.sha256!.slice(1), digests);
    assert.deepEqual(await dealer.receive(), [EMPTY]); // probe
    const back = await dealer.receive();
    assert.deepEqual(await Promise.all(back.map(sha256)), digests);
  },
});

Deno.test({
  name:
    `DealerSocket reconnects after the libzmq ROUTER restarts on the same port${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python, quietPort());
    const down = Promise.withResolvers<void>();
    let ups = 0;
    await using dealer = localDealer(port, {
      reconnectInitialMs: 20,
      onConnect: () => ups++,
      onDisconnect: () => down.resolve(),
    });
    await dealer.send([EMPTY, text.encode("one")]);
    await python.must({ op: "recv", name: "server" });
    await python.must({ op: "close", name: "server" });
    await within(
      down.promise,
      PEER_TIMEOUT_MS,
      "disconnect of our DEALER from the closed libzmq ROUTER",
    );
    assert.equal(dealer.connected, false);

    // A request made while the server is down waits, then goes exactly once.
    const sent = dealer.send([EMPTY, text.encode("two")]);
    await bindAgain(() => bindCuirassRouter(python, port));
    await sent;
    const request = await python.must({ op: "recv", name: "server" });
    assert.deepEqual(request.frames!.slice(1).map(fromHex), [
      EMPTY,
      text.encode("two"),
    ]);
    assert.equal(
      (await python.request({ op: "recv", name: "server", timeout: 200 }))
        .error,
      "timeout",
    );
    assert.equal(ups, 2);
    assert.deepEqual(await dealer.receive(), [EMPTY]); // first server's probe
    assert.deepEqual(await dealer.receive(), [EMPTY]); // second server's probe
  },
});

Deno.test({
  name:
    `DealerSocket.sendAll() made while the libzmq ROUTER is down sends its messages in order, all on the next connection${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python, quietPort());
    await python.must({ op: "close", name: "server" });
    await nothingListens(port);
    let ups = 0;
    await using dealer = localDealer(port, {
      reconnectInitialMs: 20,
      reconnectMaxMs: 100,
      onConnect: () => ups++,
    });
    // Settled whatever comes first: a failure is this test's to report,
    // not an uncaught rejection while the router binds again.
    const sent = dealer.sendAll([
      [EMPTY, text.encode("hello")],
      [EMPTY, text.encode("request")],
    ]).then(() => null, (error: unknown) => error);
    await bindAgain(() => bindCuirassRouter(python, port));
    assert.equal(
      await within(
        sent,
        PEER_TIMEOUT_MS,
        "connection of our DEALER to the libzmq ROUTER bound again",
      ),
      null,
      "sent",
    );
    // Counted before the send returns: the connection it went on.
    assert.equal(ups, 1);
    const first = await python.must({ op: "recv", name: "server" });
    const second = await python.must({ op: "recv", name: "server" });
    assert.deepEqual(
      [first, second].map((m) => m.frames!.slice(1).map(fromHex)),
      [[EMPTY, text.encode("hello")], [EMPTY, text.encode("request")]],
    );
    assert.equal(first.frames![0], second.frames![0], "one connection");
  },
});

Deno.test({
  name:
    `DealerSocket does not flood a libzmq ROUTER with requests given up while it was down${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python, quietPort());
    await python.must({ op: "close", name: "server" });
    await using dealer = localDealer(port, {
      reconnectInitialMs: 20,
      reconnectMaxMs: 100,
    });
    for (let i = 0; i < 5; i++) {
      const controller = new AbortController();
      const stale = assert.rejects(
        dealer.send([EMPTY, text.encode(`ping-${i}`)], controller.signal),
      );
      controller.abort();
      await stale;
    }
    await bindAgain(() => bindCuirassRouter(python, port));
    await dealer.send([EMPTY, text.encode("fresh")]);
    const request = await python.must({ op: "recv", name: "server" });
    assert.deepEqual(request.frames!.slice(1).map(fromHex), [
      EMPTY,
      text.encode("fresh"),
    ]);
    assert.equal(
      (await python.request({ op: "recv", name: "server", timeout: 200 }))
        .error,
      "timeout",
    );
  },
});

Deno.test({
  name: `DealerSocket answers a libzmq ROUTER's heartbeat PINGs${needs}`,
  ignore,
  fn: async () => {
    await using python = await startLibzmqPeer();
    const port = await bindCuirassRouter(python, 0, {
      heartbeat_ivl: 50,
      heartbeat_timeout: 200,
    });
    let disconnects = 0;
    await using dealer = localDealer(port, {
      onDisconnect: () => disconnects++,
    });
    await dealer.send([text.encode("a")]);
    const first = await python.must({ op: "recv", name: "server" });
    await python.must({ op: "sleep", ms: 1000 });
    await dealer.send([text.encode("b")]);
    const second = await python.must({ op: "recv", name: "server" });
    assert.equal(second.frames![0], first.frames![0]);
    assert.equal(disconnects, 0);
  },
});
