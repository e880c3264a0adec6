// The dispatcher serving a Cuirass worker played by libzmq itself
// (python3-zmq): two DEALERs, one for requests and one for pings, with no
// identity, sending exactly what `cuirass remote-worker` sends. Every reply
// is checked byte for byte against cuirass.md §1.3: Cuirass matches them
// positionally, and any other shape kills its worker fiber.

import assert from "node:assert/strict";
import { BuildStatus } from "../../../lib/store/types.ts";
import { eventually, job, startFixture } from "./_dispatch_fixture.ts";
import {
  fromHex,
  libzmqMissing,
  LibzmqPeer,
  toHex,
} from "../zmtp/libzmq_peer.ts";

const opts = { sanitizeResources: false, sanitizeOps: false };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

Deno.test({
  ...opts,
  name:
    "the dispatcher answers a libzmq Cuirass worker byte for byte: probe, M2, M7 in Cuirass's field order, M6, and its result counts" +
    (libzmqMissing === undefined ? "" : ` (skipped: ${libzmqMissing})`),
  ignore: libzmqMissing !== undefined,
  async fn() {
    const f = await startFixture();
    const python = await LibzmqPeer.start();
    try {
      const [drv] = await f.addJobs([job("hello", 1)], 9);
      const endpoint = `tcp://127.0.0.1:${f.port}`;
      for (const name of ["w", "ping"]) {
        await python.must({
          op: "socket",
          name,
          type: "DEALER",
          connect: endpoint,
        });
        // ZMQ_PROBE_ROUTER: one empty frame, before anything is asked.
        assert.deepEqual(
          (await python.must({ op: "recv", name })).frames,
          [""],
          `the probe on ${name}`,
        );
      }
      const send = (name: string, text: string) =>
        python.must({
          op: "send",
          name,
          frames: ["", toHex(encoder.encode(text))],
        });
      const reply = async () => {
        const { frames } = await python.must({ op: "recv", name: "w" });
        assert.equal(frames!.length, 2, "an empty delimiter and a payload");
        assert.equal(frames![0], "");
        return decoder.decode(fromHex(frames![1]));
      };
      const worker = '(worker (name "q3ZfA9kL") (address "127.0.0.1") ' +
        '(machine "builder1") (systems ("x86_64-linux" "i686-linux")) ' +
        "(last-seen 0))";

      await send("w", "(worker-request-info)");
      assert.equal(
        await reply(),
        '(server-info (worker-address "127.0.0.1") (log-port 9) (publish-port 5557))',
      );
      await send("w", `(worker-ready ${worker})`);
      await send("ping", `(worker-ping ${worker})`);
      await send("w", '(worker-request-work "q3ZfA9kL")');
      assert.equal(
        await reply(),
        `(build (drv "${drv}") (priority 9) (timeout 3600) (max-silent 600) (timestamp #f) (system "x86_64-linux"))`,
      );
      await send("w", `(build-started (drv "${drv}") (worker "q3ZfA9kL"))`);
      await send(
        "w",
        `(build-succeeded (drv "${drv}") (url "http://127.0.0.1:5558") (log #f))`,
      );
      await eventually(
        async () => (await f.status(drv)) === BuildStatus.succeeded,
        "the build recorded as succeeded",
      );
      await send("w", '(worker-request-work "q3ZfA9kL")');
      assert.equal(await reply(), "(no-build)");
      const row = await f.store.getWorker("q3ZfA9kL");
      assert.deepEqual(
        [row?.address, row?.machine, row?.systems],
        ["127.0.0.1", "builder1", ["x86_64-linux", "i686-linux"]],
      );
      assert.ok(
        !f.lines.some((l) => l.startsWith("warn ") || l.startsWith("error ")),
        f.lines.filter((l) => /^(warn|error) /.test(l)).join("\n"),
      );
    } finally {
      await python.stop();
      await f.close();
    }
  },
});
