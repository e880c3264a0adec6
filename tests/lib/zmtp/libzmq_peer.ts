// Test helper: runs libzmq_peer.py (python3-zmq) as a child process and sends
// it JSON-line commands.

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

/** A running libzmq peer process. */
export class LibzmqPeer {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#lines = readLines(child.stdout);
  }

  /** Starts the script and waits for its hello line. */
  static async start(): Promise<LibzmqPeer> {
    const child = new Deno.Command(PYTHON, {
      args: [SCRIPT],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const peer = new LibzmqPeer(child);
    const hello = await peer.#next();
    if (!hello.ok) throw new Error("libzmq peer did not start");
    return peer;
  }

  /** Sends one command and resolves with its reply (commands run in order). */
  request(command: Record<string, unknown>): Promise<PeerReply> {
    const run = this.#queue.then(async () => {
      await this.#writer.write(
        new TextEncoder().encode(JSON.stringify(command) + "\n"),
      );
      return await this.#next();
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

  /** Asks the script to quit, then waits for the process to end. */
  async stop(): Promise<void> {
    await this.#queue;
    try {
      await this.#writer.write(new TextEncoder().encode('{"op":"quit"}\n'));
      await this.#writer.close();
    } catch {
      // Already gone.
    }
    while (!(await this.#lines.next()).done) {
      // Drain stdout so the stream closes.
    }
    await this.#child.status;
  }

  async #next(): Promise<PeerReply> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error("libzmq peer exited");
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
