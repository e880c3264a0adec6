// One worker connection: the Cuirass worker lifecycle, one build at a time.

import { DealerSocket } from "../zmtp/dealer.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  type WorkerInfo,
} from "../protocol/messages.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix } from "../guix/guix_command.ts";
import { runBuild } from "./build_runner.ts";

export interface SessionOptions {
  server: { hostname: string; port: number };
  /** The name this session announces; 8 random characters in Cuirass. */
  name: string;
  machine: string;
  systems: string[];
  /** Port of this machine's publish server, for the results URL. */
  publishPort: number;
  /** Extra substitute URLs after the server's. */
  substituteUrls: string[];
  guix: Guix;
  clock: Clock;
  logger: Logger;
  /** Base wait after a `no-build` answer; Cuirass reads REQUEST_PERIOD. */
  requestPeriodMs: number;
  pingIntervalMs: number;
  cores?: number;
  /** Random integer in [0, n); injectable for tests. */
  random?: (n: number) => number;
}

const EMPTY = new Uint8Array(0);

/** Formats an address for a URL, bracketing IPv6. */
export function urlHost(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/**
 * Serves the server until `signal` aborts: handshake, registration, then
 * the request loop. Connection losses are survived (the dealer reconnects).
 */
export async function runSession(
  options: SessionOptions,
  signal: AbortSignal,
): Promise<void> {
  const logger = options.logger.with({ worker: options.name });
  const dealer = DealerSocket.connect({
    hostname: options.server.hostname,
    port: options.server.port,
  });
  const pinger = DealerSocket.connect({
    hostname: options.server.hostname,
    port: options.server.port,
  });
  try {
    const info = await handshake(dealer, signal);
    const worker: WorkerInfo = {
      name: options.name,
      address: info.workerAddress,
      machine: options.machine,
      systems: options.systems,
      lastSeen: 0,
    };
    const publishUrl = `http://${
      urlHost(info.workerAddress)
    }:${options.publishPort}`;
    const serverPublish = info.publishPort === null
      ? []
      : [`http://${urlHost(options.server.hostname)}:${info.publishPort}`];
    await send(dealer, { type: "worker-ready", worker }, signal);
    logger.info("worker registered", {
      server: `${options.server.hostname}:${options.server.port}`,
      address: info.workerAddress,
      publish: publishUrl,
    });
    const pinging = pingLoop(pinger, worker, options, signal);
    await requestLoop(dealer, options, logger, signal, {
      publishUrl,
      substituteUrls: [...serverPublish, ...options.substituteUrls],
      logServer: { hostname: options.server.hostname, port: info.logPort },
    });
    await pinging;
  } catch (error) {
    if (!signal.aborted) throw error;
  } finally {
    await Promise.all([dealer.close(), pinger.close()]);
  }
}

async function handshake(dealer: DealerSocket, signal: AbortSignal) {
  // The server's probe (an empty message) comes first; Cuirass workers
  // insist on it, we only wait for it before asking who we are.
  await receiveMessage(dealer, signal, { untilProbe: true });
  await send(dealer, { type: "worker-request-info" }, signal);
  for (;;) {
    const reply = await receiveMessage(dealer, signal);
    if (reply?.type === "server-info") return reply;
  }
}

interface RunContext {
  publishUrl: string;
  substituteUrls: string[];
  logServer: { hostname: string; port: number };
}

async function requestLoop(
  dealer: DealerSocket,
  options: SessionOptions,
  logger: Logger,
  signal: AbortSignal,
  context: RunContext,
) {
  const random = options.random ??
    ((n: number) => Math.floor(Math.random() * n));
  while (!signal.aborted) {
    await send(
      dealer,
      { type: "worker-request-work", name: options.name },
      signal,
    );
    const reply = await receiveMessage(dealer, signal);
    if (reply === null) continue; // a probe: the server (re)connected.
    if (reply.type === "no-build") {
      const period = options.requestPeriodMs;
      const jitter = random(Math.max(1, period)) - Math.floor(period / 2);
      await options.clock.sleep(period + jitter, signal);
      continue;
    }
    if (reply.type !== "build") {
      logger.warn("reply ignored", { type: reply.type });
      continue;
    }
    logger.info("build received", { drv: reply.drv, system: reply.system });
    await send(dealer, {
      type: "build-started",
      drv: reply.drv,
      worker: options.name,
    }, signal);
    const ok = await runBuild(
      { drv: reply.drv, timeout: reply.timeout, maxSilent: reply.maxSilent },
      {
        guix: options.guix,
        logger,
        substituteUrls: context.substituteUrls,
        logServer: context.logServer,
        cores: options.cores,
      },
    );
    await send(dealer, {
      type: ok ? "build-succeeded" : "build-failed",
      drv: reply.drv,
      url: context.publishUrl,
      log: null,
    }, signal);
    logger.info(ok ? "build done" : "build failed", { drv: reply.drv });
  }
}

async function pingLoop(
  pinger: DealerSocket,
  worker: WorkerInfo,
  options: SessionOptions,
  signal: AbortSignal,
) {
  // The server's probes on this connection are read and dropped so that
  // they do not pile up.
  const draining = (async () => {
    while (!signal.aborted) await pinger.receive(signal);
  })().catch(() => {});
  try {
    while (!signal.aborted) {
      await send(pinger, { type: "worker-ping", worker }, signal);
      await options.clock.sleep(options.pingIntervalMs, signal);
    }
  } catch (error) {
    if (!signal.aborted) throw error;
  }
  await draining;
}

async function send(
  dealer: DealerSocket,
  message: Message,
  signal: AbortSignal,
) {
  await dealer.send([EMPTY, encodeMessage(message)], signal);
}

/**
 * The next message from the server; null for a probe. Undecodable
 * messages are skipped (logged by the caller's next step).
 */
async function receiveMessage(
  dealer: DealerSocket,
  signal: AbortSignal,
  { untilProbe = false } = {},
): Promise<Message | null> {
  for (;;) {
    const frames = await dealer.receive(signal);
    const isProbe = frames.length === 1 && frames[0].length === 0;
    if (untilProbe) {
      if (isProbe) return null;
      continue;
    }
    if (isProbe) return null;
    const payload = frames.length === 2 && frames[0].length === 0
      ? frames[1]
      : frames[frames.length - 1];
    try {
      return decodeMessage(payload);
    } catch {
      continue;
    }
  }
}
