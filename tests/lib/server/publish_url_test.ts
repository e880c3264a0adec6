import assert from "node:assert/strict";
import { allowedPublishUrl } from "../../../lib/server/publish_url.ts";

const never = () => {
  throw new Error("the recorded address was not needed");
};

Deno.test("allowedPublishUrl() takes http(s) on the sender's own address without a lookup", async () => {
  for (
    const [url, peer] of [
      ["http://10.0.0.7:5558/", "10.0.0.7"],
      ["https://10.0.0.7/", "10.0.0.7"],
      ["http://[::1]:5558/", "::1"],
    ]
  ) {
    assert.equal(await allowedPublishUrl(url, peer, never), url, url);
  }
});

Deno.test("allowedPublishUrl() takes the worker's recorded address, and nothing else", async () => {
  const recorded = () => Promise.resolve("192.0.2.5");
  assert.equal(
    await allowedPublishUrl("http://192.0.2.5:5558/", "10.0.0.7", recorded),
    "http://192.0.2.5:5558/",
  );
  for (
    const url of [
      "http://169.254.169.254/latest/meta-data/",
      "http://localhost:5558/",
      "file:///etc/shadow",
      "ftp://10.0.0.7/",
      "not a url",
      "",
    ]
  ) {
    assert.equal(await allowedPublishUrl(url, "10.0.0.7", recorded), null);
  }
  assert.equal(
    await allowedPublishUrl(
      "http://192.0.2.5/",
      "10.0.0.7",
      () => Promise.resolve(undefined),
    ),
    null,
    "an unregistered worker",
  );
});
