import assert from "node:assert/strict";
import { isPlainHost } from "../../../lib/web/request_host.ts";
import { createFixture, rawExchange } from "./_fixture.ts";

const PLAIN = [
  "ci.example.org",
  "ci.example.org:8080",
  "ci.example.org.",
  "build_host",
  "127.0.0.1",
  "127.0.0.1:65535",
  "[::1]",
  "[::1]:8080",
  "[2001:db8::1]:443",
];

const NOT_PLAIN = [
  "",
  "evil.example/feed?",
  "evil.example?x",
  "evil.example#x",
  "user@evil.example",
  "evil.example\\x",
  "%65vil.example",
  "a b",
  'evil"><x>',
  "évil.example",
  "evil.example:",
  "evil.example:99999",
  "evil.example:80:80",
  "[::1",
  "[1:2]",
  "1.2.3.999",
  "x".repeat(300),
];

Deno.test("isPlainHost() takes a host name, an IPv4 or a bracketed IPv6 address with an optional port, and nothing else", async (t) => {
  for (const host of PLAIN) {
    await t.step(`takes ${host}`, () => assert.equal(isPlainHost(host), true));
  }
  for (const host of NOT_PLAIN) {
    await t.step(
      `refuses ${JSON.stringify(host.slice(0, 40))}`,
      () => assert.equal(isPlainHost(host), false),
    );
  }
});

// Deno writes the Host header before the path to make the request's URL:
// `Host: evil.example/feed?` turned GET /api/queue?nr=5 into a request for
// /feed with the query "/api/queue?nr=5".
Deno.test("the web app answers 400 to a Host header holding a path, a query or a user, and serves plain ones", async () => {
  await using fx = await createFixture();
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, fx.app);
  const get = (host: string) =>
    rawExchange(
      server.addr.port,
      `GET /api/queue?nr=5 HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    );
  for (
    const host of [
      "evil.example/feed?",
      "evil.example?x",
      "user@evil.example",
      "evil.example#x",
    ]
  ) {
    const answer = await get(host);
    assert.match(answer, /^HTTP\/1\.1 400 /, host);
    assert.ok(
      answer.includes(
        `Cannot read request URL: host ${
          JSON.stringify(host)
        } is not a plain HOST[:PORT]`,
      ),
      answer,
    );
  }
  for (const host of ["ci.example.org", "ci.example.org:8080", "[::1]:80"]) {
    assert.match(await get(host), /^HTTP\/1\.1 200 /, host);
  }
});

Deno.test("the web app answers 400 to a request target naming a user, whatever its Host header", async () => {
  await using fx = await createFixture();
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, fx.app);
  const answer = await rawExchange(
    server.addr.port,
    `GET http://user@evil.example/api/queue?nr=5 HTTP/1.1\r\nHost: ci.example.org\r\nConnection: close\r\n\r\n`,
  );
  assert.match(answer, /^HTTP\/1\.1 400 /);
  assert.ok(answer.includes(`host "user@evil.example"`), answer);
});
