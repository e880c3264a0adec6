// The server half of the C11 test, in a process of its own so that the test
// can read its peak memory alone: the log receiver and the web app on an
// existing database. Usage: _c11_server.ts '{"root":DIR,"storeDir":DIR}'.
// Prints {"logPort":N,"webPort":N} once listening; stops when stdin closes.

import { startLogReceiver } from "../../lib/protocol/log_receiver.ts";
import { createWebApp } from "../../lib/web/app.ts";
import { openSqliteStore } from "../../lib/store/sqlite.ts";
import { systemClock } from "../../lib/clock.ts";
import { silentLogger } from "../../lib/log.ts";

const { root, storeDir } = JSON.parse(Deno.args[0]);
const store = openSqliteStore(`${root}/db.sqlite`);
const receiver = await startLogReceiver({
  hostname: "127.0.0.1",
  port: 0,
  cacheDir: `${root}/logs`,
  storeDir,
  logger: silentLogger,
});
const web = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  createWebApp({
    store,
    logCacheDir: `${root}/logs`,
    storeDir,
    clock: systemClock,
    logger: silentLogger,
    livePollMs: 200,
  }),
);
Deno.stdout.writeSync(
  new TextEncoder().encode(
    JSON.stringify({ logPort: receiver.port, webPort: web.addr.port }) + "\n",
  ),
);
// Until the test closes our stdin.
for await (const _ of Deno.stdin.readable);
await web.shutdown();
await receiver.close();
await store.close();
