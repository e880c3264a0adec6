// Who an evaluation's owner is, across PID namespaces: containers sharing a
// host name must not read each other's pids in their own /proc.

import assert from "node:assert/strict";
import {
  STALE_AFTER_MS,
  stillRunning,
  thisHost,
  thisProcess,
} from "../../../lib/server/evaluation_owner.ts";
import type { EvaluationOwner } from "../../../lib/store/types.ts";

/** thisProcess() as seen from a process of a PID namespace of its own. */
async function ownerInNewPidNamespace(): Promise<EvaluationOwner> {
  const script = `import { thisProcess } from ${
    JSON.stringify(
      new URL("../../../lib/server/evaluation_owner.ts", import.meta.url).href,
    )
  };
console.log(JSON.stringify(await thisProcess()));`;
  const output = await new Deno.Command("unshare", {
    args: [
      "--pid",
      "--fork",
      "--mount-proc",
      Deno.execPath(),
      "eval",
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const error = new TextDecoder().decode(output.stderr);
  assert.ok(output.success, `unshare failed: ${error}`);
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

const canUnshare = Deno.uid() === 0 &&
  (() => {
    try {
      return new Deno.Command("unshare", { args: ["--version"] }).outputSync()
        .success;
    } catch {
      return false;
    }
  })();

Deno.test({
  name:
    "an owner of another PID namespace with this host name is judged by its heartbeat, not by this /proc" +
    (canUnshare ? "" : " (skipped: needs root and unshare(1))"),
  ignore: !canUnshare,
  async fn() {
    const other = await ownerInNewPidNamespace();
    const self = await thisProcess();
    // The same name, another namespace: its pid (1 or 2 there) names some
    // unrelated process here, or none.
    assert.equal(other.host.split(" ")[0], self.host.split(" ")[0]);
    const now = 1_000_000;
    const fresh = {
      id: 7,
      specification: "s",
      heartbeat: now - 10,
      owner: other,
    };
    assert.equal(await stillRunning(fresh, { self, now }), true);
    const stale = {
      id: 7,
      specification: "s",
      heartbeat: now - STALE_AFTER_MS / 1000 - 1,
      owner: other,
    };
    assert.equal(await stillRunning(stale, { self, now }), false);
    assert.notEqual(other.host, self.host);
  },
});

Deno.test("an owner of this host and namespace whose process is gone is not running, whatever its heartbeat", async () => {
  const self = await thisProcess();
  const child = new Deno.Command("true").spawn();
  await child.status;
  const gone = { host: thisHost(), pid: child.pid, started: "1" };
  const now = 1_000_000;
  assert.equal(
    await stillRunning({
      id: 8,
      specification: "s",
      heartbeat: now,
      owner: gone,
    }, { self, now }),
    false,
  );
});
