// Proves that an address really leads to a remote server: a ZMTP handshake,
// the server's probe, then `worker-request-info` answered by `server-info`.

import { ZmtpConnection } from "../zmtp/connection.ts";
import { decodeMessage, encodeMessage } from "../protocol/messages.ts";

/** What a server said about itself and about us. */
export interface ProbedServer {
  hostname: string;
  port: number;
  /** Our address as the server sees it. */
  workerAddress: string;
  logPort: number;
  publishPort: number | null;
}

/** The address did not lead to a working server in time. */
export class ServerProbeError extends Error {
  hostname: string;
  port: number;
  constructor(
    hostname: string,
    port: number,
    what: string,
    options?: ErrorOptions,
  ) {
    super(
      `Cannot reach a remote server at ${
        JSON.stringify(`${hostname}:${port}`)
      }: ${what}`,
      options,
    );
    this.name = "ServerProbeError";
    this.hostname = hostname;
    this.port = port;
  }
}

const EMPTY = new Uint8Array(0);
/** Non-reply messages tolerated before giving up. */
const MAX_MESSAGES = 16;

/**
 * Connects, asks for server-info and hangs up, all within `timeoutMs`.
 * @throws {ServerProbeError} on refusal, timeout, or a peer that is no server.
 */
export async function probeServer(
  target: { hostname: string; port: number },
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<ProbedServer> {
  const { hostname, port } = target;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), options.timeoutMs);
  const onAbort = () => abort.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  let conn: ZmtpConnection | null = null;
  abort.signal.addEventListener("abort", () => conn?.close(), { once: true });
  try {
    const tcp = await Deno.connect({
      hostname,
      port,
      transport: "tcp",
      signal: abort.signal,
    });
    conn = new ZmtpConnection(tcp, {
      socketType: "DEALER",
      handshakeTimeoutMs: options.timeoutMs,
    });
    if (abort.signal.aborted) conn.close();
    await conn.handshake();
    await conn.send([EMPTY, encodeMessage({ type: "worker-request-info" })]);
    for (let i = 0; i < MAX_MESSAGES; i++) {
      const frames = await conn.read();
      if (frames === null) break;
      const payload = frames[frames.length - 1];
      if (payload.length === 0) continue; // the server's probe
      try {
        const message = decodeMessage(payload);
        if (message.type === "server-info") {
          return {
            hostname,
            port,
            workerAddress: message.workerAddress,
            logPort: message.logPort,
            publishPort: message.publishPort,
          };
        }
      } catch {
        // Not a Cuirass message: keep reading, up to the limit.
      }
    }
    throw new ServerProbeError(hostname, port, "no server-info reply");
  } catch (error) {
    if (error instanceof ServerProbeError) throw error;
    const what = abort.signal.aborted
      ? `no answer within ${options.timeoutMs} ms`
      : error instanceof Error
      ? error.message
      : String(error);
    throw new ServerProbeError(hostname, port, what, { cause: error });
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    conn?.close();
  }
}
