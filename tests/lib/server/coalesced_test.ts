import assert from "node:assert/strict";
import { Coalesced } from "../../../lib/server/coalesced.ts";

/** A task whose runs end when the test says, counted. */
function gatedTask() {
  const ends: PromiseWithResolvers<void>[] = [];
  return {
    ends,
    task: () => {
      const end = Promise.withResolvers<void>();
      ends.push(end);
      return end.promise;
    },
  };
}

Deno.test("Coalesced: askings during a run make one run after it, which each of them waits for", async () => {
  const { ends, task } = gatedTask();
  const looks = new Coalesced(task);
  const first = looks.run();
  const later = [looks.run(), looks.run(), looks.run()];
  assert.equal(ends.length, 1);
  let laterDone = false;
  Promise.all(later).then(() => (laterDone = true));
  ends[0].resolve();
  await first;
  await Promise.resolve();
  assert.equal(ends.length, 2, "the run after begins once the first ends");
  assert.equal(laterDone, false, "the askings wait for the run after them");
  ends[1].resolve();
  await Promise.all(later);
  assert.equal(ends.length, 2);
  // Idle again: the next asking runs at once.
  const next = looks.run();
  assert.equal(ends.length, 3);
  ends[2].resolve();
  await next;
});

Deno.test("Coalesced: a run that fails rejects its askers, and the run after it still runs", async () => {
  const { ends, task } = gatedTask();
  const looks = new Coalesced(task);
  const first = looks.run();
  const second = looks.run();
  ends[0].reject(new Error("database down"));
  await assert.rejects(first, /database down/);
  await Promise.resolve();
  assert.equal(ends.length, 2);
  ends[1].resolve();
  await second;
});
