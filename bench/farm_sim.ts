// A dispatcher over real ZMTP, and simulated workers speaking the real
// protocol to it: ready, request work, started, succeeded. Outputs are not
// fetched: a stand-in fetcher records the success at once (which forgets
// the fetch the success owed, as for the real one), so that what is
// measured is dispatch, not downloads.

import { Dispatcher } from "../lib/server/dispatcher.ts";
import { RouterSocket } from "../lib/zmtp/router.ts";
import { DealerSocket } from "../lib/zmtp/dealer.ts";
import { decodeMessage, encodeMessage } from "../lib/protocol/messages.ts";
import { epochSeconds, systemClock } from "../lib/clock.ts";
import { silentLogger } from "../lib/log.ts";
import { inStore } from "../lib/server/missing_derivation.ts";
import { BuildStatus } from "../lib/store/types.ts";
import type { Message } from "../lib/protocol/messages.ts";
import type { OutputFetcher } from "../lib/server/output_fetcher.ts";
import type { Store } from "../lib/store/types.ts";

const EMPTY = new Uint8Array(0);

/** A dispatcher listening on 127.0.0.1. */
export interface RunningDispatcher {
  port: number;
  close(): Promise<void>;
}

/** Serves `store` to workers on a free port of 127.0.0.1. */
export async function serveDispatcher(
  store: Store,
): Promise<RunningDispatcher> {
  const late: { dispatcher?: Dispatcher } = {};
  const router = await RouterSocket.bind({
    hostname: "127.0.0.1",
    port: 0,
    logger: silentLogger,
    onDisconnect: (peer) => late.dispatcher?.peerDisconnected(peer.routingId),
  });
  // Each success being recorded, by derivation; close() waits for them,
  // and fails with the first that failed: a bench that lost results has
  // measured nothing.
  const fetching = new Map<string, Promise<unknown>>();
  const failures: unknown[] = [];
  const fetcher = {
    has: (drv: string) => fetching.has(drv),
    enqueue(request: { drv: string; worker: string }) {
      if (fetching.has(request.drv)) return false;
      fetching.set(
        request.drv,
        store.completeBuild(request.drv, BuildStatus.succeeded, {
          worker: request.worker,
          now: epochSeconds(systemClock),
        }).catch((error) => void failures.push(error))
          .finally(() => fetching.delete(request.drv)),
      );
      return true;
    },
    // No worker of the bench asks to hear of its fetches' ends.
    watchEnds() {},
  } as unknown as OutputFetcher;
  // The server checks each derivation before handing it out (case C14).
  // The bench's derivations exist only in the database, so each check
  // stats one real file instead: the cost of the lookup, always present.
  const presentFile = Deno.makeTempFileSync({ prefix: "lorica-bench-drv-" });
  const dispatcher = new Dispatcher({
    store,
    router,
    fetcher,
    clock: systemClock,
    logger: silentLogger,
    logPort: 1,
    publishPort: null,
    logCacheDir: "/nonexistent",
    storeDir: "/gnu/store",
    workerTimeoutSeconds: 120,
    inStore: () => inStore(presentFile),
  });
  late.dispatcher = dispatcher;
  const stop = new AbortController();
  const running = dispatcher.run(stop.signal).catch(() => {});
  return {
    port: router.port,
    async close() {
      stop.abort();
      await router.close();
      await running;
      await Promise.all(fetching.values());
      Deno.removeSync(presentFile);
      if (failures.length > 0) {
        throw new Error(
          `successes not recorded: ${failures.length} (first: ${failures[0]})`,
        );
      }
    },
  };
}

/** What simulated workers saw. */
export interface WorkerStats {
  builds: number;
  /** Request-work round trips, in ms. */
  latencies: number[];
  /**
   * When each of `latencies` counts from (this process's
   * `performance.now()`), entry for entry.
   */
  askedAt: number[];
  elapsedMs: number;
}

/**
 * Runs `count` simulated workers against `port` until `stop` aborts or,
 * with `total`, until that many builds were done. A worker told `no-build`
 * asks again after `idleMs`.
 *
 * Without `intervalMs` each worker asks again as soon as it is done (a
 * closed loop: the server is saturated, and the latency measured is mostly
 * time spent queued behind the other workers' messages). With it, each
 * worker asks once every `intervalMs` from a random start, as real workers
 * whose builds take time do, and a latency counts from when the request
 * was due whenever the worker is behind schedule, so that a server falling
 * behind cannot hide it.
 */
export async function simulateWorkers(
  port: number,
  count: number,
  options: {
    stop: AbortSignal;
    total?: number;
    idleMs?: number;
    intervalMs?: number;
  },
): Promise<WorkerStats> {
  const { stop, total, idleMs = 5, intervalMs } = options;
  const stats: WorkerStats = {
    builds: 0,
    latencies: [],
    askedAt: [],
    elapsedMs: 0,
  };
  const done = new AbortController();
  const finish = () => done.abort();
  stop.addEventListener("abort", finish, { once: true });
  const start = performance.now();

  async function worker(index: number): Promise<void> {
    const name = `bench-worker-${index}`;
    const socket = DealerSocket.connect({
      hostname: "127.0.0.1",
      port,
      logger: silentLogger,
    });
    const send = (message: Message) =>
      socket.send([EMPTY, encodeMessage(message)], done.signal);
    try {
      await send({
        type: "worker-ready",
        worker: {
          name,
          address: "127.0.0.1",
          machine: "bench",
          systems: ["x86_64-linux"],
          lastSeen: 0,
        },
      });
      let due = performance.now() +
        (intervalMs === undefined ? 0 : Math.random() * intervalMs);
      while (!done.signal.aborted) {
        // A request counts from when it was due if the worker is behind
        // (slow replies made it late: the server's doing), from when it is
        // sent if it waited on a timer (a timer firing late is this
        // process's doing, about a millisecond here, not the server's).
        let asked = performance.now();
        if (intervalMs !== undefined) {
          const wait = due - asked;
          if (wait > 0) {
            await new Promise((resolve) => setTimeout(resolve, wait));
            asked = performance.now();
          } else {
            asked = due;
          }
        }
        due += intervalMs ?? 0;
        await send({ type: "worker-request-work", name });
        let frames = await socket.receive(done.signal);
        // The ROUTER's probe (an empty message) is not a reply.
        while (frames.every((frame) => frame.length === 0)) {
          frames = await socket.receive(done.signal);
        }
        stats.latencies.push(performance.now() - asked);
        stats.askedAt.push(asked);
        const reply = decodeMessage(frames[frames.length - 1]);
        if (reply.type === "build") {
          await send({ type: "build-started", drv: reply.drv, worker: name });
          await send({
            type: "build-succeeded",
            drv: reply.drv,
            url: "http://127.0.0.1:1/",
            log: null,
          });
          stats.builds++;
          if (total !== undefined && stats.builds >= total) finish();
        } else if (reply.type === "no-build" && intervalMs === undefined) {
          await new Promise((resolve) => setTimeout(resolve, idleMs));
        }
      }
    } catch (error) {
      if (!done.signal.aborted) throw error;
    } finally {
      await socket.close();
    }
  }

  await Promise.all(Array.from({ length: count }, (_, i) => worker(i)));
  stats.elapsedMs = performance.now() - start;
  stop.removeEventListener("abort", finish);
  return stats;
}
