// A fake spawner's child that runs until killed, for the worker tests: a
// guix publish, or a guix build the test never lets finish.

import type { Child, ChildStatus, SpawnOptions } from "../../../lib/process.ts";

/** What guix publish says once it listens (publish_server.ts waits for it). */
export const PUBLISH_SAYS = "publishing /gnu/store on 127.0.0.1, port 4242\n";

/**
 * A child that writes `says` (if any) to its stderr, then runs until
 * killed or until `options.signal` aborts.
 */
export function lingeringChild(options?: SpawnOptions, says?: string): Child {
  const status = Promise.withResolvers<ChildStatus>();
  const end = new AbortController();
  const kill = () => {
    end.abort();
    status.resolve({ code: 143, signal: "SIGTERM" });
  };
  // As the real spawner does: a signal aborted already kills at once.
  // (A stop landing between build-started and the spawn left this fake
  // running for good, and a session waiting for it.)
  if (options?.signal?.aborted) queueMicrotask(kill);
  else options?.signal?.addEventListener("abort", kill, { once: true });
  const open = (first?: string) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        if (first) controller.enqueue(new TextEncoder().encode(first));
        end.signal.addEventListener("abort", () => controller.close(), {
          once: true,
        });
      },
    });
  return {
    pid: 4242,
    stdout: open(),
    stderr: open(says),
    stdin: null,
    status: status.promise,
    kill,
  };
}
