import assert from "node:assert/strict";
import { HandedBackBuilds } from "../../../lib/worker/handed_back_builds.ts";

const DRV = "/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello-2.12.drv";

Deno.test("HandedBackBuilds remembers what was handed back, and forgets the oldest past its bound", () => {
  const handedBack = new HandedBackBuilds({ maxSize: 2 });
  const drvs = [1, 2, 3].map((i) => DRV.replace("hello", `hello${i}`));
  assert.equal(handedBack.has(drvs[0]), false);
  for (const drv of drvs) handedBack.add(drv);
  assert.deepEqual(drvs.map((drv) => handedBack.has(drv)), [
    false,
    true,
    true,
  ]);
  // Handed back again, a derivation is not counted twice.
  handedBack.add(drvs[2]);
  assert.equal(handedBack.has(drvs[1]), true);
});
