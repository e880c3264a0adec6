// Log channel throughput: concurrent uploads into one receiver.

import {
  openLogUpload,
  startLogReceiver,
} from "../lib/protocol/log_channel.ts";
import { silentLogger } from "../lib/log.ts";
import { storeHash } from "./dag.ts";

/** Build-log-like text: varied lines, compressible as real logs are. */
function logChunk(seed: number): Uint8Array {
  const lines: string[] = [];
  for (let i = 0; lines.join("").length < 64 * 1024; i++) {
    lines.push(
      `gcc -O2 -g -c src/module-${(i * 31 + seed) % 997}.c -o build/obj-${
        storeHash(i, seed).slice(0, 8)
      }.o -I/gnu/store/${storeHash(i % 50, seed)}-glibc-2.39/include\n`,
    );
  }
  return new TextEncoder().encode(lines.join(""));
}

/** Sends `uploads` logs of `megabytes` each at once; returns MB/s received. */
export async function logThroughput(
  uploads: number,
  megabytes: number,
): Promise<{ mbPerSecond: number; failed: number }> {
  const cacheDir = Deno.makeTempDirSync({ prefix: "lorica-bench-logs-" });
  const receiver = await startLogReceiver({
    hostname: "127.0.0.1",
    port: 0,
    cacheDir,
    storeDir: "/gnu/store",
    logger: silentLogger,
  });
  let failed = 0;
  try {
    const start = performance.now();
    await Promise.all(
      Array.from({ length: uploads }, async (_, index) => {
        const chunk = logChunk(index);
        const upload = await openLogUpload({
          hostname: "127.0.0.1",
          port: receiver.port,
          drv: `/gnu/store/${storeHash(index, 999)}-bench-log-${index}.drv`,
          logger: silentLogger,
        });
        const total = megabytes * 1024 * 1024;
        for (let sent = 0; sent < total; sent += chunk.length) {
          await upload.write(chunk);
        }
        await upload.close();
        if (upload.error !== undefined) failed++;
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    return { mbPerSecond: (uploads * megabytes) / seconds, failed };
  } finally {
    await receiver.close();
    Deno.removeSync(cacheDir, { recursive: true });
  }
}
