// A log server of the test's own: for each of its `replies`, it accepts a
// connection, greets, reads the whole upload, says that reply and closes.

import { gunzipSync } from "node:zlib";

/** One upload as the server read it. */
export interface ReadUpload {
  /** The header, up to where the gzip stream begins. */
  header: string;
  /** The log, inflated. */
  log: string;
}

export function scriptedLogServer(replies: string[]) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const encoder = new TextEncoder();
  const uploads: ReadUpload[] = [];
  const served = (async () => {
    try {
      for (const reply of replies) {
        const conn = await listener.accept();
        await conn.write(encoder.encode("(log-server (version 0))"));
        const received: number[] = [];
        const buffer = new Uint8Array(4096);
        for (
          let n = await conn.read(buffer);
          n !== null;
          n = await conn.read(buffer)
        ) {
          received.push(...buffer.subarray(0, n));
        }
        await conn.write(encoder.encode(reply));
        conn.close();
        // The header ends where the gzip stream (magic 1f 8b) begins.
        const start = received.findIndex((byte, i) =>
          byte === 0x1f && received[i + 1] === 0x8b
        );
        uploads.push({
          header: new TextDecoder().decode(
            new Uint8Array(received.slice(0, start)),
          ),
          log: gunzipSync(new Uint8Array(received.slice(start))).toString(),
        });
      }
    } finally {
      listener.close();
    }
    return uploads;
  })();
  // A test cut short closes the listener under the wait.
  served.catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    /** The uploads read, once every reply was said. */
    served,
    uploads,
    close: () => {
      try {
        listener.close();
      } catch {
        // already closed
      }
    },
  };
}
