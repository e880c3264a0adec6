import assert from "node:assert/strict";
import { quietPort } from "../../_ports.ts";
import {
  dotStuff,
  sendSmtp,
  SmtpError,
} from "../../../lib/notify/smtp_client.ts";
import { formatEmail } from "../../../lib/notify/email_message.ts";
import {
  aiosmtpdAvailable,
  selfSignedCertificate,
  startSmtpCapture,
} from "./smtp_capture.ts";

// Needs Debian's python3-aiosmtpd: a real SMTP server receives the mail.
const ignore = !aiosmtpdAvailable;

function message(text: string) {
  return formatEmail({
    from: "Lorica <ci@farm.test>",
    to: ["dev@example.test"],
    subject: "Build hello on demo is broken.",
    text,
    date: Date.UTC(2025, 11, 4, 16, 54, 0),
    messageId: "19aea.0011223344556677@farm.test",
  });
}

Deno.test("dotStuff() doubles leading dots and ends lines with CRLF", () => {
  assert.equal(dotStuff("a\n.b\n..c\r\nd"), "a\r\n..b\r\n...c\r\nd\r\n");
  assert.equal(dotStuff(".\r\n"), "..\r\n");
});

Deno.test({
  name: "sendSmtp() delivers a message to aiosmtpd with dot-stuffing undone",
  ignore,
  async fn() {
    await using capture = await startSmtpCapture();
    const text = "line one\n.hidden dot line\n.\nlast line\n";
    const result = await sendSmtp(
      { from: "ci@farm.test", to: ["dev@example.test", "ops@example.test"] },
      message(text),
      { hostname: "127.0.0.1", port: capture.port, heloName: "farm.test" },
    );
    assert.deepEqual(result.rejected, []);
    assert.match(result.reply, /^250 /);
    const [got] = await capture.messages(1);
    assert.equal(got.mail_from, "ci@farm.test");
    assert.deepEqual(got.rcpt_tos, ["dev@example.test", "ops@example.test"]);
    assert.equal(got.helo, "farm.test");
    assert.equal(got.tls, false);
    const [head, body] = got.content.split("\r\n\r\n");
    assert.match(head, /^From: Lorica <ci@farm\.test>$/m);
    assert.match(head, /^To: dev@example\.test$/m);
    assert.match(head, /^Date: Thu, 04 Dec 2025 16:54:00 \+0000$/m);
    assert.match(head, /^Message-ID: <19aea\.0011223344556677@farm\.test>$/m);
    assert.match(head, /^Subject: Build hello on demo is broken\.$/m);
    assert.match(head, /^Content-Type: text\/plain; charset=UTF-8$/m);
    assert.equal(body, "line one\r\n.hidden dot line\r\n.\r\nlast line\r\n");
  },
});

Deno.test({
  name: "sendSmtp() reports refused recipients and fails when all are refused",
  ignore,
  async fn() {
    await using capture = await startSmtpCapture();
    const options = { hostname: "127.0.0.1", port: capture.port };
    const partial = await sendSmtp(
      { from: "ci@farm.test", to: ["refuse@example.test", "dev@example.test"] },
      message("hi\n"),
      options,
    );
    assert.equal(partial.rejected.length, 1);
    assert.equal(partial.rejected[0].address, "refuse@example.test");
    assert.match(partial.rejected[0].reply, /^550 /);
    const [got] = await capture.messages(1);
    assert.deepEqual(got.rcpt_tos, ["dev@example.test"]);

    await assert.rejects(
      sendSmtp(
        { from: "ci@farm.test", to: ["refuse@example.test"] },
        message("hi\n"),
        options,
      ),
      (error) =>
        error instanceof SmtpError && error.stage === "RCPT TO" &&
        !error.transient,
    );
    await assert.rejects(
      sendSmtp(
        { from: "ci@farm.test", to: ["busy@example.test"] },
        message("hi\n"),
        options,
      ),
      (error) =>
        error instanceof SmtpError && error.code === 451 && error.transient,
    );
  },
});

Deno.test("sendSmtp() calls a refused connection transient", async () => {
  const port = quietPort();
  await assert.rejects(
    sendSmtp({ from: "a@b.test", to: ["c@d.test"] }, message("x\n"), {
      hostname: "127.0.0.1",
      port,
    }),
    (error) =>
      error instanceof SmtpError && error.stage === "connect" &&
      error.transient,
  );
});

Deno.test("sendSmtp() gives up on a silent server after its timeout", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  await assert.rejects(
    sendSmtp({ from: "a@b.test", to: ["c@d.test"] }, message("x\n"), {
      hostname: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
      timeoutMs: 200,
    }),
    (error) =>
      error instanceof SmtpError && error.transient &&
      /timed out/.test(error.message),
  );
  listener.close();
  await accepting.catch(() => {});
  for (const conn of accepted) conn.close();
});

Deno.test("sendSmtp() rejects envelope addresses that would inject commands", async () => {
  await assert.rejects(
    sendSmtp(
      { from: "a@b.test>\r\nRCPT TO:<x@y.test", to: ["c@d.test"] },
      "",
      { hostname: "127.0.0.1", port: 1 },
    ),
    (error) => error instanceof SmtpError && error.stage === "envelope",
  );
});

const tlsDir = await Deno.makeTempDir({ prefix: "lorica-tls-" });
const certificate = ignore ? null : await selfSignedCertificate(tlsDir);

Deno.test({
  name: "sendSmtp() upgrades with STARTTLS to aiosmtpd (needs openssl)",
  ignore: certificate === null,
  async fn() {
    try {
      await using capture = await startSmtpCapture(certificate!);
      await sendSmtp(
        { from: "ci@farm.test", to: ["dev@example.test"] },
        message("over TLS\n"),
        {
          hostname: "127.0.0.1",
          port: capture.port,
          tls: "starttls",
          caCerts: [certificate!.pem],
        },
      );
      const [got] = await capture.messages(1);
      assert.equal(got.tls, true);
      assert.match(got.content, /over TLS/);
    } finally {
      await Deno.remove(tlsDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "sendSmtp() refuses to go on when STARTTLS is required but not offered",
  ignore,
  async fn() {
    await using capture = await startSmtpCapture();
    await assert.rejects(
      sendSmtp({ from: "a@b.test", to: ["c@d.test"] }, message("x\n"), {
        hostname: "127.0.0.1",
        port: capture.port,
        tls: "starttls",
      }),
      (error) =>
        error instanceof SmtpError && error.stage === "STARTTLS" &&
        !error.transient,
    );
    assert.equal(
      await Deno.readTextFile(`${capture.dir}/messages.jsonl`).catch(() => ""),
      "",
    );
  },
});
