// The whole server's absolute links (its feed's, its notifications'):
// without --base-url they name the address its web port listens on, never
// the host a request names.

import assert from "node:assert/strict";
import {
  type RunningServer,
  type ServerConfig,
  startServer,
} from "../../../lib/server/server.ts";
import type { Store } from "../../../lib/store/types.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { silentLogger } from "../../../lib/log.ts";
import { fakeSpawner, job, STORE_DIR } from "./_dispatch_fixture.ts";
import { rawExchange } from "../web/_fixture.ts";

/** A remote-mode server on loopback, with `extra` configuration. */
async function withServer(
  extra: Partial<ServerConfig>,
  body: (server: RunningServer, store: Store) => Promise<void>,
) {
  const root = await Deno.makeTempDir({ prefix: "lorica-feed-" });
  const store = openSqliteStore(`${root}/db.sqlite`);
  const server = await startServer({
    mode: "remote",
    pollChannels: false,
    listen: "127.0.0.1",
    backendPort: 0,
    logPort: 0,
    publishPort: null,
    webListen: "127.0.0.1",
    webPort: 0,
    cacheDir: `${root}/logs`,
    stateDir: `${root}/state`,
    storeDir: STORE_DIR,
    workerTimeoutSeconds: 120,
    publishArgs: [],
    ...extra,
  }, {
    store,
    guix: new Guix({ logger: silentLogger, spawn: fakeSpawner() }),
    logger: silentLogger,
    inStore: () => Promise.resolve(true),
  });
  try {
    await body(server, store);
  } finally {
    await server.stop();
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test({
  name:
    "the server's feed, asked with a Host header of the client's choosing, links to the address its web port listens on",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withServer({}, async (server, store) => {
      await store.upsertSpecification({
        name: "spec",
        build: { type: "packages", params: [] },
        channels: [],
        buildOutputs: [],
        notifications: [],
        period: 0,
        priority: 5,
        systems: ["x86_64-linux"],
        isActive: true,
      });
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
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withServer({ publicUrl: "https://ci.example.test/lorica/" }, (server) => {
      assert.equal(server.webUrl, "https://ci.example.test/lorica");
      return Promise.resolve();
    }),
});
