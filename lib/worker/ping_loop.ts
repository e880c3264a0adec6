// A session's pings: once it registered, the session says every ping
// interval that its worker is alive, building or not; a server that hears
// none for a while takes the worker for gone and requeues its builds
// (cuirass.md §2.5). They go on a DEALER socket of their own, as a Cuirass
// worker's do (cuirass.md §1.1). Apart from the session (session.ts),
// whose registration they only read.

import { encodeMessage, type WorkerInfo } from "../protocol/messages.ts";
import type { DealerSocket } from "../zmtp/dealer.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { DiskGuard } from "./disk_guard.ts";

/** What a session's registration says of its pings. */
export interface PingTerms {
  /** The worker as the registration described it. */
  readonly worker: WorkerInfo;
  /** The Lorica features the server agreed to. */
  readonly features: ReadonlySet<string>;
}

/** Settings for {@link pingLoop}. */
export interface PingLoopOptions {
  /** The session's last registration; undefined before the first. */
  registration: () => PingTerms | undefined;
  /** When given, a server that takes it ("disk") hears when it is low. */
  disk?: DiskGuard;
  clock: Clock;
  /** Bound to the session's worker name. */
  logger: Logger;
  intervalMs: number;
  /** Ends the loop. */
  signal: AbortSignal;
}

const EMPTY = new Uint8Array(0);
/** How often a session not registered yet looks whether it is. */
const UNREGISTERED_POLL_MS = 100;

/** Pings the server on `pinger` until `signal` aborts. */
export async function pingLoop(
  pinger: DealerSocket,
  options: PingLoopOptions,
): Promise<void> {
  const { signal, clock, logger, disk } = options;
  // Probes on the ping connection are read and dropped.
  const dropping = (async () => {
    while (!signal.aborted) await pinger.receive(signal);
  })().catch(() => {});
  // Whether the last ping failed: a failure is logged once, not at every
  // ping while it lasts.
  let failing = false;
  while (!signal.aborted) {
    const registration = options.registration();
    const worker = registration?.worker;
    if (worker) {
      try {
        // A Lorica server hears when this worker is short of disk space.
        const diskLow = registration!.features.has("disk") && disk
          ? { diskLow: await disk.low() }
          : {};
        await pinger.send(
          [EMPTY, encodeMessage({ type: "worker-ping", worker, ...diskLow })],
          signal,
        );
        failing = false;
      } catch (error) {
        if (signal.aborted) break;
        // A connection lost in the middle of a send, which the socket
        // makes again: the next ping goes on it. Were the pings to stop,
        // the server would take this worker for gone while it builds.
        if (!failing) logger.warn("worker ping failed", { error });
        failing = true;
      }
    }
    try {
      await clock.sleep(
        worker ? options.intervalMs : UNREGISTERED_POLL_MS,
        signal,
      );
    } catch {
      break;
    }
  }
  await dropping;
}
