import assert from "node:assert/strict";
import {
  EmailFormatError,
  envelopeAddress,
  formatEmail,
  newMessageId,
  rfc5322Date,
  splitAddresses,
} from "../../../lib/notify/email_message.ts";

const base = {
  from: "ci@farm.test",
  to: ["dev@example.test"],
  subject: "Build a on b is fixed.",
  text: "Hello\n",
  date: Date.UTC(2024, 1, 29, 5, 6, 7),
  messageId: "abc.def@farm.test",
};

function headerOf(message: string, name: string): string | undefined {
  const head = message.split("\r\n\r\n")[0].replace(/\r\n /g, " ");
  return head.split("\r\n").find((line) => line.startsWith(`${name}: `))
    ?.slice(name.length + 2);
}

Deno.test("rfc5322Date() writes day, date, time and zone", () => {
  assert.equal(rfc5322Date(base.date), "Thu, 29 Feb 2024 05:06:07 +0000");
});

Deno.test("formatEmail() writes the headers and a 7bit ASCII body with CRLF", () => {
  const message = formatEmail(base);
  assert.equal(headerOf(message, "From"), "ci@farm.test");
  assert.equal(headerOf(message, "To"), "dev@example.test");
  assert.equal(headerOf(message, "Date"), "Thu, 29 Feb 2024 05:06:07 +0000");
  assert.equal(headerOf(message, "Message-ID"), "<abc.def@farm.test>");
  assert.equal(headerOf(message, "Subject"), "Build a on b is fixed.");
  assert.equal(headerOf(message, "MIME-Version"), "1.0");
  assert.equal(headerOf(message, "Content-Transfer-Encoding"), "7bit");
  assert.ok(message.endsWith("\r\n\r\nHello\r\n"));
  assert.ok(!/[^\r]\n/.test(message));
});

Deno.test("formatEmail() encodes UTF-8 subjects and bodies", () => {
  const message = formatEmail({
    ...base,
    from: "Zoë <ci@farm.test>",
    subject: "Build café on spéc is broken.",
    text: "Ünïcode ✓\n",
  });
  const subject = headerOf(message, "Subject")!;
  const decoded = subject.split(" ").map((word) => {
    const match = /^=\?UTF-8\?B\?(.*)\?=$/.exec(word);
    assert.ok(match, word);
    return new TextDecoder().decode(
      Uint8Array.from(atob(match[1]), (c) => c.charCodeAt(0)),
    );
  }).join("");
  assert.equal(decoded, "Build café on spéc is broken.");
  assert.match(
    headerOf(message, "From")!,
    /^=\?UTF-8\?B\?.*\?= <ci@farm\.test>$/,
  );
  assert.equal(headerOf(message, "Content-Transfer-Encoding"), "base64");
  const body = message.split("\r\n\r\n")[1].replace(/\r\n/g, "");
  assert.equal(
    new TextDecoder().decode(
      Uint8Array.from(atob(body), (c) => c.charCodeAt(0)),
    ),
    "Ünïcode ✓\n",
  );
});

Deno.test("formatEmail() rejects addresses with line breaks", () => {
  for (const from of ["a@b.test\r\nBcc: c@d.test", "", "not an address"]) {
    assert.throws(() => formatEmail({ ...base, from }), EmailFormatError);
  }
  assert.throws(() => formatEmail({ ...base, to: [] }), EmailFormatError);
});

Deno.test("envelopeAddress() and splitAddresses() read recipient lists", () => {
  assert.deepEqual(
    splitAddresses("a@x.test, Bee <b@y.test>").map(envelopeAddress),
    ["a@x.test", "b@y.test"],
  );
  assert.throws(() => envelopeAddress("<a b@x.test>"), EmailFormatError);
});

Deno.test("newMessageId() is unique and well formed", () => {
  const a = newMessageId(1, "farm.test");
  const b = newMessageId(1, "farm.test");
  assert.notEqual(a, b);
  assert.match(a, /^[0-9a-f]+\.[0-9a-f]{16}@farm\.test$/);
});
