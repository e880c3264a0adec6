// A Lorica worker session serving a Cuirass server played by libzmq itself
// (python3-zmq): a ROUTER with ZMQ_PROBE_ROUTER and ZMQ_ROUTER_MANDATORY, as
// `cuirass remote-server` sets it up, and a log server that speaks the
// Cuirass log channel. Every payload is checked byte for byte against the
// shapes of cuirass.md §1.3 and §1.9.

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { runSession } from "../../../lib/worker/session.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { createLogger } from "../../../lib/log.ts";
import { systemClock } from "../../../lib/clock.ts";
import { fakeSpawner, hashOf } from "../server/_dispatch_fixture.ts";
import {
  fromHex,
  libzmqMissing,
  LibzmqPeer,
  PEER_TIMEOUT_MS,
  toHex,
} from "../zmtp/libzmq_peer.ts";
import { within } from "../../_within.ts";

const needs = libzmqMissing === undefined ? "" : ` (skipped: ${libzmqMissing})`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const NAME = "CUIRASS1";
const DRV = `/gnu/store/${hashOf("drv", 7)}-hello-2.12.1.drv`;
const WORKER = `(worker (name "${NAME}") (address "127.0.0.1") ` +
  `(machine "builder1") (systems ("x86_64-linux" "i686-linux")) (last-seen 0))`;
const BUILD = `(build (drv "${DRV}") (priority 9) (timeout 72000) ` +
  `(max-silent 3600) (timestamp #f) (system "x86_64-linux"))`;

/**
 * A Cuirass log server: greets, then keeps every byte the worker sends
 * until it closes its side.
 */
function cuirassLogServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received = (async () => {
    const conn = await listener.accept();
    await conn.write(encoder.encode("(log-server (version 0))"));
    const bytes: number[] = [];
    const buffer = new Uint8Array(4096);
    for (
      let n = await conn.read(buffer);
      n !== null;
      n = await conn.read(buffer)
    ) {
      bytes.push(...buffer.subarray(0, n));
    }
    conn.close();
    return new Uint8Array(bytes);
  })();
  // Awaited by the test; a test failing earlier closes the listener.
  received.catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    close: () => listener.close(),
  };
}

/**
 * A session of worker NAME against a server on `port`, building with a
 * fake guix that succeeds; `options` override the defaults (a minute
 * between requests and between pings).
 */
function cuirassWorker(
  port: number,
  options: Partial<Parameters<typeof runSession>[0]>,
  signal: AbortSignal,
): ReturnType<typeof runSession> {
  return runSession({
    server: { hostname: "127.0.0.1", port },
    name: NAME,
    machine: "builder1",
    systems: ["x86_64-linux", "i686-linux"],
    publishPort: 5558,
    substituteUrls: [],
    guix: new Guix({
      logger: createLogger({ sink: () => {} }),
      spawn: fakeSpawner(() => ({ code: 0, stderr: "building hello\n" })),
    }),
    clock: systemClock,
    logger: createLogger({ sink: () => {} }),
    requestPeriodMs: 60_000,
    pingIntervalMs: 60_000,
    replyTimeoutMs: 10_000,
    storeDir: "/gnu/store",
    ...options,
  }, signal);
}

for (const extensions of [false, true]) {
  Deno.test({
    name: `a Lorica worker (extensions ${
      extensions ? "offered" : "off"
    }) serves a libzmq Cuirass server: probe, M1-M4, build, M8-M9, and the log channel, byte for byte${needs}`,
    ignore: libzmqMissing !== undefined,
    async fn() {
      const python = await LibzmqPeer.start();
      const logServer = cuirassLogServer();
      const abort = new AbortController();
      let session: Promise<void> | undefined;
      // Payloads heard, per routing id, in order.
      const heard = new Map<string, string[]>();
      const hear = async (): Promise<[string, string]> => {
        const { frames } = await python.must({ op: "recv", name: "server" });
        const [id, delimiter, payload, ...rest] = frames!;
        assert.equal(delimiter, "", "an empty delimiter first");
        assert.equal(rest.length, 0, "one payload frame");
        const text = decoder.decode(fromHex(payload));
        heard.set(id, [...heard.get(id) ?? [], text]);
        return [id, text];
      };
      // The next payload on the main connection (pings go on another).
      const next = async (): Promise<[string, string]> => {
        for (;;) {
          const [id, text] = await hear();
          if (!text.startsWith("(worker-ping ")) return [id, text];
        }
      };
      const answer = (id: string, text: string) =>
        python.must({
          op: "send",
          name: "server",
          frames: [id, "", toHex(encoder.encode(text))],
        });
      try {
        const bound = await python.must({
          op: "socket",
          name: "server",
          type: "ROUTER",
          bind: "tcp://127.0.0.1:0",
          options: { probe_router: 1, router_mandatory: 1 },
        });
        const port = Number(bound.endpoint!.split(":").pop());
        session = cuirassWorker(port, { extensions }, abort.signal);

        let [main, text] = await next();
        if (extensions) {
          // Offered, and ignored by Cuirass as an unknown message.
          assert.match(text, /^\(lorica-hello \(version 1\) \(features \(/);
          [main, text] = await next();
        }
        assert.equal(text, "(worker-request-info)");
        await answer(
          main,
          `(server-info (worker-address "127.0.0.1") (log-port ${logServer.port}) (publish-port #f))`,
        );
        assert.deepEqual(await next(), [main, `(worker-ready ${WORKER})`]);
        assert.deepEqual(await next(), [
          main,
          `(worker-request-work "${NAME}")`,
        ]);
        await answer(main, BUILD);
        assert.deepEqual(await next(), [
          main,
          `(build-started (drv "${DRV}") (worker "${NAME}"))`,
        ]);
        assert.deepEqual(await next(), [
          main,
          `(build-succeeded (drv "${DRV}") (url "http://127.0.0.1:5558") (log #f))`,
        ]);
        assert.deepEqual(await next(), [
          main,
          `(worker-request-work "${NAME}")`,
        ]);
        await answer(main, "(no-build)");
        // The ping, on a connection of its own, carries the same worker.
        while (![...heard.keys()].some((id) => id !== main)) await hear();
        const [pings] = [...heard.entries()].filter(([id]) => id !== main)
          .map(([, texts]) => texts);
        assert.deepEqual(pings, [`(worker-ping ${WORKER})`]);
        // The log: Cuirass's header, then at once a gzip stream of it.
        const header = encoder.encode(
          `(log (version 0) (derivation "${DRV}"))`,
        );
        const upload = await within(
          logServer.received,
          PEER_TIMEOUT_MS,
          "log upload from the worker to the Cuirass log server",
        );
        assert.deepEqual(upload.subarray(0, header.length), header);
        assert.match(
          decoder.decode(gunzipSync(upload.subarray(header.length))),
          /building hello/,
        );
      } finally {
        abort.abort();
        await session?.catch(() => {});
        logServer.close();
        await python.stop();
      }
    },
  });
}

Deno.test({
  name:
    `a Lorica worker builds what a restarted Cuirass server hands it for the request it sent before seeing the restart (the server has no way to take it back)${needs}`,
  ignore: libzmqMissing !== undefined,
  async fn() {
    const python = await LibzmqPeer.start();
    const logServer = cuirassLogServer();
    const abort = new AbortController();
    let session: Promise<void> | undefined;
    const hear = async () => {
      const { frames } = await python.must({
        op: "recv",
        name: "server",
        timeout: 10_000,
      });
      return {
        id: frames![0],
        text: decoder.decode(fromHex(frames![frames!.length - 1])),
      };
    };
    // The next payload that is not a ping.
    const next = async () => {
      for (;;) {
        const heard = await hear();
        if (!heard.text.startsWith("(worker-ping ")) return heard;
      }
    };
    const answer = (id: string, text: string) =>
      python.must({
        op: "send",
        name: "server",
        frames: [id, "", toHex(encoder.encode(text))],
      });
    const bindServer = async (endpoint: string) => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const reply = await python.request({
          op: "socket",
          name: "server",
          type: "ROUTER",
          bind: endpoint,
          options: { probe_router: 1, router_mandatory: 1 },
        });
        if (reply.ok) return reply.endpoint!;
        if (reply.code !== "EADDRINUSE" || Date.now() > deadline) {
          throw new Error(`cannot bind ${endpoint}: ${reply.error}`);
        }
        await python.must({ op: "sleep", ms: 20 });
      }
    };
    const info =
      `(server-info (worker-address "127.0.0.1") (log-port ${logServer.port}) (publish-port #f))`;
    try {
      const endpoint = await bindServer("tcp://127.0.0.1:0");
      const port = Number(endpoint.split(":").pop());
      session = cuirassWorker(port, {
        // Two seconds between requests, no jitter: the restart fits in.
        requestPeriodMs: 2000,
        random: (n) => Math.floor(n / 2),
        extensions: false,
      }, abort.signal);
      let heard = await next();
      assert.equal(heard.text, "(worker-request-info)");
      await answer(heard.id, info);
      assert.equal((await next()).text, `(worker-ready ${WORKER})`);
      heard = await next();
      assert.equal(heard.text, `(worker-request-work "${NAME}")`);
      await answer(heard.id, "(no-build)");
      // The server is away when the worker asks again: the request waits
      // for the next connection, and goes before the worker can read the
      // restarted server's probe. (A probe that comes during the pause
      // ends it, and the worker registers first.) The server's database
      // still knows the worker: that request gets a build.
      await python.must({ op: "close", name: "server" });
      await python.must({ op: "sleep", ms: 2500 });
      await bindServer(endpoint);
      heard = await next();
      assert.equal(heard.text, `(worker-request-work "${NAME}")`);
      await answer(heard.id, BUILD);
      // Cuirass now has the build submitted to this worker, for good: it
      // must be built and reported, whatever the worker does first.
      const after: string[] = [];
      while (!after.some((text) => text.startsWith("(build-succeeded "))) {
        heard = await next();
        after.push(heard.text);
        if (heard.text === "(worker-request-info)") {
          await answer(heard.id, info);
        } else if (heard.text.startsWith("(worker-request-work ")) {
          assert.fail(`asked for more work first: ${JSON.stringify(after)}`);
        }
      }
      assert.ok(
        after.includes(`(build-started (drv "${DRV}") (worker "${NAME}"))`),
        JSON.stringify(after),
      );
    } finally {
      abort.abort();
      await session?.catch(() => {});
      logServer.close();
      await python.stop();
    }
  },
});
