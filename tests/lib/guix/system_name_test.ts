import assert from "node:assert/strict";
import { hostSystem, isSystemName } from "../../../lib/guix/system_name.ts";

Deno.test("hostSystem() names the machine as Guix does, for either architecture Lorica ships for", () => {
  assert.equal(hostSystem({ arch: "x86_64", os: "linux" }), "x86_64-linux");
  assert.equal(hostSystem({ arch: "aarch64", os: "linux" }), "aarch64-linux");
  assert.ok(isSystemName(hostSystem()), hostSystem());
});

Deno.test("lorica-worker --help gives this machine's system as the default of --systems, as Cuirass does", async () => {
  const worker = new URL("../../../worker.ts", import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", worker, "--help"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const help = new TextDecoder().decode(output.stdout);
  assert.match(
    help,
    new RegExp(`default this machine's,\\s+${hostSystem()}, as with Cuirass`),
  );
});
