// Tests for the ZMTP greeting and the NULL-mechanism commands.

import assert from "node:assert/strict";
import { ZmtpSyntaxError } from "../../../lib/zmtp/frame.ts";
import {
  encodeCommand,
  encodeError,
  encodeGreeting,
  encodePing,
  encodePong,
  encodeReady,
  GREETING_SIZE,
  GreetingReader,
  parseCommand,
  parseErrorReason,
  parseGreeting,
  parseMetadata,
  parsePing,
} from "../../../lib/zmtp/greeting.ts";

const text = new TextEncoder();

Deno.test("encodeGreeting() writes signature, version 3.1, NULL and as-server", () => {
  const greeting = encodeGreeting();
  assert.equal(greeting.length, 64);
  assert.deepEqual([...greeting.subarray(0, 12)], [
    0xff,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    1,
    0x7f,
    3,
    1,
  ]);
  assert.deepEqual([...greeting.subarray(12, 17)], [...text.encode("NULL"), 0]);
  assert.deepEqual(parseGreeting(greeting), {
    major: 3,
    minor: 1,
    mechanism: "NULL",
    asServer: false,
  });
  assert.equal(
    parseGreeting(encodeGreeting({ asServer: true })).asServer,
    true,
  );
});

Deno.test("GreetingReader assembles a greeting fed byte by byte and returns what follows", () => {
  const peer = encodeGreeting();
  peer[11] = 0; // a ZMTP 3.0 peer
  const wire = new Uint8Array([...peer, 0x04, 0x01]);
  const reader = new GreetingReader();
  let result;
  for (let i = 0; i < GREETING_SIZE; i++) {
    assert.equal(result, undefined);
    result = reader.push(
      wire.subarray(i, i === GREETING_SIZE - 1 ? wire.length : i + 1),
    );
  }
  assert.ok(result);
  assert.equal(result.greeting.minor, 0);
  assert.deepEqual([...result.rest], [0x04, 0x01]);
});

Deno.test("GreetingReader fails as soon as the signature is wrong", () => {
  const cases: [number[], string][] = [
    [[0x47], "bad-signature"], // "GET /" from a browser
    [[0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x00], "bad-signature"],
    [[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 2], "bad-version"],
  ];
  for (const [prefix, code] of cases) {
    const reader = new GreetingReader();
    assert.throws(
      () => {
        for (const byte of prefix) reader.push(new Uint8Array([byte]));
      },
      (error) => error instanceof ZmtpSyntaxError && error.code === code,
      JSON.stringify(prefix),
    );
  }
});

Deno.test("parseGreeting() reads another mechanism name", () => {
  const greeting = encodeGreeting({ mechanism: "CURVE" });
  assert.equal(parseGreeting(greeting).mechanism, "CURVE");
  assert.throws(() => parseGreeting(greeting.subarray(0, 63)), ZmtpSyntaxError);
});

Deno.test("encodeReady() and parseMetadata() round-trip properties", () => {
  const body = encodeReady({
    "Socket-Type": "DEALER",
    "Identity": new Uint8Array([0, 1, 2]),
  });
  const command = parseCommand(body);
  assert.equal(command.name, "READY");
  const properties = parseMetadata(command.data);
  assert.deepEqual(properties.get("socket-type"), text.encode("DEALER"));
  assert.deepEqual(properties.get("identity"), new Uint8Array([0, 1, 2]));
  // Exact bytes: name, then "Socket-Type" with a 4-byte length.
  assert.deepEqual([...body.subarray(0, 7)], [5, ...text.encode("READY"), 11]);
});

Deno.test("parseMetadata() rejects properties that run past the body", () => {
  const good = parseCommand(encodeReady({ "Socket-Type": "ROUTER" })).data;
  for (const cut of [1, 5, good.length - 1]) {
    assert.throws(
      () => parseMetadata(good.subarray(0, cut)),
      ZmtpSyntaxError,
      `cut ${cut}`,
    );
  }
  assert.throws(
    () => parseMetadata(new Uint8Array([0, 0, 0, 0, 0])),
    ZmtpSyntaxError,
  );
});

Deno.test("parseCommand() rejects a name longer than the body", () => {
  for (const body of [[], [0], [5, 0x52]]) {
    assert.throws(
      () => parseCommand(new Uint8Array(body)),
      ZmtpSyntaxError,
      JSON.stringify(body),
    );
  }
});

Deno.test("ERROR, PING and PONG commands round-trip", () => {
  const error = parseCommand(encodeError("Invalid socket type"));
  assert.equal(error.name, "ERROR");
  assert.equal(parseErrorReason(error.data), "Invalid socket type");
  assert.equal(parseErrorReason(new Uint8Array([200, 0x41])), "A");

  const ping = parseCommand(encodePing(30, new Uint8Array([7, 8])));
  assert.equal(ping.name, "PING");
  assert.deepEqual(parsePing(ping.data), {
    ttl: 30,
    context: new Uint8Array([7, 8]),
  });
  assert.throws(() => parsePing(new Uint8Array([1])), ZmtpSyntaxError);

  const pong = parseCommand(encodePong(new Uint8Array([7, 8])));
  assert.deepEqual(pong, { name: "PONG", data: new Uint8Array([7, 8]) });
  assert.throws(() => encodeCommand(""), RangeError);
});
