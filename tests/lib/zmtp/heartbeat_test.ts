// The ROUTER's heartbeat: a peer that says nothing, not even to a PING, is
// dropped in seconds (here) rather than after hours of TCP keepalive; peers
// that are alive but idle (libzmq's DEALER, ours) answer every PING and
// stay; a ZMTP 3.0 peer, which knows no PING, is never sent one.

import assert from "node:assert/strict";
import { encodeCommandFrame } from "../../../lib/zmtp/frame.ts";
import { encodeGreeting, encodeReady } from "../../../lib/zmtp/greeting.ts";
import { createLogger } from "../../../lib/log.ts";
import type { RouterPeer } from "../../../lib/zmtp/router.ts";
import { libzmqMissing } from "./libzmq_peer.ts";
import {
  connectLibzmqDealer,
  localDealer,
  localRouter,
  startLibzmqPeer,
} from "./_sockets.ts";

/** Pinged after 100 ms of silence, dropped 200 ms after an unanswered ping. */
const HEARTBEAT = { intervalMs: 100, timeoutMs: 200 };

/**
 * A ROUTER with a quick heartbeat, its log lines and its peers' comings and
 * goings; disposing closes the ROUTER.
 */
async function quickRouter() {
  const lines: string[] = [];
  const connected: RouterPeer[] = [];
  const dropped: RouterPeer[] = [];
  const router = await localRouter({
    heartbeat: HEARTBEAT,
    logger: createLogger({
      level: "debug",
      timestamps: false,
      sink: (line) => lines.push(line),
    }),
    onConnect: (peer) => connected.push(peer),
    onDisconnect: (peer) => dropped.push(peer),
  });
  return {
    router,
    lines,
    connected,
    dropped,
    [Symbol.asyncDispose]: () => router.close(),
  };
}

/**
 * A TCP peer that makes the NULL handshake as a DEALER of ZMTP 3.`minor`,
 * then never writes again nor reads: a process frozen, a host gone.
 */
async function handshakeThenSilence(
  port: number,
  minor: number,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const greeting = encodeGreeting();
  greeting[11] = minor; // The version's minor byte (ZMTP 3.x, RFC 37).
  await conn.write(greeting);
  await conn.write(
    encodeCommandFrame(encodeReady({ "Socket-Type": "DEALER" })),
  );
  return conn;
}

/**
 * Everything `conn` receives until it closes, as text (ZMTP command names
 * are ASCII); reading changes nothing the ROUTER sees.
 */
function received(conn: Deno.TcpConn): { text: () => string } {
  const chunks: Uint8Array[] = [];
  (async () => {
    const buffer = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return;
      chunks.push(buffer.slice(0, n));
    }
  })();
  return {
    text: () =>
      chunks.map((chunk) => new TextDecoder("latin1").decode(chunk)).join(""),
  };
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 10 ms, failing after 5 s. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i === 500) throw new Error(`${what}: not within 5 s`);
    await sleep(10);
  }
}

Deno.test("a ROUTER drops a ZMTP 3.1 peer that answers no ping, and says why", async () => {
  await using quick = await quickRouter();
  const { router, lines, connected, dropped } = quick;
  using conn = await handshakeThenSilence(router.port, 1);
  const heard = received(conn);
  await until(() => connected.length === 1, "the handshake");
  await until(() => dropped.length === 1, "the silent peer dropped");
  assert.ok(heard.text().includes("\x04PING"), "pinged before dropped");
  assert.equal(router.isConnected(connected[0].routingId), false);
  const line = lines.find((l) =>
    l.startsWith("warn zmtp silent peer dropped ")
  );
  assert.ok(line, lines.join("\n"));
  assert.match(line, / peer=127\.0\.0\.1 /);
  assert.match(line, /reason="no answer to a ping"/);
  const silentMs = Number(line.match(/silentMs=(\d+)/)![1]);
  assert.ok(silentMs >= HEARTBEAT.intervalMs + HEARTBEAT.timeoutMs, line);
});

Deno.test("a ROUTER never pings a ZMTP 3.0 peer, which would not understand, nor drops it for silence", async () => {
  await using quick = await quickRouter();
  const { router, connected, dropped } = quick;
  using conn = await handshakeThenSilence(router.port, 0);
  const heard = received(conn);
  await until(() => connected.length === 1, "the handshake");
  await sleep(10 * HEARTBEAT.intervalMs);
  assert.deepEqual(dropped, []);
  // All that came is the handshake and the probe: no PING command.
  const text = heard.text();
  assert.ok(text.includes("\x05READY"), "the ROUTER's READY");
  assert.ok(!text.includes("PING"), `no PING: ${JSON.stringify(text)}`);
});

Deno.test({
  name:
    "idle peers that answer pings stay connected through many heartbeats: our DEALER and libzmq's" +
    (libzmqMissing === undefined ? "" : ` (skipped: ${libzmqMissing})`),
  ignore: libzmqMissing !== undefined,
  async fn() {
    await using quick = await quickRouter();
    const { router, lines, connected, dropped } = quick;
    await using _ours = localDealer(router.port);
    await using python = await startLibzmqPeer();
    await connectLibzmqDealer(python, router.port);
    await until(() => connected.length === 2, "both handshakes");
    // Twenty intervals of silence from both applications: each PING is
    // answered by the peer's reader (libzmq's I/O thread, our read loop).
    await sleep(20 * HEARTBEAT.intervalMs);
    assert.deepEqual(dropped, [], lines.join("\n"));
    for (const peer of connected) {
      assert.ok(router.isConnected(peer.routingId));
    }
  },
});
