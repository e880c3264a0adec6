// The latency of a durable write on this machine's disk. A PostgreSQL
// commit (fsync on) waits for one flush of its write-ahead log, and the
// dispatcher replies to a worker only once its turn is committed: no
// request-work latency on PostgreSQL can beat this disk's flushes.

import { percentile } from "./stats.ts";

/** Flushes timed, after as many 8 KiB appends (a WAL page each). */
export const SYNC_SAMPLES = 2_000;

/**
 * Appends 8 KiB to a file in `directory` (default: the temporary one, where
 * the bench's SQLite databases are) and flushes it (fdatasync),
 * {@link SYNC_SAMPLES} times; the p50, p99 and worst flush in ms.
 */
export async function diskSyncLatency(
  directory?: string,
): Promise<{ p50: number; p99: number; max: number }> {
  const path = await Deno.makeTempFile({ dir: directory, prefix: "sync-" });
  const page = new Uint8Array(8192);
  const latencies: number[] = [];
  const file = await Deno.open(path, { write: true, append: true });
  try {
    for (let i = 0; i < SYNC_SAMPLES; i++) {
      await file.write(page);
      const start = performance.now();
      await file.syncData();
      latencies.push(performance.now() - start);
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: Math.max(...latencies),
  };
}
