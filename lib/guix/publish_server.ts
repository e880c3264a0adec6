// The `guix publish` child of the server and of each worker: started, seen
// listening, then watched. One that cannot start is a startup error naming
// its port; one that dies later is reported to its owner, which must not go
// on as if its results could still be fetched.

import { type Clock, systemClock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Guix, GuixExit } from "./guix_command.ts";

export interface PublishOptions {
  /** Port to listen on; 0 lets guix pick one. */
  port: number;
  /** Address to listen on. */
  listen: string;
  /** Extra `guix publish` arguments, e.g. key files. */
  extraArgs?: string[];
  logger: Logger;
  clock?: Clock;
  /**
   * Longest wait for guix publish to say it listens [60 s]. Still running
   * past it without having said so, it is taken as started (with a
   * warning): only its exit proves it failed.
   */
  startTimeoutMs?: number;
}

/** A `guix publish` that started. */
export interface PublishServer {
  readonly pid: number;
  /**
   * Resolves when it exits without `stop()` having asked for it; never
   * resolves otherwise.
   */
  readonly died: Promise<PublishDiedError>;
  stop(): Promise<void>;
}

/** `guix publish` exited before it listened. */
export class PublishStartError extends Error {
  constructor(
    readonly address: string,
    readonly extraArgs: string[],
    readonly exit: GuixExit,
  ) {
    super(
      `Cannot start guix publish on the publish port ${address}${
        extraArgs.length > 0 ? ` (with ${extraArgs.join(" ")})` : ""
      }: exit code ${exit.code}${
        exit.signal === null ? "" : `, signal ${exit.signal}`
      }: ${exit.lastLine || "no error message"}`,
    );
    this.name = "PublishStartError";
  }
}

/** `guix publish` exited while it was serving. */
export class PublishDiedError extends Error {
  constructor(readonly address: string, readonly exit: GuixExit) {
    super(
      `Cannot publish on the publish port ${address}: guix publish ${
        exit.signal === null
          ? `exited with code ${exit.code}`
          : `was killed by ${exit.signal}`
      }${
        exit.lastLine === ""
          ? ""
          : `; its last output: ${JSON.stringify(exit.lastLine)}`
      }`,
    );
    this.name = "PublishDiedError";
  }
}

/**
 * Starts `guix publish` and waits until it says it listens: Guix prints
 * "publishing /gnu/store on ADDRESS, port N" only once its socket is bound
 * and its signing key read (guix.md 3.1).
 * @throws {PublishStartError} when it exits first (port in use, key
 * unreadable, ...).
 */
export async function startPublish(
  guix: Guix,
  options: PublishOptions,
): Promise<PublishServer> {
  const { port, listen, logger, extraArgs = [] } = options;
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const listening = Promise.withResolvers<"listening">();
  // Translations of the message keep its number: look for the port itself.
  const saysListening = port === 0
    ? /\bport\s+\d+\b/i
    : new RegExp(`(^|[^0-9])${port}([^0-9]|$)`);
  const running = guix.start(
    [
      "publish",
      `--port=${port}`,
      `--listen=${listen}`,
      "--compression=0",
      ...extraArgs,
    ],
    "publish",
    {
      onStderrLine(line) {
        if (!line.includes(": error: ") && saysListening.test(line)) {
          listening.resolve("listening");
        }
      },
    },
  );
  const waited = new AbortController();
  const outcome = await Promise.race([
    listening.promise,
    running.exited,
    clock.sleep(timeoutMs, waited.signal).then(
      () => "unconfirmed" as const,
      () => "unconfirmed" as const,
    ),
  ]);
  waited.abort();
  const address = `${listen}:${port}`;
  if (typeof outcome === "object") {
    throw new PublishStartError(address, extraArgs, outcome);
  }
  if (outcome === "unconfirmed") {
    logger.warn("publish start unconfirmed", {
      address,
      waited: timeoutMs / 1000,
      reason: "guix publish runs but did not say it listens",
    });
  }
  return {
    pid: running.pid,
    died: running.exited.then((exit) =>
      exit.requested
        ? new Promise<never>(() => {})
        : new PublishDiedError(address, exit)
    ),
    stop: () => running.stop(),
  };
}
