// Turns DNS-SD browsing into "the server to work for": verified by a real
// handshake, kept while it stays, replaced when it moves or goes.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { MdnsInterface } from "./mdns_transport.ts";
import { type BrowseEvent, browseServers } from "./browse_servers.ts";
import { type ProbedServer, probeServer } from "./probe_server.ts";
import { type ServerAnnouncement, unusableAddressReason } from "./service.ts";

/** Instances probed at once. */
const PROBE_BATCH = 32;
/** Addresses of one instance tried at most; a responder may list hundreds. */
const MAX_ADDRESSES_PER_SERVER = 8;
/** Instance names listed at most in one log line. */
const MAX_LOGGED_NAMES = 5;

/** A server a worker should connect to. */
export interface ServerEndpoint {
  /** The DNS-SD instance, or null for a server given on the command line. */
  instanceName: string | null;
  /** An address (link-local IPv6 with its zone) or a host name. */
  hostname: string;
  port: number;
}

/** Anything that tells a worker which server to use, and when that changes. */
export interface ServerSource {
  /** Yields the server to use now, and again each time it changes; ends when `signal` aborts. */
  servers(signal: AbortSignal): AsyncIterable<ServerEndpoint>;
}

export interface LocatorOptions {
  /** Interfaces to browse on. */
  interfaces: readonly MdnsInterface[];
  ipv6?: boolean;
  /** Only this instance (case-insensitive); default: the first that answers. */
  instanceName?: string;
  /**
   * This machine's own addresses. An advertised address among them is
   * skipped (it leads back here, C15) unless every advertised address is
   * ours, which means the server runs on this machine.
   */
  localAddresses: readonly string[];
  /** Time allowed to each address for connect, handshake and server-info; default 3000 ms. */
  connectTimeoutMs?: number;
  /** Pause before trying again when no advertised address answered; default 10 s. */
  retryMs?: number;
  logger: Logger;
  clock?: Clock;
  /** Replaces mDNS browsing (tests). */
  browse?: (signal: AbortSignal) => AsyncIterable<BrowseEvent>;
  /** Replaces the server-info probe (tests). */
  probe?: (
    target: { hostname: string; port: number },
    options: { timeoutMs: number; signal?: AbortSignal },
  ) => Promise<ProbedServer>;
}

/** Finds the server by DNS-SD and follows it; see {@linkcode ServerSource}. */
export class ServerLocator implements ServerSource {
  #options: LocatorOptions;

  constructor(options: LocatorOptions) {
    this.#options = options;
  }

  /** Yields each newly chosen, verified server until `signal` aborts. */
  async *servers(signal: AbortSignal): AsyncGenerator<ServerEndpoint, void> {
    const options = this.#options;
    const { logger } = options;
    const clock = options.clock ?? systemClock;
    const timeoutMs = options.connectTimeoutMs ?? 3000;
    const retryMs = options.retryMs ?? 10_000;
    const probe = options.probe ?? probeServer;
    const wanted = options.instanceName?.toLowerCase();
    const local = new Set(
      options.localAddresses.map((a) => stripZone(a).toLowerCase()),
    );
    const known = new Map<string, ServerAnnouncement>();
    let current: ServerEndpoint | null = null;
    let dirty = false;
    // When to try again, by the monotonic clock: a wall-clock step back
    // stretched the pause by the size of the step.
    let retryAt = Infinity;
    let wake: (() => void) | null = null;
    const poke = () => wake?.();

    const stop = new AbortController();
    const onAbort = () => {
      stop.abort();
      poke();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const events = options.browse?.(stop.signal) ??
      browseServers({
        interfaces: options.interfaces,
        ipv6: options.ipv6,
        logger,
        clock,
      }, stop.signal);
    const browsing = (async () => {
      for await (const event of events) {
        if (event.type === "found") {
          const key = event.server.instanceName.toLowerCase();
          logger.info(known.has(key) ? "server changed" : "server found", {
            instance: event.server.instanceName,
            host: event.server.host,
            port: event.server.port,
            addresses: event.server.addresses
              .slice(0, MAX_ADDRESSES_PER_SERVER).join(","),
            addressCount: event.server.addresses.length >
                MAX_ADDRESSES_PER_SERVER
              ? event.server.addresses.length
              : undefined,
          });
          known.set(key, event.server);
        } else {
          known.delete(event.instanceName.toLowerCase());
          logger.info("server withdrawn", { instance: event.instanceName });
        }
        dirty = true;
        poke();
      }
    })().catch((error) => {
      logger.error("server browsing failed", { error });
    }).finally(poke);
    let browsingDone = false;
    browsing.then(() => (browsingDone = true));

    const candidates = () =>
      [...known.values()].filter((s) =>
        wanted === undefined || s.instanceName.toLowerCase() === wanted
      );

    const stillValid = (endpoint: ServerEndpoint) => {
      const server = known.get(endpoint.instanceName!.toLowerCase());
      return server !== undefined && server.port === endpoint.port &&
        server.addresses.includes(endpoint.hostname);
    };

    /** Rejections already logged, so that each retry does not repeat them. */
    const rejectionsLogged = new Set<string>();
    /** The advertised addresses minus those that cannot be a server. */
    const usableAddresses = (server: ServerAnnouncement) =>
      server.addresses.filter((address) => {
        const reason = unusableAddressReason(address);
        if (reason === null) return true;
        const key = `${server.instanceName.toLowerCase()} ${address}`;
        if (rejectionsLogged.has(key)) return false;
        rejectionsLogged.add(key);
        logger.warn("server address rejected", {
          instance: server.instanceName,
          address,
          reason,
        });
        return false;
      });

    const addressesToTry = (server: ServerAnnouncement) => {
      const usable = usableAddresses(server);
      const remote = usable.filter((a) =>
        !local.has(stripZone(a).toLowerCase())
      );
      if (remote.length < usable.length && remote.length > 0) {
        logger.info("server address skipped", {
          instance: server.instanceName,
          addresses: usable.filter((a) => !remote.includes(a)).join(","),
          reason: "it is one of this machine's own addresses",
        });
      }
      const chosen = remote.length > 0 ? remote : usable;
      if (chosen.length > MAX_ADDRESSES_PER_SERVER) {
        logger.warn("server addresses ignored", {
          instance: server.instanceName,
          count: chosen.length - MAX_ADDRESSES_PER_SERVER,
          reason: `only the first ${MAX_ADDRESSES_PER_SERVER} are tried`,
        });
      }
      return chosen.slice(0, MAX_ADDRESSES_PER_SERVER);
    };

    /** The first of the server's addresses that answers as a server, or null. */
    const probeServerAddresses = async (
      server: ServerAnnouncement,
    ): Promise<ServerEndpoint | null> => {
      for (const hostname of addressesToTry(server)) {
        if (stop.signal.aborted) return null;
        try {
          await probe({ hostname, port: server.port }, {
            timeoutMs,
            signal: stop.signal,
          });
          return {
            instanceName: server.instanceName,
            hostname,
            port: server.port,
          };
        } catch (error) {
          if (stop.signal.aborted) return null;
          logger.warn("server address unreachable", {
            instance: server.instanceName,
            address: `${hostname}:${server.port}`,
            error,
          });
        }
      }
      return null;
    };

    /** Instances whose every address failed at the last try. */
    const failedLastTime = new Set<string>();

    /**
     * Probes the candidates a batch at a time, and takes the first of the
     * batch, in order of preference, that answered. One by one, hundreds
     * of dead instances (anyone on the link can advertise them) would hold
     * the worker for as many probe timeouts before it reached the server.
     */
    const select = async (): Promise<ServerEndpoint | null> => {
      const preference = (server: ServerAnnouncement) =>
        // Stay with the current instance when it is still there; try those
        // that failed last time after the others.
        server.instanceName === current?.instanceName
          ? 0
          : failedLastTime.has(server.instanceName.toLowerCase())
          ? 2
          : 1;
      const list = candidates().sort((a, b) => preference(a) - preference(b));
      for (let i = 0; i < list.length; i += PROBE_BATCH) {
        const batch = list.slice(i, i + PROBE_BATCH);
        const results = await Promise.all(batch.map(probeServerAddresses));
        if (stop.signal.aborted) return null;
        batch.forEach((server, j) => {
          const key = server.instanceName.toLowerCase();
          if (results[j] === null) failedLastTime.add(key);
          else failedLastTime.delete(key);
        });
        const chosen = results.find((result) => result !== null);
        if (chosen) {
          logChoice(chosen);
          return chosen;
        }
        // Servers appeared or changed meanwhile: start again, them first,
        // rather than finish the round of those known to fail.
        if (dirty) return null;
      }
      return null;
    };

    const logChoice = (chosen: ServerEndpoint) => {
      const others = candidates().map((s) => s.instanceName)
        .filter((name) => name !== chosen.instanceName);
      logger.info("server chosen", {
        instance: chosen.instanceName,
        address: `${chosen.hostname}:${chosen.port}`,
        others: others.length > 0
          ? others.slice(0, MAX_LOGGED_NAMES).join(",")
          : undefined,
        othersCount: others.length > MAX_LOGGED_NAMES
          ? others.length
          : undefined,
      });
    };

    let waitingLogged = false;
    try {
      while (!stop.signal.aborted) {
        const due = dirty || clock.monotonic() >= retryAt;
        if (due) {
          dirty = false;
          retryAt = Infinity;
          const needed = current === null || !stillValid(current);
          const list = candidates();
          if (needed && list.length > 0) {
            waitingLogged = false;
            const chosen = await select();
            if (chosen === null) {
              if (!stop.signal.aborted) retryAt = clock.monotonic() + retryMs;
            } else if (
              current === null || chosen.hostname !== current.hostname ||
              chosen.port !== current.port
            ) {
              current = chosen;
              yield chosen;
              continue;
            } else {
              current = chosen;
            }
          } else if (needed && !waitingLogged && wanted !== undefined) {
            waitingLogged = true;
            logger.info("server not seen yet", {
              instance: options.instanceName,
              seen: [...known.values()].map((s) => s.instanceName).join(",") ||
                undefined,
            });
          }
        }
        if (dirty) continue;
        if (browsingDone) break;
        const pause = retryAt === Infinity
          ? null
          : Math.max(0, retryAt - clock.monotonic());
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (pause !== null) {
            clock.sleep(pause, stop.signal).then(resolve, resolve);
          }
        });
        wake = null;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stop.abort();
      await browsing;
    }
  }
}

/** A source that names one fixed server (`--server=HOST:PORT`). */
export function fixedServer(
  server: { hostname: string; port: number },
): ServerSource {
  return {
    async *servers(signal: AbortSignal) {
      yield { instanceName: null, ...server };
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    },
  };
}

/**
 * Runs `run` for the source's current server; when the server changes, the
 * running call is aborted, awaited, and started again for the new one.
 * Resolves when `signal` aborts (after the last run ended) or the source ends.
 */
export async function followServer(
  source: ServerSource,
  run: (server: ServerEndpoint, signal: AbortSignal) => Promise<void>,
  signal: AbortSignal,
  onError?: (error: unknown) => void,
): Promise<void> {
  let running: { abort: AbortController; done: Promise<void> } | null = null;
  const end = async () => {
    if (running === null) return;
    running.abort.abort();
    await running.done;
    running = null;
  };
  try {
    for await (const server of source.servers(signal)) {
      await end();
      if (signal.aborted) break;
      const abort = new AbortController();
      const done = run(server, AbortSignal.any([signal, abort.signal]))
        .catch((error) => onError?.(error));
      running = { abort, done };
    }
  } finally {
    await end();
  }
}

function stripZone(address: string): string {
  const percent = address.indexOf("%");
  return percent < 0 ? address : address.slice(0, percent);
}
