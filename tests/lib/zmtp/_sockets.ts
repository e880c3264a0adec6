// The sockets the ZMTP tests pair up: our ROUTER and DEALER on loopback, and
// a libzmq peer (python3-zmq in a child process) with its DEALERs and
// ROUTERs. Each of ours comes back disposable, so that a test declares it
// with `await using` and it is closed however the test ends, in the reverse
// order of opening, as the tests' finally blocks used to do by hand.

import { type DealerOptions, DealerSocket } from "../../../lib/zmtp/dealer.ts";
import { type RouterOptions, RouterSocket } from "../../../lib/zmtp/router.ts";
import { LibzmqPeer } from "./libzmq_peer.ts";

/** Our ROUTER bound on 127.0.0.1, on a free port unless `options` names one; closed on disposal. */
export async function localRouter(
  options: Partial<RouterOptions> = {},
): Promise<RouterSocket & AsyncDisposable> {
  const router = await RouterSocket.bind({
    hostname: "127.0.0.1",
    port: 0,
    ...options,
  });
  return Object.assign(router, {
    [Symbol.asyncDispose]: () => router.close(),
  });
}

/** Our DEALER connecting to `port` on 127.0.0.1; closed on disposal. */
export function localDealer(
  port: number,
  options: Partial<DealerOptions> = {},
): DealerSocket & AsyncDisposable {
  const dealer = DealerSocket.connect({
    hostname: "127.0.0.1",
    port,
    ...options,
  });
  return Object.assign(dealer, {
    [Symbol.asyncDispose]: () => dealer.close(),
  });
}

/** A running libzmq peer process; stopped on disposal. */
export async function startLibzmqPeer(): Promise<
  LibzmqPeer & AsyncDisposable
> {
  const python = await LibzmqPeer.start();
  return Object.assign(python, {
    [Symbol.asyncDispose]: () => python.stop(),
  });
}

/**
 * Has `python` open a libzmq DEALER connected to our ROUTER on loopback
 * `port`: named "w" unless `socket` says otherwise, which may also give its
 * `routing_id` (hex) and libzmq socket `options`.
 */
export async function connectLibzmqDealer(
  python: LibzmqPeer,
  port: number,
  socket: {
    name?: string;
    routing_id?: string;
    options?: Record<string, number>;
  } = {},
): Promise<void> {
  await python.must({
    op: "socket",
    name: "w",
    type: "DEALER",
    connect: `tcp://127.0.0.1:${port}`,
    ...socket,
  });
}

/** Cuirass's server socket options: PROBE_ROUTER and ROUTER_MANDATORY. */
export const CUIRASS_ROUTER = { probe_router: 1, router_mandatory: 1 };

/**
 * Has `python` bind a libzmq ROUTER named "server" on loopback `port` (0: a
 * free one) with Cuirass's options plus `options`; returns its port.
 */
export async function bindCuirassRouter(
  python: LibzmqPeer,
  port = 0,
  options: Record<string, number> = {},
): Promise<number> {
  const reply = await python.must({
    op: "socket",
    name: "server",
    type: "ROUTER",
    bind: `tcp://127.0.0.1:${port}`,
    options: { ...CUIRASS_ROUTER, ...options },
  });
  return Number(reply.endpoint!.split(":").at(-1));
}
