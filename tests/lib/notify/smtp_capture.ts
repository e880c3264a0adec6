// Test helper: starts tests/lib/notify/smtp_capture.py (aiosmtpd) and reads
// the messages it captured.

const PYTHON = "/usr/bin/python3";
const SCRIPT = new URL("./smtp_capture.py", import.meta.url).pathname;

/** True when python3 with aiosmtpd is installed (Debian python3-aiosmtpd). */
export const aiosmtpdAvailable = (() => {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", "import aiosmtpd.smtp"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

export interface CapturedMessage {
  mail_from: string;
  rcpt_tos: string[];
  mail_options: string[];
  tls: boolean;
  helo: string;
  content: string;
}

export interface SmtpCapture {
  port: number;
  dir: string;
  /** Waits until at least `count` messages arrived (about 10 s at most). */
  messages(count: number): Promise<CapturedMessage[]>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the capturing server; with `tls`, it offers STARTTLS. */
export async function startSmtpCapture(
  tls?: { certFile: string; keyFile: string },
): Promise<SmtpCapture> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-smtp-" });
  const out = `${dir}/messages.jsonl`;
  const child = new Deno.Command(PYTHON, {
    args: [SCRIPT, out, ...(tls ? [tls.certFile, tls.keyFile] : [])],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/port \d+\n/.test(text)) {
    const { done, value } = await reader.read();
    if (done) throw new Error("Cannot start smtp_capture.py: it exited");
    text += value;
  }
  reader.releaseLock();
  const port = Number(/port (\d+)/.exec(text)![1]);
  return {
    port,
    dir,
    async messages(count) {
      for (let i = 0; i < 200; i++) {
        const lines = await Deno.readTextFile(out).catch(() => "");
        const parsed = lines.split("\n").filter(Boolean).map((line) =>
          JSON.parse(line) as CapturedMessage
        );
        if (parsed.length >= count) return parsed;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      throw new Error(`Cannot see ${count} captured messages in ${out}`);
    },
    async [Symbol.asyncDispose]() {
      await child.stdin.close().catch(() => {});
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await child.status;
      clearTimeout(timer);
      await child.stdout.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A self-signed certificate for 127.0.0.1, made with openssl; null without it. */
export async function selfSignedCertificate(
  dir: string,
): Promise<{ certFile: string; keyFile: string; pem: string } | null> {
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  try {
    const result = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        keyFile,
        "-out",
        certFile,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!result.success) return null;
  } catch {
    return null;
  }
  return { certFile, keyFile, pem: await Deno.readTextFile(certFile) };
}
