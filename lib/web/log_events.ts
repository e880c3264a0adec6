// `/build/ID/log/events`: the build log as server-sent events while the build runs.

import { HttpError } from "./http_error.ts";
import { cleanLogText, logFilePath } from "./build_log.ts";
import {
  type FileIdentity,
  fileIdentity,
  GzipLogFollower,
} from "./live_logs.ts";
import type { RouteContext } from "./route_context.ts";
import { type Build, BuildStatus } from "../store/types.ts";

/** Send a comment line after this many quiet polls, to keep proxies from closing. */
const KEEPALIVE_POLLS = 15;
/** Polls spent after the build finished, catching the end of the upload. */
const FINAL_POLLS = 2;

const encoder = new TextEncoder();

/**
 * Streams a build's log: `start` (the client clears its view), `log` (text
 * to append, JSON-encoded), `reset` (the log started over), `status` (with
 * `waiting` while the build has yet to start, which has no log: an earlier
 * attempt's is not sent) and finally `end` once the build finished and its
 * log stopped growing.
 * @throws {HttpError} 503 when too many streams are open.
 */
export function logEventsResponse(
  context: RouteContext,
  build: Build,
): Response {
  const { options } = context;
  if (options.liveStreams.open >= options.maxLiveStreams) {
    throw new HttpError(503, "Cannot stream log: too many live logs open");
  }
  const path = logFilePath(options.logCacheDir, build.derivation);
  const stop = new AbortController();
  // A client going away cancels the body stream, which stops the loop.
  options.liveStreams.open++;
  let released = false;
  const release = () => {
    if (!released) {
      released = true;
      options.liveStreams.open--;
    }
  };

  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const send = (event: string, data: unknown) => {
        controller.enqueue(
          encoder.encode(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`),
        );
      };
      const keepalive = () => {
        controller.enqueue(encoder.encode(": keepalive\n\n"));
      };
      // A client that does not read holds the stream: stop reading the file.
      const backlogged = () => (controller.desiredSize ?? 0) < 0;
      follow(context, build, path, stop.signal, {
        send,
        keepalive,
        backlogged,
      }).catch((error) => {
        if (!stop.signal.aborted) {
          options.logger.warn("live log failed", { build: build.id, error });
        }
      }).finally(() => {
        release();
        try {
          controller.close();
        } catch {
          // Already closed by a cancel.
        }
      });
    },
    cancel() {
      stop.abort();
      release();
    },
  }, { highWaterMark: 64 });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    },
  });
}

async function follow(
  context: RouteContext,
  initial: Build,
  path: string | null,
  signal: AbortSignal,
  sink: {
    send(event: string, data: unknown): void;
    keepalive(): void;
    backlogged(): boolean;
  },
): Promise<void> {
  const { send, keepalive, backlogged } = sink;
  const { store, liveLogs, clock, livePollMs } = context.options;
  // Created once the build's attempt has started: before, any file at the
  // path is an earlier attempt's log.
  let follower: GzipLogFollower | null = null;
  // The file of the attempt before the current one, which stays at the
  // path until the new attempt's upload replaces it.
  let earlierFile: FileIdentity | null = null;
  // Set when the followed log turned out damaged: nothing more is read of it.
  let damaged = false;
  let wake: (() => void) | null = null;
  let dirty = false;
  const unsubscribe = liveLogs?.subscribe(initial.derivation, () => {
    dirty = true;
    wake?.();
  }) ?? (() => {});
  try {
    send("start", { build: initial.id });
    let build = initial;
    let lastStatus: number | null = null;
    let quiet = 0;
    let finalPolls = 0;
    while (!signal.aborted) {
      const current = await store.getBuild(initial.id);
      if (current === null) {
        send("end", { status: null, reason: "build deleted" });
        return;
      }
      const waiting = waitsToStart(current);
      // The attempt followed so far is over: the build waits to start
      // again, or started again between two polls.
      const restarted = waiting ||
        (current.starttime !== build.starttime && build.starttime !== 0);
      if (restarted && follower !== null) {
        earlierFile = follower.file ??
          (waiting && path !== null ? await fileIdentity(path) : null);
        follower.close();
        follower = null;
        damaged = false;
        send("reset", {});
      } else if (waiting && lastStatus === null && path !== null) {
        earlierFile = await fileIdentity(path);
      }
      if (!waiting && follower === null && path !== null) {
        follower = new GzipLogFollower(path, { skipFile: earlierFile });
      }
      build = current;
      if (build.status !== lastStatus) {
        lastStatus = build.status;
        send(
          "status",
          waiting
            ? { status: build.status, waiting: true }
            : { status: build.status },
        );
      }
      let sent = false;
      if (follower !== null && !damaged && !backlogged()) {
        const step = await follower.read();
        if (step.reset) send("reset", {});
        if (step.truncated) send("truncated", {});
        if (step.text !== "") {
          send("log", cleanLogText(step.text));
          sent = true;
        }
        if (step.damaged) {
          send("damaged", {});
          damaged = true;
        }
      }
      if (build.status >= 0 && !sent) {
        if (++finalPolls > FINAL_POLLS) {
          send("end", { status: build.status });
          return;
        }
      }
      quiet = sent ? 0 : quiet + 1;
      if (quiet >= KEEPALIVE_POLLS) {
        keepalive();
        quiet = 0;
      }
      // With change signals the poll is only a safety net: wait longer.
      const pollMs = build.status >= 0
        ? Math.min(livePollMs, 250)
        : liveLogs === null
        ? livePollMs
        : livePollMs * 5;
      await waitFor(pollMs);
    }
  } finally {
    unsubscribe();
    follower?.close();
  }

  async function waitFor(ms: number): Promise<void> {
    // A client gone while the poll read the store or the file: its abort
    // fired already and would not end a sleep begun now, which held the
    // log file open a whole poll (seconds with change signals) for nobody.
    if (signal.aborted) return;
    if (dirty) {
      dirty = false;
      return;
    }
    const timer = new AbortController();
    const abort = () => timer.abort();
    signal.addEventListener("abort", abort, { once: true });
    try {
      await Promise.race([
        clock.sleep(ms, timer.signal).catch(() => {}),
        new Promise<void>((resolve) => wake = resolve),
      ]);
    } finally {
      wake = null;
      dirty = false;
      timer.abort();
      signal.removeEventListener("abort", abort);
    }
  }
}

/**
 * Whether the build's current attempt has yet to start: scheduled, or
 * handed to a worker that has not reported its start. It has no log yet.
 */
function waitsToStart(build: Build): boolean {
  return build.status === BuildStatus.scheduled ||
    build.status === BuildStatus.submitted;
}
