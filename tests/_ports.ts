// Loopback ports for tests that need one nobody listens on, or that close a
// listener and bind its port again.
//
// The tests run in parallel, and every `port: 0` bind and every outgoing
// connection takes a port from the kernel's ephemeral range. A port released
// there can be handed to another test before it is bound again, and a client
// that keeps reconnecting to it can even connect to itself (TCP's
// simultaneous open). A port below that range is handed out to no one, so it
// stays free for the test that picked it.

const FIRST_CANDIDATE = 20000;
const FALLBACK_EPHEMERAL_START = 32768;

/** The first port of the kernel's ephemeral range. */
function ephemeralStart(): number {
  try {
    const range = Deno.readTextFileSync(
      "/proc/sys/net/ipv4/ip_local_port_range",
    );
    const start = Number(range.trim().split(/\s+/)[0]);
    return Number.isInteger(start) && start > FIRST_CANDIDATE
      ? start
      : FALLBACK_EPHEMERAL_START;
  } catch {
    return FALLBACK_EPHEMERAL_START;
  }
}

/**
 * A loopback port that nothing listens on and that the kernel will not hand
 * to anyone else: connections to it are refused until the test binds it.
 */
export function quietPort(): number {
  const end = ephemeralStart();
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = FIRST_CANDIDATE +
      Math.floor(Math.random() * (end - FIRST_CANDIDATE));
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    }
  }
  throw new Error(
    `quietPort: no free port in ${FIRST_CANDIDATE}-${end - 1} after 100 tries`,
  );
}

/**
 * Runs `bind` until it stops failing with "address in use", for at most
 * `timeoutMs`: a listener closed by another process (libzmq closes its
 * sockets on a thread of its own) may hold its port for a moment more.
 */
export async function bindAgain<T>(
  bind: () => Promise<T>,
  timeoutMs = 5000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await bind();
    } catch (error) {
      const inUse = error instanceof Deno.errors.AddrInUse ||
        /EADDRINUSE|Address already in use/.test(String(error));
      if (!inUse || Date.now() >= deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}
