// Runs one build handed out by the server and streams its log there.

import type { Logger } from "../log.ts";
import { type Clock, systemClock } from "../clock.ts";
import type { Guix } from "../guix/guix_command.ts";
import { watchDaemon } from "../guix/silence_watchdog.ts";
import {
  type LogUpload,
  type LogUploadOptions,
  openLogUpload,
} from "../protocol/log_upload.ts";
import { parseDerivationPath } from "../guix/store_path.ts";

export interface BuildJob {
  drv: string;
  /** Seconds; 0 for no limit. */
  timeout: number;
  /** Seconds without output; 0 for no limit. */
  maxSilent: number;
}

/**
 * How a build ended here. "daemon-silent": the daemon said nothing for the
 * build's max-silent-time and the grace, `guix build` was killed; the
 * fault is the farm's, not the package's. "killed": a signal ended
 * `guix build` before it did: the run's own (a stop, a cancel), or one
 * sent from outside (a service manager signalling the whole process group
 * at a stop, the kernel's OOM killer); nothing is known of the build.
 */
export type BuildOutcome =
  | { status: "succeeded" | "failed" | "killed" }
  | { status: "daemon-silent"; silentSeconds: number };

/** Why a build request is not run: the field to blame, its value named. */
export interface BuildRefusal {
  field: "drv" | "timeout" | "max-silent";
  reason: string;
}

export interface BuildRunnerOptions {
  guix: Guix;
  logger: Logger;
  /** The server's publish URL first, then any configured ones. */
  substituteUrls: string[];
  /**
   * Where the log goes: the server's log channel, and whether the server
   * says when it stored a log (a Lorica server announcing "log-ack").
   */
  logServer: { hostname: string; port: number; acknowledges?: boolean };
  cores?: number;
  /**
   * Aborting kills the build (a cancel from the server, a stop that does
   * not wait), and ends the sending again of its log.
   */
  signal?: AbortSignal;
  /**
   * Extra tries when the daemon could not even obtain the derivation (the
   * server's publish server restarting, say): such a failure is the
   * farm's, not the package's, and must not fail its dependents. Default 4.
   */
  retries?: number;
  /** First wait before such a retry, doubling; default 2000 ms. */
  retryDelayMs?: number;
  clock?: Clock;
  /**
   * Seconds past the build's max-silent-time `guix build` may print
   * nothing before the daemon is taken for stuck; default
   * that of {@link watchDaemon}. No limit when max-silent is 0.
   */
  daemonSilenceGraceSeconds?: number;
  /**
   * Directory of the build log's on-disk copy (kept to send the log again
   * to a restarted server); default the temporary directory (TMPDIR).
   */
  spoolDir?: string;
  /** Opens the upload of the log; default openLogUpload (a test's own). */
  openUpload?: (options: LogUploadOptions) => Promise<LogUpload>;
}

// What guix says when the build never started because the derivation (or
// its substitute source) was unavailable.
const UNAVAILABLE = [
  /cannot build missing derivation/,
  /path [`'‘"].*\.drv['’"]? is not valid/,
  /substitute: .*(connection refused|failed to connect|Connection reset)/i,
];

/**
 * Longest timeout or max-silent-time a worker takes from a server: a year
 * is far beyond any real build (Cuirass's default timeout is 20 hours), and
 * 0 already means "no limit".
 */
export const MAX_BUILD_LIMIT_SECONDS = 365 * 24 * 3600;

/**
 * Why `job` must not be run, or null when it may: its `drv` must be a
 * `.drv` item directly inside `storeDir`, its limits whole seconds from 0 to
 * MAX_BUILD_LIMIT_SECONDS. The request comes from the server (or from
 * whoever DNS-SD found), and its fields end up on `guix build`'s command
 * line: anything but a derivation could be an option such as `-e EXPR`.
 */
export function buildRefusal(
  job: BuildJob,
  storeDir: string,
): BuildRefusal | null {
  try {
    parseDerivationPath(job.drv, storeDir);
  } catch (error) {
    return { field: "drv", reason: (error as Error).message };
  }
  for (
    const [field, value] of [
      ["timeout", job.timeout],
      ["max-silent", job.maxSilent],
    ] as const
  ) {
    if (
      !Number.isInteger(value) || value < 0 || value > MAX_BUILD_LIMIT_SECONDS
    ) {
      return {
        field,
        reason:
          `Cannot use ${field} ${value}: not a whole number of seconds from 0 to ${MAX_BUILD_LIMIT_SECONDS}`,
      };
    }
  }
  return null;
}

/** Whether a failed build's stderr says the derivation was never obtained. */
export function isUnavailableDerivation(stderrTail: string): boolean {
  return UNAVAILABLE.some((pattern) => pattern.test(stderrTail));
}

/**
 * Builds `job.drv` with the local daemon, streaming its log to the server.
 * Never throws: any failure is a failed build. A daemon that says nothing
 * for the build's max-silent-time and the grace is stuck (its own limit
 * would have ended the build): `guix build` is killed and the outcome is
 * "daemon-silent", with a line saying so at the end of the log.
 */
export async function runBuild(
  job: BuildJob,
  options: BuildRunnerOptions,
): Promise<BuildOutcome> {
  const { guix, logger } = options;
  const openUpload = () =>
    (options.openUpload ?? openLogUpload)({
      hostname: options.logServer.hostname,
      port: options.logServer.port,
      acknowledge: options.logServer.acknowledges,
      drv: job.drv,
      logger,
    });
  const upload = await openUpload().catch((error) => {
    // The log is lost but the build is not: carry on without it.
    logger.warn("log upload unavailable", { drv: job.drv, error });
    return null;
  });
  const clock = options.clock ?? systemClock;
  const retries = options.retries ?? 4;
  const forward = await logForwarder(upload, {
    logger,
    drv: job.drv,
    clock,
    retries,
    retryDelayMs: options.retryDelayMs ?? 2000,
    reopen: openUpload,
    spoolDir: options.spoolDir,
    signal: options.signal,
  });
  let delay = options.retryDelayMs ?? 2000;
  try {
    let result;
    let silentMs: number | undefined;
    for (let attempt = 0;; attempt++) {
      const silent = new AbortController();
      const watchdog = watchDaemon(
        clock,
        job.maxSilent,
        options.daemonSilenceGraceSeconds,
        (ms) => {
          silentMs = ms;
          silent.abort();
        },
      );
      try {
        result = await guix.build([job.drv], {
          timeout: job.timeout,
          maxSilentTime: job.maxSilent,
          substituteUrls: options.substituteUrls,
          fallback: true,
          cores: options.cores,
          onLog: (chunk) => {
            watchdog?.alive();
            return forward.push(chunk);
          },
          signal: options.signal
            ? AbortSignal.any([options.signal, silent.signal])
            : silent.signal,
        });
      } finally {
        watchdog?.stop();
      }
      if (
        result.ok || options.signal?.aborted || silentMs !== undefined ||
        attempt >= retries || !isUnavailableDerivation(result.stderrTail)
      ) break;
      logger.warn("build retried", {
        drv: job.drv,
        attempt: attempt + 1,
        reason: "derivation unavailable",
        delay,
      });
      await clock.sleep(delay, options.signal).catch(() => {});
      delay *= 2;
    }
    if (options.signal?.aborted) {
      logger.info("build killed", { drv: job.drv, exit: result.exitCode });
      return { status: "killed" };
    }
    // guix build that ended with 0 as the kill was sent built the outputs:
    // the daemon was not stuck after all, and the build is a success.
    if (silentMs !== undefined && !result.ok) {
      const silentSeconds = Math.round(silentMs / 1000);
      forward.push(
        new TextEncoder().encode(
          `lorica-worker: guix-daemon silent for ${silentSeconds} s, past the max-silent-time of ${job.maxSilent} s: build given up\n`,
        ),
      );
      return { status: "daemon-silent", silentSeconds };
    }
    // Not the package's failure: the daemon cancels a build whose client
    // is gone, and another run may well succeed.
    if (!result.ok && result.signal !== null) {
      logger.warn("guix build killed", {
        drv: job.drv,
        signal: result.signal,
        reason: "a signal this worker did not send",
      });
      return { status: "killed" };
    }
    if (!result.ok) {
      logger.info("build failed locally", {
        drv: job.drv,
        exit: result.exitCode,
        reason: result.stderrTail.trimEnd().split("\n").pop(),
      });
    }
    return { status: result.ok ? "succeeded" : "failed" };
  } catch (error) {
    logger.error("build crashed", { drv: job.drv, error });
    return { status: "failed" };
  } finally {
    // A canceled build's log is not wanted any more: no second sending.
    await forward.finish({ resend: !options.signal?.aborted });
  }
}

/**
 * Longest log kept on the worker's disk to be sent again; a longer one
 * is not sent again (the server cuts logs at 256 MiB by default anyway).
 */
export const LOG_SPOOL_LIMIT_BYTES = 256 * 1024 * 1024;

const RESEND_CHUNK_BYTES = 64 * 1024;

/**
 * Most log bytes waiting for the upload (or for the copy on disk) before
 * the reading of the build's output waits for them to go. The output
 * comes faster than a gzip stream sync-flushed every 64 KiB takes it (a
 * builder dumping base64 noise: some 1 GB/s against tens of MB/s), and
 * what waits is held in memory: without a bound a 2 GB log took as much
 * of the worker's. Held back, the builder waits on its full pipe instead.
 */
export const LOG_BACKLOG_LIMIT_BYTES = 4 * 1024 * 1024;

/**
 * Writes log chunks to the upload in order, holding the build's output
 * reader back only while more than LOG_BACKLOG_LIMIT_BYTES wait; an
 * upload error only stops the log. Every chunk is also
 * kept in a temporary file: when the upload did not reach the server whole
 * (a server restarted mid-build, as during an upgrade), the whole log is
 * sent again through a new upload once the build is over, before its
 * result is reported, so that the server stores the full log rather than
 * the part it got before it went away. A server still starting again then
 * refuses the connection: when the first upload had reached the server, the
 * new one is tried again after `retryDelayMs` (doubling), `retries` times,
 * before the log is given up.
 */
async function logForwarder(
  upload: LogUpload | null,
  options: ResendOptions,
) {
  const { logger, drv } = options;
  let chain = Promise.resolve();
  let broken = upload === null;
  // Only a server that took the upload at first is waited for: one whose
  // log port never answered (a firewall, a wrong port) gets a single try,
  // for each retry holds the build's result back.
  const reached = upload !== null && upload.error === undefined;
  const spool = await openSpool(logger, drv, options.spoolDir);
  // Bytes pushed that the upload has not taken yet.
  let queued = 0;
  return {
    /**
     * Queues `chunk` for the upload and the copy; a promise when either
     * has more than LOG_BACKLOG_LIMIT_BYTES waiting, settled once both
     * have caught up (it never rejects: a failed upload drops its bytes).
     */
    push(chunk: Uint8Array): Promise<void> | undefined {
      spool?.write(chunk);
      if (!broken) {
        const copy = chunk.slice();
        queued += copy.length;
        chain = chain.then(() => upload!.write(copy)).catch((error) => {
          if (!broken) logger.warn("log upload failed", { drv, error });
          broken = true;
        }).finally(() => queued -= copy.length);
      }
      if (
        queued <= LOG_BACKLOG_LIMIT_BYTES &&
        (spool?.queued ?? 0) <= LOG_BACKLOG_LIMIT_BYTES
      ) return undefined;
      return Promise.all([chain, spool?.done()]).then(() => {});
    },
    async finish({ resend }: { resend: boolean }) {
      await chain;
      await upload?.close().catch((error) => {
        logger.warn("log upload failed", { drv, error });
        broken = true;
      });
      const delivered = !broken && upload?.error === undefined;
      try {
        if (!delivered && resend && spool) {
          await resendLog(spool, {
            ...options,
            retries: reached ? options.retries : 0,
          });
        }
      } finally {
        await spool?.remove();
      }
    },
  };
}

/** The on-disk copy of a build log; null when no temp file can be made. */
async function openSpool(logger: Logger, drv: string, dir?: string) {
  let path: string;
  let file: Deno.FsFile;
  try {
    path = await Deno.makeTempFile({ dir, prefix: "lorica-log-" });
    file = await Deno.open(path, { read: true, write: true, truncate: true });
  } catch (error) {
    logger.warn("log copy unavailable", { drv, error });
    return null;
  }
  // Unlinked at once: the open file is all the copy needs, and a worker
  // killed mid-build (SIGKILL, power loss) leaves no copy behind in the
  // temporary directory, where nothing would ever remove it.
  const unlinked = await Deno.remove(path).then(() => true, () => false);
  let chain = Promise.resolve();
  let size = 0;
  let queued = 0;
  let usable = true;
  let writeError: Error | undefined;
  return {
    /** Where the copy was made (unlinked at once where it could be). */
    path,
    get usable() {
      return usable;
    },
    /** Why the copy stopped, when a write failed (a full disk). */
    get writeError() {
      return writeError;
    },
    /** Bytes given to `write` not on disk yet. */
    get queued() {
      return queued;
    },
    write(chunk: Uint8Array) {
      if (!usable) return;
      size += chunk.length;
      if (size > LOG_SPOOL_LIMIT_BYTES) {
        usable = false;
        return;
      }
      const copy = chunk.slice();
      queued += copy.length;
      chain = chain.then(() => writeWhole(file, copy)).catch((error) => {
        if (usable) logger.warn("log copy failed", { drv, path, error });
        writeError ??= error as Error;
        usable = false;
      }).finally(() => queued -= copy.length);
    },
    async done() {
      await chain;
    },
    /** Reads the copy from its start (once `done`), a chunk at a time. */
    async *chunks(buffer: Uint8Array): AsyncGenerator<Uint8Array> {
      await file.seek(0, Deno.SeekMode.Start);
      for (let n = await file.read(buffer); n !== null;) {
        yield buffer.subarray(0, n);
        n = await file.read(buffer);
      }
    },
    async remove() {
      await chain;
      file.close();
      if (!unlinked) await Deno.remove(path).catch(() => {});
    },
  };
}

type Spool = NonNullable<Awaited<ReturnType<typeof openSpool>>>;

interface ResendOptions {
  logger: Logger;
  drv: string;
  reopen: () => Promise<LogUpload>;
  clock: Clock;
  /** Further uploads tried when one fails; 0 for a single try. */
  retries: number;
  retryDelayMs: number;
  /** Where the log's copy is made; default TMPDIR. */
  spoolDir?: string;
  /**
   * Ends the sending again: a stop past the drain timeout, or a second
   * signal, must not wait for a server that may stay away for minutes.
   */
  signal?: AbortSignal;
}

/**
 * Sends the whole log kept in `spool` through a new upload, again after a
 * pause while the server cannot take it (its log port not open yet after a
 * restart, or closed under the upload).
 */
async function resendLog(spool: Spool, options: ResendOptions) {
  const { logger, drv, clock } = options;
  await spool.done();
  if (!spool.usable) {
    logger.warn("log not sent again", {
      drv,
      ...spool.writeError
        ? {
          reason: "the copy of the log could not be written",
          path: spool.path,
          error: spool.writeError,
        }
        : {
          reason:
            `no whole copy of the log (limit ${LOG_SPOOL_LIMIT_BYTES} bytes)`,
        },
    });
    return;
  }
  let delay = options.retryDelayMs;
  for (let attempt = 1;; attempt++) {
    const error = await sendSpool(spool, options);
    if (error === undefined) return;
    if (attempt > options.retries) {
      logger.warn("log not sent again", { drv, attempts: attempt, error });
      return;
    }
    logger.warn("log resend retried", { drv, attempt, delay, error });
    const stopped = await clock.sleep(delay, options.signal).then(
      () => false,
      () => true,
    );
    if (stopped) {
      logger.warn("log not sent again", {
        drv,
        attempts: attempt,
        reason: "the build's session is stopping",
        error,
      });
      return;
    }
    delay *= 2;
  }
}

/** One upload of the whole spooled log; the error that stopped it, if any. */
async function sendSpool(
  spool: Spool,
  options: ResendOptions,
): Promise<Error | undefined> {
  const { logger, drv } = options;
  let again: LogUpload;
  try {
    again = await options.reopen();
  } catch (error) {
    return error as Error;
  }
  if (again.error) return again.error;
  let bytes = 0;
  for await (
    const chunk of spool.chunks(new Uint8Array(RESEND_CHUNK_BYTES))
  ) {
    await again.write(chunk);
    bytes += chunk.length;
  }
  await again.close();
  if (again.error) return again.error;
  logger.info("log sent again", { drv, bytes, ok: true });
}

async function writeWhole(file: Deno.FsFile, chunk: Uint8Array) {
  let written = 0;
  while (written < chunk.length) {
    written += await file.write(chunk.subarray(written));
  }
}
