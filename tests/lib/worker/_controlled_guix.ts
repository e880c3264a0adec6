// A `guix` whose builds run until the test finishes them: how a worker
// test holds a session mid-build while something else happens.

import { Guix } from "../../../lib/guix/guix_command.ts";
import type { Child, Spawner } from "../../../lib/process.ts";
import { createLogger } from "../../../lib/log.ts";

/** One `guix build` the spawner started, finished when the test says. */
export interface FakeBuild {
  argv: string[];
  killed: boolean;
  finished: boolean;
  finish(code: number, log?: Uint8Array): void;
}

/** A spawner whose `guix build` runs until the test finishes it. */
export function controlledGuix() {
  const builds: FakeBuild[] = [];
  const spawn: Spawner = (argv, options) => {
    const stderr = new TransformStream<Uint8Array, Uint8Array>();
    const writer = stderr.writable.getWriter();
    let resolve!: (s: { code: number; signal: string | null }) => void;
    const status = new Promise<{ code: number; signal: string | null }>(
      (r) => (resolve = r),
    );
    const build: FakeBuild = {
      argv,
      killed: false,
      finished: false,
      finish(code, log) {
        if (build.finished) return;
        build.finished = true;
        (log ? writer.write(log) : Promise.resolve())
          .then(() => writer.close())
          .then(() => resolve({ code, signal: null }));
      },
    };
    const kill = () => {
      build.killed = true;
      build.finish(143);
    };
    // As the real spawner does: a signal aborted already kills at once.
    // (A stop landing between build-started and the spawn left this fake
    // running for good, and a session waiting for it.)
    if (options?.signal?.aborted) queueMicrotask(kill);
    else options?.signal?.addEventListener("abort", kill, { once: true });
    builds.push(build);
    const child: Child = {
      pid: 4242,
      stdout: ReadableStream.from([new Uint8Array()]),
      stderr: stderr.readable,
      stdin: null,
      status,
      kill,
    };
    return child;
  };
  return {
    builds,
    guix: new Guix({ logger: createLogger({ sink: () => {} }), spawn }),
  };
}
