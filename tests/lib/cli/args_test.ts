import assert from "node:assert/strict";
import {
  parseHostPort,
  parsePort,
  parsePositive,
  UsageError,
} from "../../../lib/cli/args.ts";

Deno.test("parseHostPort() reads host names, IPv4 and bracketed IPv6", () => {
  assert.deepEqual(parseHostPort("--server", "10.0.0.1:5555"), {
    hostname: "10.0.0.1",
    port: 5555,
  });
  assert.deepEqual(parseHostPort("--server", "build-server:6000"), {
    hostname: "build-server",
    port: 6000,
  });
  assert.deepEqual(parseHostPort("--server", "[::1]:5555"), {
    hostname: "::1",
    port: 5555,
  });
  assert.deepEqual(parseHostPort("--server", "[fe80::1%eth0]:5555"), {
    hostname: "fe80::1%eth0",
    port: 5555,
  });
});

Deno.test("parseHostPort() rejects a missing port or a bare IPv6 address", () => {
  for (const bad of ["10.0.0.1", "::1:5555", "host:", ":5555", "host:99999"]) {
    assert.throws(
      () => parseHostPort("--server", bad),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message.includes(JSON.stringify(bad)),
      bad,
    );
  }
});

Deno.test("parsePort() and parsePositive() name the option and the value", () => {
  assert.equal(parsePort("--log-port", "0"), 0);
  assert.throws(() => parsePort("--log-port", "80a"), /--log-port "80a"/);
  assert.equal(parsePositive("--workers", "3"), 3);
  assert.throws(() => parsePositive("--workers", "0"), /--workers "0"/);
});
