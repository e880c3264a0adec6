import assert from "node:assert/strict";
import { quietPort } from "../../_ports.ts";
import {
  MastodonError,
  postMastodonStatus,
} from "../../../lib/notify/mastodon.ts";
import { startFakeMastodon } from "./fake_mastodon.ts";

Deno.test("postMastodonStatus() posts a form with the bearer token", async () => {
  await using mastodon = startFakeMastodon();
  const id = await postMastodonStatus(
    { instanceUrl: `${mastodon.url}/`, token: "s3cret-token" },
    "Build hello on demo is fixed. é",
    { idempotencyKey: "lorica-notification-7" },
  );
  assert.equal(id, "101");
  assert.deepEqual(mastodon.seen, [{
    method: "POST",
    path: "/api/v1/statuses",
    authorization: "Bearer s3cret-token",
    contentType: "application/x-www-form-urlencoded",
    idempotencyKey: "lorica-notification-7",
    form: { status: "Build hello on demo is fixed. é", visibility: "unlisted" },
  }]);
});

Deno.test("postMastodonStatus() cuts statuses to 500 characters", async () => {
  await using mastodon = startFakeMastodon();
  await postMastodonStatus(
    { instanceUrl: mastodon.url, token: "t" },
    "x".repeat(600),
  );
  assert.equal([...mastodon.seen[0].form.status].length, 500);
});

Deno.test("postMastodonStatus() classifies refusals and hides the token", async () => {
  const table: [number, boolean][] = [[503, true], [429, true], [401, false], [
    422,
    false,
  ]];
  for (const [status, transient] of table) {
    await using mastodon = startFakeMastodon([status]);
    await assert.rejects(
      postMastodonStatus(
        { instanceUrl: mastodon.url, token: "s3cret-token" },
        "x",
      ),
      (error) =>
        error instanceof MastodonError && error.status === status &&
        error.transient === transient &&
        !error.message.includes("s3cret-token"),
    );
  }
});

Deno.test("postMastodonStatus() calls an unreachable instance transient", async () => {
  const port = quietPort();
  await assert.rejects(
    postMastodonStatus(
      { instanceUrl: `http://127.0.0.1:${port}`, token: "t" },
      "x",
    ),
    (error) => error instanceof MastodonError && error.transient,
  );
  await assert.rejects(
    postMastodonStatus({ instanceUrl: "ftp://x", token: "t" }, "x"),
    (error) => error instanceof MastodonError && !error.transient,
  );
});
