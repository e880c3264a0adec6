// The log receiver on a disk that fills up: a real tmpfs of 2 MiB (see
// tests/_small_disk.ts), the worker's real upload end.

import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import { startLogReceiver } from "../../../lib/protocol/log_receiver.ts";
import { openLogUpload } from "../../../lib/protocol/log_upload.ts";
import { createLogger, silentLogger } from "../../../lib/log.ts";
import { mountSmallDisk, smallDiskAvailability } from "../../_small_disk.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";
const encoder = new TextEncoder();
const availability = smallDiskAvailability();

/** Sends `lines` as a worker does, a little at a time; returns the upload. */
async function upload(port: number, drv: string, lines: string[]) {
  const sending = await openLogUpload({
    hostname: "127.0.0.1",
    port,
    drv,
    logger: silentLogger,
    flushIntervalMs: 20,
  });
  for (const line of lines) {
    await sending.write(encoder.encode(line));
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  await sending.close();
  return sending;
}

Deno.test({
  name: availability.ok
    ? "a log the full disk cannot take ends its upload early, and comes whole once space is back"
    : `a log the full disk cannot take ends its upload early (skipped: ${availability.reason})`,
  ignore: !availability.ok,
  async fn() {
    await using disk = await mountSmallDisk(2 * 1024 * 1024);
    const cacheDir = `${disk.path}/cache`;
    const storeDir = "/gnu/store";
    const drv = `${storeDir}/${HASH}-x-1.drv`;
    const file = `${cacheDir}/${HASH}.log.gz`;
    const lines: string[] = [];
    const receiver = await startLogReceiver({
      hostname: "127.0.0.1",
      port: 0,
      cacheDir,
      storeDir,
      logger: createLogger({ timestamps: false, sink: (l) => lines.push(l) }),
    });
    try {
      const text = Array.from({ length: 10 }, (_, i) => `line ${i}\n`);
      await disk.fill();
      const first = await upload(receiver.port, drv, text);
      // The worker learns that the log did not arrive: it sends it again.
      assert.match(String(first.error), /closed the connection mid-stream/);
      await waitFor(() => lines.some((l) => l.includes("log not stored")));
      const line = lines.find((l) => l.includes("log not stored"))!;
      assert.ok(line.includes(`path=${file}`), line);
      assert.match(line, /os error 28/);
      // No empty or broken file stands for the build's log, none is left.
      await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
      const left = [...Deno.readDirSync(cacheDir)].map((e) => e.name);
      assert.deepEqual(left, []);

      await disk.free();
      const again = await upload(receiver.port, drv, text);
      assert.equal(again.error, undefined);
      await waitFor(() => lines.some((l) => l.includes("log received")));
      const stored = gunzipSync(await Deno.readFile(file));
      assert.equal(new TextDecoder().decode(stored), text.join(""));
    } finally {
      await receiver.close();
    }
  },
});

Deno.test({
  name: availability.ok
    ? "a log the full disk refused is not acknowledged as stored; once space is back it is"
    : `a log the full disk refused is not acknowledged (skipped: ${availability.reason})`,
  ignore: !availability.ok,
  async fn() {
    await using disk = await mountSmallDisk(2 * 1024 * 1024);
    const cacheDir = `${disk.path}/cache`;
    const storeDir = "/gnu/store";
    const drv = `${storeDir}/${HASH}-x-1.drv`;
    const receiver = await startLogReceiver({
      hostname: "127.0.0.1",
      port: 0,
      cacheDir,
      storeDir,
      logger: silentLogger,
    });
    // A whole upload asking for the acknowledgement, in one write: the
    // receiver may fail on its first write or only on the last one, after
    // the worker has sent everything; either way, no (log-stored).
    const upload = new Uint8Array([
      ...encoder.encode(
        `(log (version 0) (derivation "${drv}") (acknowledge #t))`,
      ),
      ...gzipSync(encoder.encode("built\n")),
    ]);
    try {
      await disk.fill();
      assert.equal(
        await exchange(receiver.port, upload),
        "(log-server (version 0))",
      );
      await disk.free();
      assert.equal(
        await exchange(receiver.port, upload),
        "(log-server (version 0))(log-stored)",
      );
      const stored = gunzipSync(
        await Deno.readFile(`${cacheDir}/${HASH}.log.gz`),
      );
      assert.equal(new TextDecoder().decode(stored), "built\n");
    } finally {
      await receiver.close();
    }
  },
});

/** Sends `bytes` and half-closes; returns all the server sent. */
async function exchange(port: number, bytes: Uint8Array): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(bytes);
  await conn.closeWrite();
  const received: number[] = [];
  const buffer = new Uint8Array(256);
  for (
    let n = await conn.read(buffer).catch(() => null);
    n !== null;
    n = await conn.read(buffer).catch(() => null)
  ) {
    received.push(...buffer.subarray(0, n));
  }
  return new TextDecoder().decode(new Uint8Array(received));
}

async function waitFor(check: () => boolean) {
  for (let i = 0; i < 100 && !check(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.ok(check(), "condition not met within 2 s");
}
