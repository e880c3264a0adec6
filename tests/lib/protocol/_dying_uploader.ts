// A worker's log upload in a process of its own, for a test to kill
// mid-stream: it sends LINE COUNT times, flushed, then waits to be killed.
// Arguments: PORT DRV LINE COUNT.

import { openLogUpload } from "../../../lib/protocol/log_upload.ts";
import { silentLogger } from "../../../lib/log.ts";

const [port, drv, line, count] = Deno.args;
const upload = await openLogUpload({
  hostname: "127.0.0.1",
  port: Number(port),
  drv,
  logger: silentLogger,
  flushIntervalMs: 10,
});
await upload.write(new TextEncoder().encode(line.repeat(Number(count))));
// Never closes the upload: the test kills this process.
await new Promise((resolve) => setTimeout(resolve, 120_000));
