import assert from "node:assert/strict";
import { OutputsBeingFetched } from "../../../lib/worker/outputs_being_fetched.ts";

Deno.test("abandoned fetches are awaited no more, nor those added later", () => {
  const fetching = new OutputsBeingFetched();
  fetching.add("/gnu/store/a.drv");
  fetching.add("/gnu/store/b.drv");
  let told = 0;
  fetching.abandoned.addEventListener("abort", () => told++);

  assert.deepEqual(fetching.abandon(), [
    "/gnu/store/a.drv",
    "/gnu/store/b.drv",
  ]);
  assert.equal(told, 1);
  assert.equal(fetching.size, 0);
  // An ack "fetching" that comes after the publish server died.
  assert.equal(fetching.add("/gnu/store/c.drv"), undefined);
  assert.deepEqual(fetching.drvs(), []);
  assert.deepEqual(fetching.abandon(), []);
});

Deno.test("past its bound the oldest fetch is dropped for the newest", () => {
  const fetching = new OutputsBeingFetched({ maxKept: 2 });
  fetching.add("/gnu/store/a.drv");
  fetching.add("/gnu/store/b.drv");
  assert.equal(fetching.add("/gnu/store/c.drv"), "/gnu/store/a.drv");
  assert.deepEqual(fetching.drvs(), ["/gnu/store/b.drv", "/gnu/store/c.drv"]);
  assert.equal(fetching.ended("/gnu/store/b.drv"), true);
  assert.equal(fetching.ended("/gnu/store/b.drv"), false);
});
