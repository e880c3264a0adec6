// The whole server's absolute links (its feed's, its notifications'):
// without --base-url they name the address its web port listens on, never
// the host a request names.

import assert from "node:assert/strict";
import type {
  RunningServer,
  ServerConfig,
} from "../../../lib/server/server.ts";
import { startTestServer } from "./_test_server.ts";
import type { Store } from "../../../lib/store/types.ts";
import { job } from "./_dispatch_fixture.ts";
import { rawExchange } from "../web/_fixture.ts";

/** Runs `body` with a server of `config`, stopped and removed after. */
async function withServer(
  config: Partial<ServerConfig>,
  body: (server: RunningServer, store: Store) => Promise<void>,
) {
  const t = await startTestServer({ config });
  try {
    await body(t.server, t.store);
  } finally {
    await t.close();
  }
}

Deno.test({
  name:
    "the server's feed, asked with a Host header of the client's choosing, links to the address its web port listens on",
  fn: () =>
    withServer({}, async (server, store) => {
      // The same job succeeds, then fails: a new failure, in the feed.
      let failed = 0;
      for (const [i, status] of [[1, 0], [2, 1]] as const) {
        const evaluation = await store.addEvaluation("spec", [], i);
        await store.registerBuilds(evaluation, [job("hello", i)], {
          priority: 5,
          now: i,
        });
        const build = (await store.popBuild("w", ["x86_64-linux"], i))!;
        await store.markStarted(build.derivation, "w", "", i);
        await store.completeBuild(build.derivation, status, {
          worker: "w",
          now: i,
        });
        failed = build.id;
      }

      const origin = `http://127.0.0.1:${server.webPort}`;
      const answer = await rawExchange(
        server.webPort,
        "GET /events/rss HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
      );
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.ok(
        answer.includes(`<link>${origin}/build/${failed}/details</link>`),
        answer,
      );
      assert.ok(!answer.includes("evil.example"), answer);
      // The base the notifications' links are made from too.
      assert.equal(server.webUrl, origin);
    }),
});

Deno.test({
  name: "with --base-url, the server's absolute links start with it",
  fn: () =>
    withServer({ publicUrl: "https://ci.example.test/lorica/" }, (server) => {
      assert.equal(server.webUrl, "https://ci.example.test/lorica");
      return Promise.resolve();
    }),
});
