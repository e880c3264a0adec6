// Test helper: runs libzmq_peer.py (python3-zmq) as a child process and sends
// it JSON-line commands.

import { within } from "../../_within.ts";

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./libzmq_peer.py", import.meta.url).pathname;

/** Why the libzmq tests cannot run here, or undefined when they can. */
export const libzmqMissing: string | undefined = probe();

/** A reply line from the peer script. */
export interface PeerReply {
  ok: boolean;
  error?: string;
  code?: string;
  endpoint?: string;
  frames?: string[];
  peerAddress?: string | null;
  sizes?: number[];
  sha256?: string[];
  good?: number;
  sample?: string[][];
}

/** Settings for {@linkcode LibzmqPeer.start}. */
export interface LibzmqPeerOptions {
  /** The peer program and its arguments; default libzmq_peer.py. */
  argv?: string[];
  /**
   * Time allowed for the hello line, for each reply and for the exit after
   * quit; default {@linkcode PEER_TIMEOUT_MS}.
   */
  timeoutMs?: number;
}

/**
 * Longer than any command takes (the script's own waits last 10 s at
 * most): past it the peer is stuck, and the test fails saying so.
 */
export const PEER_TIMEOUT_MS = 60_000;

/** A running libzmq peer process. */
export class LibzmqPeer {
  #child: Deno.ChildProcess;
  #name: string;
  #timeoutMs: number;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  #queue: Promise<unknown> = Promise.resolve();
  #exit: Promise<void> | undefined;

  private constructor(
    child: Deno.ChildProcess,
    name: string,
    timeoutMs: number,
  ) {
    this.#child = child;
    this.#name = name;
    this.#timeoutMs = timeoutMs;
    this.#writer = child.stdin.getWriter();
    this.#lines = readLines(child.stdout);
  }

  /**
   * Starts the script and waits for its hello line.
   * @throws {Error} naming the program when it exits, says something else
   * or says nothing in time (it is killed then)
   */
  static async start(options: LibzmqPeerOptions = {}): Promise<LibzmqPeer> {
    const { argv = [PYTHON, SCRIPT], timeoutMs = PEER_TIMEOUT_MS } = options;
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const peer = new LibzmqPeer(child, argv.join(" "), timeoutMs);
    try {
      const hello = await within(
        peer.#next(),
        timeoutMs,
        `hello line from the libzmq peer "${peer.#name}"`,
      );
      if (!hello.ok) {
        throw new Error(`libzmq peer "${peer.#name}" did not start`);
      }
      return peer;
    } catch (error) {
      await peer.#kill();
      throw error;
    }
  }

  /**
   * Sends one command and resolves with its reply (commands run in order).
   * @throws {Error} naming the command when no reply comes in time
   */
  request(command: Record<string, unknown>): Promise<PeerReply> {
    const run = this.#queue.then(async () => {
      await this.#writer.write(
        new TextEncoder().encode(JSON.stringify(command) + "\n"),
      );
      return await within(
        this.#next(),
        this.#timeoutMs,
        `reply from the libzmq peer to ${
          JSON.stringify(command).slice(0, 200)
        }`,
      );
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Like request() but fails the test on an error reply. */
  async must(command: Record<string, unknown>): Promise<PeerReply> {
    const reply = await this.request(command);
    if (!reply.ok) {
      throw new Error(
        `libzmq peer failed ${JSON.stringify(command).slice(0, 200)}: ${
          JSON.stringify(reply)
        }`,
      );
    }
    return reply;
  }

  /**
   * Asks the script to quit, then waits for the process to end.
   * @throws {Error} when it does not end in time (it is killed then)
   */
  async stop(): Promise<void> {
    await this.#queue;
    try {
      await this.#writer.write(new TextEncoder().encode('{"op":"quit"}\n'));
      await this.#writer.close();
    } catch {
      // Already gone.
    }
    try {
      await within(
        this.#exited(),
        this.#timeoutMs,
        `exit of the libzmq peer "${this.#name}" after quit`,
      );
    } catch (error) {
      await this.#kill();
      throw error;
    }
  }

  /** Kills the process and releases its pipes. */
  async #kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#writer.abort().catch(() => {});
    await this.#exited();
  }

  /** Resolves once stdout is drained (so the stream closes) and the process ended. */
  #exited(): Promise<void> {
    this.#exit ??= (async () => {
      while (!(await this.#lines.next()).done) {
        // Drain stdout so the stream closes.
      }
      await this.#child.status;
    })();
    return this.#exit;
  }

  async #next(): Promise<PeerReply> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error(`libzmq peer "${this.#name}" exited`);
    return JSON.parse(value);
  }
}

/** Hex text of bytes, as the peer script speaks it. */
export function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes from hex text. */
export function fromHex(text: string): Uint8Array {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  }
  return out;
}

/** The script's deterministic payload: byte i is (i + seed) mod 256. */
export function pattern(size: number, seed = 0): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i + seed) & 0xff;
  return out;
}

/** SHA-256 of bytes as hex. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  return toHex(
    new Uint8Array(
      await crypto.subtle.digest("SHA-256", bytes as BufferSource),
    ),
  );
}

function probe(): string | undefined {
  try {
    const result = new Deno.Command(PYTHON, {
      args: ["-c", "import zmq"],
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return result.success ? undefined : `${PYTHON} cannot import zmq`;
  } catch {
    return `${PYTHON} is not installed`;
  }
}

async function* readLines(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline);
      pending = pending.slice(newline + 1);
    }
  }
}
