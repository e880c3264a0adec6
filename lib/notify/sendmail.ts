// Hands a message to the local sendmail program (`sendmail -i -f FROM -- TO`).

/** Options of sendWithSendmail. */
export interface SendmailOptions {
  /** Kill sendmail after this long; default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** sendmail is missing, failed or timed out. */
export class SendmailError extends Error {
  constructor(
    message: string,
    readonly path: string,
    /** Exit code, null when it did not run or was killed. */
    readonly exitCode: number | null,
    /** EX_TEMPFAIL (75) and timeouts are worth retrying. */
    readonly transient: boolean,
  ) {
    super(message);
    this.name = "SendmailError";
  }
}

const EX_TEMPFAIL = 75;
/**
 * How long sendmail's standard error may stay open once sendmail is gone: a
 * child it forked (a queue runner, a stuck relay) can hold the pipe for as
 * long as it lives, and the notification loop must not wait on it.
 */
const STDERR_GRACE_MS = 1_000;
/** Standard error kept for the error message. */
const STDERR_MAX_CHARS = 16 << 10;

/**
 * Runs `path -i -f FROM -- TO...` with the message (LF line ends) on its
 * standard input.
 * @throws {SendmailError} when it cannot start, exits non-zero or hangs.
 */
export async function sendWithSendmail(
  path: string,
  envelope: { from: string; to: string[] },
  message: string,
  options: SendmailOptions = {},
): Promise<void> {
  const { timeoutMs = 60_000, signal } = options;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(path, {
      args: ["-i", "-f", envelope.from, "--", ...envelope.to],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new SendmailError(
      `Cannot run sendmail ${JSON.stringify(path)}: ${
        (error as Error).message
      }`,
      path,
      null,
      false,
    );
  }
  let killed: string | null = null;
  const kill = (why: string) => {
    killed ??= why;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const timer = setTimeout(() => kill("timed out"), timeoutMs);
  const onAbort = () => kill("cancelled");
  signal?.addEventListener("abort", onAbort, { once: true });
  const stderrReader = child.stderr.getReader();
  const stderrText = readTextTail(stderrReader, STDERR_MAX_CHARS);
  try {
    const writer = child.stdin.getWriter();
    await writer.write(
      new TextEncoder().encode(message.replace(/\r\n/g, "\n")),
    ).catch(() => {});
    await writer.close().catch(() => {});
    const { code } = await child.status;
    const stderr = await settleWithin(stderrText, STDERR_GRACE_MS, () => {
      stderrReader.cancel().catch(() => {});
    });
    if (killed !== null) {
      throw new SendmailError(
        `Cannot send mail with ${JSON.stringify(path)}: ${killed}`,
        path,
        null,
        true,
      );
    }
    if (code !== 0) {
      throw new SendmailError(
        `Cannot send mail with ${JSON.stringify(path)}: exit code ${code}${
          stderr.trim()
            ? `, ${JSON.stringify(stderr.trim().slice(0, 300))}`
            : ""
        }`,
        path,
        code,
        code === EX_TEMPFAIL,
      );
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Reads the stream to its end (or a failure), keeping the last `max` chars. */
async function readTextTail(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  max: number,
): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      text = (text + decoder.decode(value, { stream: true })).slice(-max);
    }
  } catch {
    // Cancelled or broken: what came so far is all there is.
  }
  return text;
}

/**
 * What `reading` gives within `ms`; past that, calls `giveUp` (which must
 * make `reading` end) and returns what it gives then.
 */
async function settleWithin(
  reading: Promise<string>,
  ms: number,
  giveUp: () => void,
): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => {
    timer = setTimeout(() => resolve("late"), ms);
  });
  try {
    const first = await Promise.race([reading, late]);
    if (first !== "late") return first;
    giveUp();
    return await reading;
  } finally {
    clearTimeout(timer);
  }
}
