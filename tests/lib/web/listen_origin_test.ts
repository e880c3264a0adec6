import assert from "node:assert/strict";
import { listenOrigin } from "../../../lib/web/listen_origin.ts";

Deno.test("listenOrigin() names the address listened on, IPv6 in brackets, and the machine for a wildcard", async (t) => {
  const rows: [string, string][] = [
    ["127.0.0.1", "http://127.0.0.1:8080"],
    ["10.0.0.5", "http://10.0.0.5:8080"],
    ["localhost", "http://localhost:8080"],
    ["::1", "http://[::1]:8080"],
    ["fe80::1", "http://[fe80::1]:8080"],
    ["0.0.0.0", "http://farm-1:8080"],
    ["::", "http://farm-1:8080"],
    ["::0", "http://farm-1:8080"],
    ["0:0:0:0:0:0:0:0", "http://farm-1:8080"],
  ];
  for (const [address, origin] of rows) {
    await t.step(address, () => {
      assert.equal(listenOrigin(address, 8080, "farm-1"), origin);
      assert.equal(new URL(origin).origin, origin);
    });
  }
});
