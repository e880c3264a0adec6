import assert from "node:assert/strict";
import {
  checkNames,
  DiscoveryError,
  hostLabel,
  instanceLabel,
  parseTxt,
  serverTxt,
  txtPort,
  unusableAddressReason,
} from "../../../lib/discovery/service.ts";

Deno.test("serverTxt() writes Cuirass's keys and leaves publish-port out when not publishing", () => {
  assert.deepEqual(serverTxt(5556, 5557), [
    "log-port=5556",
    "publish-port=5557",
  ]);
  assert.deepEqual(serverTxt(5556, null), ["log-port=5556"]);
});

Deno.test("parseTxt() and txtPort() read keys case-insensitively, first one wins, bad ports are null", () => {
  const bytes = new TextEncoder().encode("Log-Port=6000");
  const txt = parseTxt([bytes, "log-port=7000", "publish-port=99999", "flag"]);
  assert.deepEqual(txt, {
    "log-port": "6000",
    "publish-port": "99999",
    flag: "",
  });
  assert.equal(txtPort(txt, "log-port"), 6000);
  assert.equal(txtPort(txt, "publish-port"), null);
  assert.equal(txtPort(txt, "missing"), null);
});

Deno.test("instanceLabel() takes the label off a full name of our service only", () => {
  const cases: [string, string | null][] = [
    [
      "Cuirass remote server._remote-server._tcp.local",
      "Cuirass remote server",
    ],
    ["x._REMOTE-SERVER._tcp.local", "x"],
    ["x._http._tcp.local", null],
    ["._remote-server._tcp.local", null],
  ];
  for (const [name, label] of cases) assert.equal(instanceLabel(name), label);
});

Deno.test("checkNames() rejects empty or long instance names and bad host labels", () => {
  checkNames("Lorica remote server on build1", "lorica-build1");
  for (
    const [instance, host, field] of [
      ["", "h", "instanceName"],
      ["x".repeat(64), "h", "instanceName"],
      ["ok", "bad_host", "hostName"],
      ["ok", "-h", "hostName"],
    ]
  ) {
    assert.throws(
      () => checkNames(instance, host),
      (e: unknown) => e instanceof DiscoveryError && e.field === field,
    );
  }
  assert.equal(hostLabel("Build_1.lan"), "Build-1");
  assert.equal(hostLabel("___"), "lorica");
});

Deno.test("unusableAddressReason() rejects addresses that mean this machine, a group or everyone", () => {
  for (const address of ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"]) {
    assert.match(unusableAddressReason(address)!, /unspecified/, address);
  }
  for (const address of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"]) {
    assert.match(unusableAddressReason(address)!, /loopback/, address);
  }
  for (const address of ["224.0.0.251", "239.1.2.3", "ff02::fb"]) {
    assert.match(unusableAddressReason(address)!, /multicast/, address);
  }
  assert.match(unusableAddressReason("255.255.255.255")!, /broadcast/);
  for (const address of ["fe80::1%eth0", "fe80::1", "febf::1"]) {
    assert.match(unusableAddressReason(address)!, /link-local/, address);
  }
  for (
    const address of [
      "198.51.100.1",
      "10.0.0.1",
      "169.254.3.4",
      "2001:db8::1",
      "fec0::1",
    ]
  ) {
    assert.equal(unusableAddressReason(address), null, address);
  }
});
