import assert from "node:assert/strict";
import {
  MailServerError,
  parseMailServer,
} from "../../../lib/notify/mail_server.ts";

Deno.test("parseMailServer() reads smtp, smtps and sendmail URLs", () => {
  const table: [string, unknown][] = [
    ["smtp://mail.test", {
      kind: "smtp",
      hostname: "mail.test",
      port: 25,
      tls: "none",
    }],
    ["smtp://127.0.0.1:2525", {
      kind: "smtp",
      hostname: "127.0.0.1",
      port: 2525,
      tls: "none",
    }],
    ["smtp+starttls://[::1]", {
      kind: "smtp",
      hostname: "::1",
      port: 587,
      tls: "starttls",
    }],
    ["smtps://mail.test", {
      kind: "smtp",
      hostname: "mail.test",
      port: 465,
      tls: "implicit",
    }],
    ["sendmail://", { kind: "sendmail", path: "/usr/sbin/sendmail" }],
    ["sendmail:///opt/bin/sendmail", {
      kind: "sendmail",
      path: "/opt/bin/sendmail",
    }],
  ];
  for (const [url, expected] of table) {
    assert.deepEqual(parseMailServer(url), expected, url);
  }
});

Deno.test("parseMailServer() rejects other schemes and credentials without echoing them", () => {
  for (
    const url of ["http://x", "mail.test", "smtp://", "sendmail://rel/path"]
  ) {
    assert.throws(() => parseMailServer(url), MailServerError, url);
  }
  assert.throws(
    () => parseMailServer("smtp://user:hunter2@mail.test"),
    (error: Error) =>
      error instanceof MailServerError && !error.message.includes("hunter2"),
  );
});
