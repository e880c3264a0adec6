// Tests for one ZMTP connection against a raw TCP peer that writes exact bytes.

import assert from "node:assert/strict";
import {
  ZmtpConnection,
  ZmtpHandshakeError,
} from "../../../lib/zmtp/connection.ts";
import { encodeCommandFrame, encodeMessage } from "../../../lib/zmtp/frame.ts";
import {
  encodeError,
  encodeGreeting,
  encodePing,
  encodeReady,
} from "../../../lib/zmtp/greeting.ts";

/** Runs `raw` as the client side and a DEALER ZmtpConnection as the server side. */
async function withRawPeer(
  raw: (conn: Deno.TcpConn) => Promise<void>,
  server: (conn: ZmtpConnection) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  const accepted = await listener.accept();
  listener.close();
  const conn = new ZmtpConnection(accepted, {
    socketType: "DEALER",
    handshakeTimeoutMs: 5000,
  });
  try {
    await Promise.all([
      raw(client).finally(() => client.close()),
      server(conn),
    ]);
  } finally {
    conn.close();
    await conn.drained();
  }
}

async function readUntilClosed(conn: Deno.TcpConn): Promise<Uint8Array> {
  const parts: number[] = [];
  const buffer = new Uint8Array(4096);
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch {
      break; // reset by the peer counts as closed
    }
    if (n === null) break;
    parts.push(...buffer.subarray(0, n));
  }
  return new Uint8Array(parts);
}

function ready(socketType: string): Uint8Array {
  return encodeCommandFrame(encodeReady({ "Socket-Type": socketType }));
}

Deno.test("ZmtpConnection accepts a greeting sent in pieces and answers PING with PONG", async () => {
  let seen: Uint8Array = new Uint8Array(0);
  await withRawPeer(
    async (client) => {
      const greeting = encodeGreeting();
      await client.write(greeting.subarray(0, 11));
      await new Promise((resolve) => setTimeout(resolve, 50));
      await client.write(greeting.subarray(11));
      await client.write(ready("ROUTER"));
      await client.write(
        encodeCommandFrame(encodePing(10, new Uint8Array([9, 8, 7]))),
      );
      await client.write(
        encodeMessage([new Uint8Array([1]), new Uint8Array([2])]),
      );
      seen = await readUntilClosed(client);
    },
    async (conn) => {
      const peer = await conn.handshake();
      assert.equal(peer.socketType, "ROUTER");
      assert.equal(peer.minor, 1);
      assert.equal(conn.peerAddress, "127.0.0.1");
      assert.deepEqual(await conn.read(), [
        new Uint8Array([1]),
        new Uint8Array([2]),
      ]);
      await conn.drained(); // the PONG was queued before the message came back
      conn.close();
    },
  );
  // Our greeting, our READY, then PONG with the PING's context.
  const pong = encodeCommandFrame(
    new Uint8Array([4, ...new TextEncoder().encode("PONG"), 9, 8, 7]),
  );
  assert.deepEqual([...seen.subarray(0, 12)], [
    ...encodeGreeting().subarray(0, 12),
  ]);
  assert.deepEqual([...seen.subarray(seen.length - pong.length)], [...pong]);
});

Deno.test("ZmtpConnection keeps at most one PONG waiting for a peer that floods PINGs and reads nothing", async () => {
  // Far more PONGs than the kernel's socket buffers hold: answered one by
  // one, the rest would wait in memory, as much as the peer cares to ping.
  const pings = 600_000;
  const ping = encodeCommandFrame(encodePing(10, new Uint8Array(16)));
  const batch = new Uint8Array(ping.length * 10_000);
  for (let i = 0; i < 10_000; i++) batch.set(ping, i * ping.length);
  let served!: () => void;
  const done = new Promise<void>((resolve) => served = resolve);
  let unsent = -1;
  await withRawPeer(
    async (client) => {
      const writeAll = async (bytes: Uint8Array) => {
        for (let at = 0; at < bytes.length;) {
          at += await client.write(bytes.subarray(at));
        }
      };
      await writeAll(encodeGreeting());
      await writeAll(ready("ROUTER"));
      for (let sent = 0; sent < pings; sent += 10_000) await writeAll(batch);
      await writeAll(encodeMessage([new TextEncoder().encode("end")]));
      await done;
    },
    async (conn) => {
      await conn.handshake();
      assert.deepEqual(await conn.read(), [new TextEncoder().encode("end")]);
      unsent = conn.unsentBytes;
      conn.close();
      served();
    },
  );
  assert.ok(
    unsent >= 0 && unsent <= 2 * ping.length,
    `${unsent} bytes of PONGs wait for a peer that reads nothing`,
  );
});

Deno.test("ZmtpConnection refuses bad handshakes with a typed error", async () => {
  const plain = encodeGreeting({ mechanism: "PLAIN" });
  const cases: [string, Uint8Array[]][] = [
    ["socket-type", [encodeGreeting(), ready("PUB")]],
    ["socket-type", [encodeGreeting(), encodeCommandFrame(encodeReady({}))]],
    ["peer-error", [
      encodeGreeting(),
      encodeCommandFrame(encodeError("go away")),
    ]],
    ["mechanism", [plain]],
    ["protocol", [encodeGreeting(), encodeMessage([new Uint8Array(1)])]],
  ];
  for (const [code, writes] of cases) {
    await withRawPeer(
      async (client) => {
        for (const bytes of writes) await client.write(bytes);
        await readUntilClosed(client);
      },
      async (conn) => {
        await assert.rejects(
          conn.handshake(),
          (error) => error instanceof ZmtpHandshakeError && error.code === code,
          code,
        );
        assert.equal(conn.closed, true);
      },
    );
  }
});

Deno.test("ZmtpConnection handshake times out on a silent peer", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({
    hostname: "127.0.0.1",
    port: listener.addr.port,
  });
  const accepted = await listener.accept();
  listener.close();
  const conn = new ZmtpConnection(accepted, {
    socketType: "ROUTER",
    handshakeTimeoutMs: 100,
  });
  await assert.rejects(
    conn.handshake(),
    (error) => error instanceof ZmtpHandshakeError && error.code === "timeout",
  );
  await conn.drained();
  client.close();
});

Deno.test("ZmtpConnection speaks the lower minor version of a ZMTP 3.0 peer", async () => {
  await withRawPeer(
    async (client) => {
      const greeting = encodeGreeting();
      greeting[11] = 0;
      await client.write(greeting);
      await client.write(ready("DEALER"));
      await readUntilClosed(client);
    },
    async (conn) => {
      assert.equal((await conn.handshake()).minor, 0);
      conn.close();
    },
  );
});
