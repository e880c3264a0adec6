// A small SMTP client (RFC 5321) over Deno TCP: one message per connection.

/** How to reach the mail server. */
export interface SmtpOptions {
  hostname: string;
  port: number;
  /**
   * "none": plain text; "starttls": upgrade with STARTTLS and refuse to go
   * on without it; "implicit": TLS from the first byte (port 465).
   */
  tls?: "none" | "starttls" | "implicit";
  /** Extra trusted certificates in PEM, for TLS to a private relay. */
  caCerts?: string[];
  /** Our name in EHLO; default "localhost". */
  heloName?: string;
  /** Deadline for the whole session; default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** The envelope: who sends, who receives (bare addresses). */
export interface SmtpEnvelope {
  from: string;
  to: string[];
}

/** What the server said about a delivered message. */
export interface SmtpResult {
  /** Recipients the server refused; the others got the message. */
  rejected: { address: string; reply: string }[];
  /** The server's final reply to the message data. */
  reply: string;
}

/** A failed SMTP session. `transient` failures are worth retrying. */
export class SmtpError extends Error {
  constructor(
    message: string,
    /** The step that failed, e.g. "connect", "RCPT TO", "DATA". */
    readonly stage: string,
    /** The server's reply code, null for network failures. */
    readonly code: number | null,
    readonly transient: boolean,
  ) {
    super(message);
    this.name = "SmtpError";
  }
}

const MAX_LINE = 4096;
const MAX_REPLY_LINES = 200;

/**
 * Delivers one message: EHLO (HELO as a fallback), optional STARTTLS,
 * MAIL FROM, RCPT TO for each recipient, DATA with dot-stuffing, QUIT.
 * `message` is the RFC 5322 text (headers, blank line, body).
 * @throws {SmtpError} on network failures, timeouts and refusals.
 */
export async function sendSmtp(
  envelope: SmtpEnvelope,
  message: string,
  options: SmtpOptions,
): Promise<SmtpResult> {
  const {
    hostname,
    port,
    tls = "none",
    caCerts,
    heloName = "localhost",
    timeoutMs = 30_000,
    signal,
  } = options;
  for (const address of [envelope.from, ...envelope.to]) {
    if (/[\s<>]/.test(address) || address === "") {
      throw new SmtpError(
        `Cannot use envelope address ${
          JSON.stringify(address.slice(0, 200))
        }: empty or holds spaces or brackets`,
        "envelope",
        null,
        false,
      );
    }
  }
  if (envelope.to.length === 0) {
    throw new SmtpError(
      "Cannot send mail: no recipient",
      "envelope",
      null,
      false,
    );
  }

  let session: Session;
  try {
    const conn = tls === "implicit"
      ? await Deno.connectTls({ hostname, port, caCerts })
      : await Deno.connect({ hostname, port });
    session = new Session(conn);
  } catch (error) {
    throw new SmtpError(
      `Cannot connect to SMTP server ${hostname}:${port}: ${
        (error as Error).message
      }`,
      "connect",
      null,
      true,
    );
  }
  const timer = setTimeout(() => session.abort("timed out"), timeoutMs);
  const onAbort = () => session.abort("cancelled");
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await session.expect("greeting", null, [220]);
    let features = await hello(session, heloName);
    if (tls === "starttls") {
      if (!features.has("STARTTLS")) {
        throw new SmtpError(
          `Cannot start TLS with ${hostname}:${port}: the server does not offer STARTTLS`,
          "STARTTLS",
          null,
          false,
        );
      }
      await session.expect("STARTTLS", "STARTTLS", [220]);
      await session.upgrade(hostname, caCerts);
      features = await hello(session, heloName);
    }
    await session.expect(
      "MAIL FROM",
      `MAIL FROM:<${envelope.from}>${
        features.has("8BITMIME") ? " BODY=8BITMIME" : ""
      }`,
      [250],
    );
    const rejected: SmtpResult["rejected"] = [];
    for (const address of envelope.to) {
      const reply = await session.command(`RCPT TO:<${address}>`);
      if (reply.code !== 250 && reply.code !== 251) {
        if (reply.code >= 400 && reply.code < 500 && envelope.to.length === 1) {
          throw replyError("RCPT TO", reply);
        }
        rejected.push({ address, reply: reply.text });
      }
    }
    if (rejected.length === envelope.to.length) {
      throw new SmtpError(
        `Cannot send mail to ${
          JSON.stringify(envelope.to.join(", ").slice(0, 200))
        }: every recipient was refused (${rejected[0].reply.slice(0, 200)})`,
        "RCPT TO",
        null,
        false,
      );
    }
    await session.expect("DATA", "DATA", [354]);
    await session.write(dotStuff(message) + ".\r\n");
    const final = await session.expect("message", null, [250]);
    try {
      await session.command("QUIT");
    } catch {
      // The message is delivered; a server hanging up early is harmless.
    }
    return { rejected, reply: final.text };
  } catch (error) {
    if (error instanceof SmtpError) throw error;
    throw new SmtpError(
      `Cannot talk to SMTP server ${hostname}:${port}: ${
        session.abortReason ?? (error as Error).message
      }`,
      "session",
      null,
      true,
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    session.close();
  }
}

/** Escapes lines starting with "." and makes every line end in CRLF. */
export function dotStuff(message: string): string {
  const lines = message.replace(/\r\n|\r|\n/g, "\n").split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines.map((line) => (line.startsWith(".") ? "." + line : line))
    .join("\r\n") + "\r\n";
}

interface Reply {
  code: number;
  /** Every line of the reply, joined with "\n", codes included. */
  text: string;
  lines: string[];
}

/** EHLO, or HELO when the server does not know EHLO; returns extensions. */
async function hello(session: Session, name: string): Promise<Set<string>> {
  const reply = await session.command(`EHLO ${name}`);
  if (reply.code === 250) {
    return new Set(
      reply.lines.slice(1).map((line) =>
        line.slice(4).split(" ")[0].toUpperCase()
      ),
    );
  }
  await session.expect("HELO", `HELO ${name}`, [250]);
  return new Set();
}

function replyError(stage: string, reply: Reply): SmtpError {
  return new SmtpError(
    `Cannot complete ${stage}: the server replied ${
      JSON.stringify(reply.text.slice(0, 300))
    }`,
    stage,
    reply.code,
    reply.code >= 400 && reply.code < 500,
  );
}

/** One connection: buffered reply reading and command writing. */
class Session {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(0);
  #decoder = new TextDecoder();
  #encoder = new TextEncoder();
  abortReason: string | null = null;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async command(line: string): Promise<Reply> {
    await this.write(line + "\r\n");
    return await this.readReply();
  }

  async expect(
    stage: string,
    line: string | null,
    codes: number[],
  ): Promise<Reply> {
    const reply = line === null
      ? await this.readReply()
      : await this.command(line);
    if (!codes.includes(reply.code)) throw replyError(stage, reply);
    return reply;
  }

  async write(text: string) {
    const bytes = this.#encoder.encode(text);
    let written = 0;
    while (written < bytes.length) {
      written += await this.#conn.write(bytes.subarray(written));
    }
  }

  async upgrade(hostname: string, caCerts?: string[]) {
    this.#conn = await Deno.startTls(this.#conn as Deno.TcpConn, {
      hostname,
      caCerts,
    });
    this.#buffer = new Uint8Array(0);
  }

  abort(reason: string) {
    this.abortReason ??= reason;
    this.close();
  }

  close() {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  async readReply(): Promise<Reply> {
    const lines: string[] = [];
    while (true) {
      const line = await this.#readLine();
      if (!/^\d{3}([ -]|$)/.test(line)) {
        throw new SmtpError(
          `Cannot read SMTP reply: ${JSON.stringify(line.slice(0, 100))}`,
          "reply",
          null,
          true,
        );
      }
      lines.push(line);
      if (lines.length > MAX_REPLY_LINES) {
        throw new SmtpError(
          `Cannot read SMTP reply: more than ${MAX_REPLY_LINES} lines`,
          "reply",
          null,
          true,
        );
      }
      if (line[3] !== "-") {
        return {
          code: Number(line.slice(0, 3)),
          text: lines.join("\n"),
          lines,
        };
      }
    }
  }

  async #readLine(): Promise<string> {
    while (true) {
      const end = this.#buffer.indexOf(10);
      if (end >= 0) {
        const line = this.#buffer.subarray(0, end);
        this.#buffer = this.#buffer.slice(end + 1);
        return this.#decoder.decode(line).replace(/\r$/, "");
      }
      if (this.#buffer.length > MAX_LINE) {
        throw new SmtpError(
          `Cannot read SMTP reply: a line longer than ${MAX_LINE} bytes`,
          "reply",
          null,
          true,
        );
      }
      const chunk = new Uint8Array(4096);
      const n = await this.#conn.read(chunk);
      if (n === null) {
        throw new SmtpError(
          `Cannot read SMTP reply: the server closed the connection${
            this.abortReason ? ` (${this.abortReason})` : ""
          }`,
          "reply",
          null,
          true,
        );
      }
      const joined = new Uint8Array(this.#buffer.length + n);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, n), this.#buffer.length);
      this.#buffer = joined;
    }
  }
}
