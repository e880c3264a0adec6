// A TCP relay on loopback between a client and a server, which a test can
// turn into a black hole: bytes are no longer passed on, in either
// direction, and no connection is closed or refused, as when a network
// partition drops packets. Once resumed, what was held goes through, as
// TCP's retransmissions would carry it after the partition heals.

/** A running relay; see {@link startTcpRelay}. */
export interface TcpRelay {
  /** The loopback port clients connect to. */
  port: number;
  /**
   * Connections their clients closed, counted as the relay reads the end
   * of them (also while it holds their bytes).
   */
  readonly closedByClients: number;
  /** Stops passing bytes on (new connections are accepted and held). */
  blackHole(): void;
  resume(): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

/** Starts a relay to `127.0.0.1:targetPort` on a free loopback port. */
export function startTcpRelay(targetPort: number): TcpRelay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sockets = new Set<Deno.Conn>();
  const pumps: Promise<void>[] = [];
  let gate = Promise.withResolvers<void>();
  gate.resolve();
  let holding = false;
  let closedByClients = 0;

  function close(conn: Deno.Conn) {
    if (!sockets.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }

  /**
   * Copies `from` to `to`, each chunk once the gate is open; reading goes
   * on meanwhile, so that the end of `from` is seen at once.
   */
  async function pump(from: Deno.Conn, to: Deno.Conn, fromClient: boolean) {
    let passed = Promise.resolve();
    try {
      for (;;) {
        const buffer = new Uint8Array(64 * 1024);
        const count = await from.read(buffer);
        if (count === null) break;
        passed = passed.then(async () => {
          await gate.promise;
          let written = 0;
          while (written < count) {
            written += await to.write(buffer.subarray(written, count));
          }
        }).catch(() => {
          // `to` is gone: so is the whole connection.
          close(from);
          close(to);
        });
      }
    } catch {
      // Closed or reset: by the client, unless the relay closed it.
    }
    if (fromClient && sockets.has(from)) closedByClients++;
    await passed;
    close(from);
    close(to);
  }

  async function relay(client: Deno.Conn) {
    sockets.add(client);
    try {
      await gate.promise;
      const server = await Deno.connect({
        hostname: "127.0.0.1",
        port: targetPort,
      });
      sockets.add(server);
      await Promise.all([
        pump(client, server, true),
        pump(server, client, false),
      ]);
    } catch {
      close(client);
    }
  }

  const accepting = (async () => {
    try {
      for await (const client of listener) pumps.push(relay(client));
    } catch {
      // The listener was closed.
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    get closedByClients() {
      return closedByClients;
    },
    blackHole() {
      if (holding) return;
      holding = true;
      gate = Promise.withResolvers<void>();
    },
    resume() {
      holding = false;
      gate.resolve();
    },
    async close() {
      listener.close();
      gate.resolve();
      for (const conn of [...sockets]) close(conn);
      await accepting;
      await Promise.all(pumps);
    },
  };
}
