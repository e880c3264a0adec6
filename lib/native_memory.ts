// Giving the native memory a process freed back to the system.
//
// glibc's allocator keeps what Deno's native side frees (the module loader,
// I/O buffers, TLS state) in its heap, as holes between blocks still in
// use, and gives back only a free stretch at the very top. An idle worker's
// resident set then depends on how start-up happened to fragment that heap:
// the same worker, idle after the same builds, measured between 70 and 88 MB
// from run to run, its JavaScript heap about 12 MB each time, the rest
// mostly glibc's [heap] mapping (12 MB in low runs, 22 to 29 MB in high
// ones). malloc_trim(0) hands the free pages inside the heap back too, and
// the same worker trimmed every few seconds measured 62 MB every time.
//
// Trimming needs the FFI permission and glibc. Where either is missing the
// trimmer does nothing: memory is then merely held longer, never lost.

import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

/** Hands freed heap pages back; returns whether any were released. */
export type TrimNativeHeap = () => boolean;

/**
 * A way to trim the native heap, and to let go of what it holds (the C
 * library it opened), or why there is none.
 */
export type NativeTrim =
  | { trim: TrimNativeHeap; close(): void }
  | { unavailable: string };

/**
 * glibc's malloc_trim(0), or why it cannot be had: no FFI permission (the
 * permission is queried, never asked for, so that no prompt ever blocks a
 * service), or a C library without it (musl).
 */
export function loadMallocTrim(): NativeTrim {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return { unavailable: "no FFI permission" };
  }
  try {
    const libc = Deno.dlopen("libc.so.6", {
      malloc_trim: { parameters: ["usize"], result: "i32" },
    });
    return {
      trim: () => libc.symbols.malloc_trim(0n) === 1,
      close: () => libc.close(),
    };
  } catch (error) {
    return {
      unavailable: `malloc_trim not found in libc.so.6: ${
        error instanceof Error ? error.message : String(error)
      }`,
    };
  }
}

/** A trimmer started by {@link startNativeMemoryTrimmer}. */
export interface NativeMemoryTrimmer {
  /**
   * Stops the trimming and unloads the C library if the trimmer loaded it;
   * resolves when its loop has ended.
   */
  stop(): Promise<void>;
}

/**
 * Trims the native heap every `intervalMs` until stopped. A trim of a heap
 * of some tens of MB takes well under a millisecond, so a short interval
 * costs nothing noticeable and an idle process is small soon after its
 * last work.
 */
export function startNativeMemoryTrimmer(options: {
  clock: Clock;
  logger: Logger;
  intervalMs: number;
  /**
   * Defaults to {@link loadMallocTrim}'s answer. One given here stays open
   * after the stop: its caller closes it.
   */
  native?: NativeTrim;
}): NativeMemoryTrimmer {
  const { clock, logger, intervalMs } = options;
  const loaded = options.native ?? loadMallocTrim();
  if ("unavailable" in loaded) {
    logger.debug("native memory trim off", { reason: loaded.unavailable });
    return { stop: () => Promise.resolve() };
  }
  const abort = new AbortController();
  const loop = (async () => {
    while (!abort.signal.aborted) {
      try {
        await clock.sleep(intervalMs, abort.signal);
      } catch {
        return;
      }
      loaded.trim();
    }
  })();
  return {
    async stop() {
      const first = !abort.signal.aborted;
      abort.abort();
      await loop;
      if (first && options.native === undefined) loaded.close();
    },
  };
}
