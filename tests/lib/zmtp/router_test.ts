// Tests for RouterSocket: against our DealerSocket, raw TCP garbage, and real
// libzmq DEALERs (python3-zmq in a child process).

import assert from "node:assert/strict";
import net from "node:net";
import { bindAgain, quietPort } from "../../_ports.ts";
import { DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { ZmtpClosedError } from "../../../lib/zmtp/connection.ts";
import { encodeCommandFrame, encodeMessage } from "../../../lib/zmtp/frame.ts";
import { encodeGreeting, encodeReady } from "../../../lib/zmtp/greeting.ts";
import { createLogger } from "../../../lib/log.ts";
import {
  PeerUnreachableError,
  type RouterMessage,
  type RouterPeer,
  RouterSocket,
} from "../../../lib/zmtp/router.ts";
import {
  fromHex,
  libzmqMissing,
  pattern,
  PEER_TIMEOUT_MS,
  sha256,
  toHex,
} from "./libzmq_peer.ts";
import {
  connectLibzmqDealer,
  localDealer,
  localRouter,
  startLibzmqPeer,
} from "./_sockets.ts";
import { within } from "../../_within.ts";

const text = new TextEncoder();
const EMPTY = new Uint8Array(0);

function utf8(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** Polls `condition` every 10 ms, failing after 5 s. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i === 500) {
      throw new Error("Cannot see the condition become true in 5 s");
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("RouterSocket and DealerSocket exchange a request and reply after the probe", async () => {
  await using router = await localRouter();
  await using dealer = localDealer(router.port);
  assert.deepEqual(await dealer.receive(), [EMPTY]);
  assert.equal(dealer.connected, true);
  await dealer.send([EMPTY, text.encode("hello")]);
  const request = await router.receive();
  assert.deepEqual(request.frames, [EMPTY, text.encode("hello")]);
  assert.equal(request.peerAddress, "127.0.0.1");
  assert.equal(request.routingId.length, 5);
  assert.equal(request.routingId[0], 0);
  await router.send(request.routingId, [EMPTY, text.encode("world")]);
  assert.deepEqual(await dealer.receive(), [EMPTY, text.encode("world")]);

  // Routing ids are copies: scribbling on one does not change the next.
  const original = request.routingId.slice();
  request.routingId.fill(0xee);
  await dealer.send([text.encode("again")]);
  assert.deepEqual((await router.receive()).routingId, original);
});

Deno.test("RouterSocket uses a peer's identity and refuses a live duplicate", async () => {
  const connects: RouterPeer[] = [];
  const gone = Promise.withResolvers<void>();
  await using router = await localRouter({
    onConnect: (peer) => connects.push(peer),
    onDisconnect: () => gone.resolve(),
  });
  const identity = text.encode("worker-1");
  await using first = localDealer(router.port, { identity });
  const refused = Promise.withResolvers<void>();
  await first.receive(); // probe
  await using second = localDealer(router.port, {
    identity,
    reconnectInitialMs: 20,
    onDisconnect: () => refused.resolve(),
  });
  await refused.promise;
  assert.equal(connects.length, 1);
  assert.deepEqual(connects[0].routingId, identity);
  await router.send(identity, [text.encode("to first")]);
  assert.deepEqual(await first.receive(), [text.encode("to first")]);

  // Once the first one leaves, the second one gets the identity.
  await first.close();
  await gone.promise;
  assert.deepEqual(await second.receive(), [EMPTY]);
  assert.equal(connects.length, 2);
  await second.send([text.encode("from second")]);
  const message = await router.receive();
  assert.deepEqual(message.routingId, identity);
  assert.deepEqual(message.frames, [text.encode("from second")]);
});

Deno.test("RouterSocket keeps each peer's order and takes peers in turn", async () => {
  const router = await localRouter();
  const dealers = ["a", "b"].map((name) =>
    DealerSocket.connect({
      hostname: "127.0.0.1",
      port: router.port,
      identity: text.encode(name),
    })
  );
  try {
    for (const dealer of dealers) await dealer.receive();
    for (let i = 0; i < 50; i++) {
      await Promise.all(
        dealers.map((d) => d.send([text.encode(String(i)), EMPTY])),
      );
    }
    // Let both connections' messages reach the ROUTER's queues.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const got: RouterMessage[] = [];
    for (let i = 0; i < 100; i++) got.push(await router.receive());
    for (const name of ["a", "b"]) {
      const mine = got.filter((m) => utf8(m.routingId) === name);
      assert.deepEqual(
        mine.map((m) => utf8(m.frames[0])),
        [...Array(50).keys()].map(String),
      );
      assert.ok(mine.every((m) => m.frames.length === 2));
    }
    const firstTen = new Set(got.slice(0, 10).map((m) => utf8(m.routingId)));
    assert.equal(firstTen.size, 2, "both peers served early");
  } finally {
    for (const dealer of dealers) await dealer.close();
    await router.close();
  }
});

Deno.test("RouterSocket.send() to an unknown or departed peer throws PeerUnreachableError", async () => {
  const gone = Promise.withResolvers<void>();
  await using router = await localRouter({
    onDisconnect: () => gone.resolve(),
  });
  await using dealer = localDealer(router.port);
  await assert.rejects(
    router.send(new Uint8Array([0, 1, 2, 3, 4]), [EMPTY]),
    PeerUnreachableError,
  );
  await dealer.send([text.encode("hi")]);
  const { routingId } = await router.receive();
  await dealer.close();
  await gone.promise;
  await assert.rejects(
    router.send(routingId, [EMPTY]),
    (error) =>
      error instanceof PeerUnreachableError && error.routingId.length === 5,
  );
});

Deno.test("RouterSocket.receive() honours abort signals and rejects once closed", async () => {
  const router = await localRouter();
  const controller = new AbortController();
  const pending = router.receive(controller.signal);
  controller.abort(new Error("stop waiting"));
  await assert.rejects(pending, /stop waiting/);
  const waiting = assert.rejects(router.receive(), ZmtpClosedError);
  const iterated: RouterMessage[] = [];
  const loop = (async () => {
    for await (const message of router) iterated.push(message);
  })();
  await router.close();
  await waiting;
  await loop;
  assert.equal(iterated.length, 0);
  await assert.rejects(router.receive(), ZmtpClosedError);
});

Deno.test("RouterSocket drops garbage, oversized and silent connections but keeps serving", async () => {
  let drops = 0;
  await using router = await localRouter({
    maxMessageBytes: 1000,
    handshakeTimeoutMs: 200,
    onDisconnect: () => drops++,
  });
  const handshake = [
    encodeGreeting(),
    encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
  ];
  const attacks: [string, Uint8Array[]][] = [
    ["http", [text.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]],
    ["random", [crypto.getRandomValues(new Uint8Array(4096))]],
    ["silent", []],
    ["oversized", [...handshake, encodeMessage([new Uint8Array(1001)])]],
    ["oversized multipart", [
      ...handshake,
      encodeMessage([new Uint8Array(600), new Uint8Array(600)]),
    ]],
    ["bad flags", [...handshake, new Uint8Array([0xf0, 0x00])]],
    ["huge claim", [
      ...handshake,
      new Uint8Array([0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ]],
  ];
  for (const [name, writes] of attacks) {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: router.port,
    });
    try {
      for (const bytes of writes) await conn.write(bytes);
      const buffer = new Uint8Array(4096);
      // The ROUTER must hang up on us; reset counts too.
      while (
        (await conn.read(buffer).catch(() => null)) !== null
      ) { /* drain */ }
    } finally {
      conn.close();
    }
    assert.ok(true, name);
  }
  // The four that completed a handshake were registered, then dropped.
  await until(() => drops === 4);

  await using dealer = localDealer(router.port);
  await dealer.send([text.encode("still here")]);
  assert.deepEqual((await router.receive()).frames, [
    text.encode("still here"),
  ]);
});

/** A logger collecting its lines into `lines`. */
function capture(lines: string[]) {
  return createLogger({
    level: "debug",
    timestamps: false,
    sink: (line) => lines.push(line),
  });
}

/** Resolves once the server closed `conn` (end of stream or reset). */
async function hungUp(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  while ((await conn.read(buffer).catch(() => null)) !== null) {
    // The probe and whatever else the ROUTER sends before hanging up.
  }
}

Deno.test("RouterSocket refuses an oversized message from its frame header, before the body, and warns with the peer and size", async () => {
  const lines: string[] = [];
  await using router = await localRouter({
    maxMessageBytes: 1000,
    logger: capture(lines),
  });
  const handshake = [
    encodeGreeting(),
    encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
  ];
  // Each attack sends a frame header that takes the message past 1000
  // bytes and only a few bytes of that frame's body, then waits: the
  // ROUTER must hang up without waiting for the rest.
  const attacks: [string, number | string, Uint8Array][] = [
    [
      // Past the safe integers: logged as declared, not clamped.
      "a frame of 2^62 bytes",
      "4611686018427387904",
      new Uint8Array([0x02, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
    ],
    [
      "one frame",
      1_000_000,
      new Uint8Array([
        0x02,
        ...[0, 0, 0, 0, 0, 0x0f, 0x42, 0x40],
        1,
        2,
        3,
      ]),
    ],
    [
      "the second frame of a message",
      1200,
      new Uint8Array([
        ...encodeMessage([new Uint8Array(600), EMPTY]).subarray(0, 9 + 600),
        0x02,
        ...[0, 0, 0, 0, 0, 0, 0x02, 0x58],
        1,
        2,
        3,
      ]),
    ],
  ];
  for (const [what, size, bytes] of attacks) {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: router.port,
    });
    try {
      for (const part of [...handshake, bytes]) await conn.write(part);
      await within(hungUp(conn), 10_000, `hang-up after ${what}`);
    } finally {
      conn.close();
    }
    await until(() =>
      lines.some((l) =>
        l.startsWith("warn zmtp message refused peer=127.0.0.1 ") &&
        l.includes(` size=${size} limit=1000`)
      )
    );
  }
  // A message within the limit still goes through.
  await using dealer = localDealer(router.port);
  await dealer.send([EMPTY, new Uint8Array(990)]);
  const { frames } = await router.receive();
  assert.deepEqual(frames.map((f) => f.length), [0, 990]);
});

Deno.test("RouterSocket holds at most maxConnections and logs each newcomer it refuses", async () => {
  const lines: string[] = [];
  await using router = await localRouter({
    maxConnections: 3,
    logger: capture(lines),
  });
  const idle: Deno.Conn[] = [];
  try {
    // Connections that never finish their handshake count as well.
    for (let i = 0; i < 3; i++) {
      idle.push(
        await Deno.connect({ hostname: "127.0.0.1", port: router.port }),
      );
    }
    const extra = await Deno.connect({
      hostname: "127.0.0.1",
      port: router.port,
    });
    try {
      await within(hungUp(extra), 10_000, "refusal");
    } finally {
      extra.close();
    }
    assert.ok(
      lines.some((l) =>
        l.startsWith(
          'warn zmtp connection refused peer=127.0.0.1 reason="too many connections" limit=3',
        )
      ),
      lines.join("\n"),
    );

    // Once one leaves, a dealer gets its place and is served.
    idle.shift()!.close();
    await using dealer = localDealer(router.port, {
      reconnectInitialMs: 20,
    });
    await dealer.send([text.encode("in")]);
    assert.deepEqual((await router.receive()).frames, [text.encode("in")]);
  } finally {
    for (const conn of idle) conn.close();
  }
});

Deno.test("RouterSocket gives one address no more than maxConnectionsPerAddress, so others still get in", async () => {
  const lines: string[] = [];
  await using router = await localRouter({
    maxConnections: 8,
    maxConnectionsPerAddress: 3,
    logger: capture(lines),
  });
  // Another loopback address plays the host that opens every place.
  const hog: net.Socket[] = [];
  let closed = 0;
  try {
    for (let i = 0; i < 8; i++) {
      const socket = net.createConnection({
        host: "127.0.0.1",
        port: router.port,
        localAddress: "127.0.0.2",
      });
      socket.on("error", () => {});
      socket.once("close", () => closed++);
      socket.resume();
      hog.push(socket);
    }
    await until(() => closed === 5);
    await using dealer = localDealer(router.port);
    await dealer.send([text.encode("in")]);
    assert.deepEqual((await router.receive()).frames, [text.encode("in")]);
    const refusals = lines.filter((l) =>
      l.startsWith(
        'warn zmtp connection refused peer=127.0.0.2 reason="too many connections from this address" limit=3',
      )
    );
    assert.equal(refusals.length, 5, lines.join("\n"));
  } finally {
    for (const socket of hog) socket.destroy();
  }
});

Deno.test("RouterSocket stops reading a peer whose queued messages reach highWaterBytes", async () => {
  await using router = await localRouter({ highWaterBytes: 10_000 });
  await using dealer = localDealer(router.port);
  await dealer.receive(); // the probe
  for (let i = 0; i < 50; i++) {
    await dealer.send([new Uint8Array(5000).fill(i)]);
  }
  // Time for every message to come in, were the reads not paused.
  await until(() => router.tryReceive() !== undefined);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const queued: RouterMessage[] = [];
  for (let next; (next = router.tryReceive()) !== undefined;) {
    queued.push(next);
  }
  assert.ok(queued.length <= 2, `${queued.length + 1} messages queued`);
  // Taking them resumes the reads: all 50 arrive, in order.
  const rest: number[] = [];
  while (1 + queued.length + rest.length < 50) {
    rest.push((await router.receive()).frames[0][0]);
  }
  assert.deepEqual(
    [...queued.map((m) => m.frames[0][0]), ...rest],
    [...Array(50).keys()].slice(1),
  );
});

Deno.test("RouterSocket.close() disconnects its dealers, which then reconnect to a new ROUTER on the same port", async () => {
  const router = await localRouter({ port: quietPort() });
  const port = router.port;
  const events: string[] = [];
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port,
    reconnectInitialMs: 20,
    onConnect: () => events.push("up"),
    onDisconnect: () => events.push("down"),
  });
  let second: RouterSocket | undefined;
  try {
    assert.deepEqual(await dealer.receive(), [EMPTY]);
    await router.close();
    second = await bindAgain(() => localRouter({ port }));
    assert.deepEqual(await dealer.receive(), [EMPTY]);
    await dealer.send([text.encode("again")]);
    assert.deepEqual((await second.receive()).frames, [text.encode("again")]);
    assert.deepEqual(events, ["up", "down", "up"]);
  } finally {
    await dealer.close();
    await router.close();
    await second?.close();
  }
});

Deno.test("RouterSocket reports IPv6 peer addresses without brackets", async () => {
  let router: RouterSocket;
  try {
    router = await RouterSocket.bind({ hostname: "::1", port: 0 });
  } catch {
    return; // no IPv6 loopback on this machine
  }
  const dealer = DealerSocket.connect({ hostname: "::1", port: router.port });
  try {
    await dealer.send([text.encode("v6")]);
    assert.equal((await router.receive()).peerAddress, "::1");
  } finally {
    await dealer.close();
    await router.close();
  }
});

// A Cuirass worker writes the address it is told into its publish URL
// unbracketed ("http://" + address + ":" + port): the IPv4-mapped form a
// dual-stack listener sees would make that URL unreadable.
Deno.test("RouterSocket on a dual-stack listener reports IPv4 peers in dotted form", async () => {
  let router: RouterSocket;
  try {
    router = await RouterSocket.bind({ hostname: "::", port: 0 });
  } catch {
    return; // no IPv6 on this machine
  }
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port: router.port,
  });
  try {
    await dealer.send([text.encode("v4 on v6")]);
    assert.equal((await router.receive()).peerAddress, "127.0.0.1");
  } finally {
    await dealer.close();
    await router.close();
  }
});

// The tests below need a real libzmq: Debian's python3-zmq run by /usr/bin/python3.
const ignore = libzmqMissing !== undefined;
const needs = ignore ? ` (skipped: ${libzmqMissing})` : "";

Deno.test({
  name:
    `RouterSocket serves a libzmq DEALER: probe first, request/reply, Peer-Address${needs}`,
  ignore,
  fn: async () => {
    await using router = await localRouter();
    await using python = await startLibzmqPeer();
    await connectLibzmqDealer(python, router.port);
    await python.must({
      op: "send",
      name: "w",
      frames: ["", toHex(text.encode("(worker-request)"))],
    });
    const request = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    assert.deepEqual(request.frames, [
      EMPTY,
      text.encode("(worker-request)"),
    ]);
    assert.equal(request.peerAddress, "127.0.0.1");
    assert.equal(request.routingId.length, 5);
    assert.equal(request.routingId[0], 0);
    await router.send(request.routingId, [EMPTY, text.encode("(reply)")]);
    assert.deepEqual((await python.must({ op: "recv", name: "w" })).frames, [
      "",
    ]);
    assert.deepEqual((await python.must({ op: "recv", name: "w" })).frames, [
      "",
      toHex(text.encode("(reply)")),
    ]);

    // A libzmq DEALER with a routing id keeps it on our side.
    await connectLibzmqDealer(python, router.port, {
      name: "named",
      routing_id: toHex(text.encode("w-42")),
    });
    await python.must({ op: "send", name: "named", frames: ["01"] });
    const named = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    assert.deepEqual(named.routingId, text.encode("w-42"));
    assert.deepEqual(named.frames, [new Uint8Array([1])]);
  },
});

Deno.test({
  name:
    `RouterSocket carries long, 10 MiB and multipart frames to and from libzmq${needs}`,
  ignore,
  fn: async () => {
    await using router = await localRouter();
    await using python = await startLibzmqPeer();
    await connectLibzmqDealer(python, router.port);
    await python.must({ op: "recv", name: "w" }); // probe
    const big = 10 * 1024 * 1024;
    await python.must({
      op: "send",
      name: "w",
      frames: ["", toHex(pattern(300, 1))],
      big,
      seed: 5,
    });
    const message = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    assert.equal(message.frames.length, 3);
    assert.deepEqual(message.frames[1], pattern(300, 1));
    assert.equal(message.frames[2].length, big);
    assert.equal(
      await sha256(message.frames[2]),
      await sha256(pattern(big, 5)),
    );

    const outgoing = [
      EMPTY,
      pattern(256, 2),
      pattern(big, 9),
      text.encode("end"),
    ];
    await router.send(message.routingId, outgoing);
    const echoed = await python.must({ op: "echo", name: "w", reply: false });
    assert.deepEqual(echoed.sizes, [0, 256, big, 3]);
    assert.deepEqual(echoed.sha256, await Promise.all(outgoing.map(sha256)));
  },
});

Deno.test({
  name: `RouterSocket reports a departed libzmq peer as unreachable${needs}`,
  ignore,
  fn: async () => {
    const gone = Promise.withResolvers<void>();
    await using router = await localRouter({
      onDisconnect: () => gone.resolve(),
    });
    await using python = await startLibzmqPeer();
    await connectLibzmqDealer(python, router.port);
    await python.must({ op: "send", name: "w", frames: ["", "00"] });
    const { routingId } = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    await router.send(routingId, [EMPTY, text.encode("ok")]);
    await python.must({ op: "close", name: "w" });
    await gone.promise;
    await assert.rejects(
      router.send(routingId, [EMPTY, text.encode("late")]),
      PeerUnreachableError,
    );
  },
});

Deno.test({
  name: `RouterSocket serves 100 simultaneous libzmq DEALERs${needs}`,
  ignore,
  fn: async () => {
    const router = await localRouter();
    const python = await startLibzmqPeer();
    let peers = 0;
    const serving = (async () => {
      for await (const message of router) {
        const name = utf8(message.frames[1]);
        peers++;
        await router.send(message.routingId, [
          EMPTY,
          text.encode(name.replace("peer-", "reply-")),
        ]);
      }
    })();
    try {
      const result = await python.must({
        op: "swarm",
        count: 100,
        endpoint: `tcp://127.0.0.1:${router.port}`,
        timeout: 20000,
      });
      assert.equal(result.good, 100, JSON.stringify(result.sample));
      assert.equal(peers, 100);
    } finally {
      await python.stop();
      await router.close();
      await serving;
    }
  },
});

Deno.test({
  name:
    `RouterSocket shrugs off garbage and oversized frames, then serves libzmq${needs}`,
  ignore,
  fn: async () => {
    const dropped = Promise.withResolvers<void>();
    await using router = await localRouter({
      maxMessageBytes: 1000,
      onDisconnect: () => dropped.resolve(),
    });
    await using python = await startLibzmqPeer();
    for (let i = 0; i < 5; i++) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: router.port,
      });
      await conn.write(crypto.getRandomValues(new Uint8Array(1 + i * 500)))
        .catch(() => 0);
      await conn.read(new Uint8Array(256)).catch(() => null);
      conn.close();
    }
    await connectLibzmqDealer(python, router.port);
    await python.must({
      op: "send",
      name: "w",
      frames: ["", toHex(new Uint8Array(1001))],
    });
    await dropped.promise; // the oversized frame cost that connection, not the socket
    await python.must({
      op: "send",
      name: "w",
      frames: ["", toHex(text.encode("small"))],
    });
    const message = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    assert.deepEqual(message.frames, [EMPTY, text.encode("small")]);
    await router.send(message.routingId, [EMPTY, text.encode("served")]);
    let reply;
    do reply = await python.must({ op: "recv", name: "w" }); while (
      reply.frames!.length === 1
    );
    assert.deepEqual(reply.frames!.map(fromHex), [
      EMPTY,
      text.encode("served"),
    ]);
  },
});

Deno.test({
  name:
    `RouterSocket answers libzmq heartbeat PINGs so the connection outlives the timeout${needs}`,
  ignore,
  fn: async () => {
    let disconnects = 0;
    await using router = await localRouter({
      onDisconnect: () => disconnects++,
    });
    await using python = await startLibzmqPeer();
    await connectLibzmqDealer(python, router.port, {
      options: { heartbeat_ivl: 50, heartbeat_timeout: 200 },
    });
    await python.must({ op: "send", name: "w", frames: ["01"] });
    const first = await within(
      router.receive(),
      PEER_TIMEOUT_MS,
      "first message from the libzmq DEALER",
    );
    // Idle for several heartbeat timeouts: only PONGs keep libzmq from dropping us.
    await python.must({ op: "sleep", ms: 1000 });
    await python.must({ op: "send", name: "w", frames: ["02"] });
    const second = await router.receive();
    assert.deepEqual(second.frames, [new Uint8Array([2])]);
    assert.deepEqual(second.routingId, first.routingId);
    assert.equal(disconnects, 0);
  },
});

Deno.test("RouterSocket.tryReceive() takes what already arrived and never waits", async () => {
  const router = await localRouter();
  try {
    await using dealer = localDealer(router.port);
    await dealer.receive(); // the probe
    assert.equal(router.tryReceive(), undefined);
    for (const word of ["one", "two", "three"]) {
      await dealer.send([text.encode(word)]);
    }
    const first = await router.receive();
    const rest: RouterMessage[] = [];
    await until(() => {
      const next = router.tryReceive();
      if (next !== undefined) rest.push(next);
      return rest.length === 2;
    });
    assert.deepEqual(
      [first, ...rest].map((m) => utf8(m.frames[0])),
      ["one", "two", "three"],
    );
    assert.equal(router.tryReceive(), undefined);
  } finally {
    await router.close();
  }
  assert.equal(router.tryReceive(), undefined, "closed");
});
