// The real log receiver in a process of its own, for a test to kill
// mid-upload and start again: it prints its port on a line of stdout once
// listening, its log lines on stderr, then serves until killed.
// Arguments: CACHE_DIR STORE_DIR.

import { startLogReceiver } from "../../../lib/protocol/log_receiver.ts";
import { createLogger } from "../../../lib/log.ts";

const [cacheDir, storeDir] = Deno.args;
const encoder = new TextEncoder();
const receiver = await startLogReceiver({
  hostname: "127.0.0.1",
  port: 0,
  cacheDir,
  storeDir,
  logger: createLogger({ timestamps: false }),
});
await Deno.stdout.write(encoder.encode(`${receiver.port}\n`));
// Serves until the test kills this process.
await new Promise((resolve) => setTimeout(resolve, 120_000));
