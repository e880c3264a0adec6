import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { LogTails } from "../../../lib/web/log_tails.ts";
import type { LogTail } from "../../../lib/web/build_log.ts";
import { HttpError } from "../../../lib/web/http_error.ts";

function tailOf(text: string, incomplete = false): LogTail {
  return {
    text,
    totalBytes: text.length,
    truncated: false,
    scanLimitReached: false,
    incomplete,
  };
}

/** Log files `0.log.gz` ... in a new directory. */
async function logFiles(count: number) {
  const dir = await Deno.makeTempDir({ prefix: "lorica-tails-" });
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    paths.push(`${dir}/${i}.log.gz`);
    await Deno.writeFile(paths[i], gzipSync(`log ${i}\n`));
  }
  return {
    paths,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("LogTails reads at most maxReads logs at once, lets maxWaiting wait, and answers 503 beyond", async () => {
  await using files = await logFiles(6);
  const started: string[] = [];
  const finish = new Map<string, () => void>();
  const tails = new LogTails({
    maxReads: 2,
    maxWaiting: 2,
    read(path) {
      started.push(path);
      const done = Promise.withResolvers<LogTail>();
      finish.set(path, () => done.resolve(tailOf(path)));
      return done.promise;
    },
  });
  const [a, b, c, d, e] = files.paths;
  // Asked one after the other: each has its place before the next asks.
  const asked: Promise<LogTail | null>[] = [];
  for (const path of [a, b, c, d]) {
    asked.push(tails.tail(path));
    const before = asked.length;
    for (let i = 0; i < 100; i++) {
      const { reading, waiting } = tails.busy;
      if (reading + waiting === before) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  assert.deepEqual(started, [a, b]);
  assert.deepEqual(tails.busy, { reading: 2, waiting: 2 });
  await assert.rejects(tails.tail(e), (error) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 503);
    assert.match(error.message, /2 logs being read and 2 requests waiting/);
    return true;
  });
  // Each read that ends lets the first waiting one in, in order.
  finish.get(b)!();
  assert.equal((await asked[1])?.text, b);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(started, [a, b, c]);
  for (const path of [a, c]) finish.get(path)!();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(started, [a, b, c, d]);
  finish.get(d)!();
  assert.deepEqual(
    (await Promise.all(asked)).map((tail) => tail?.text),
    [a, b, c, d],
  );
  assert.deepEqual(tails.busy, { reading: 0, waiting: 0 });
});

Deno.test("LogTails keeps the tail of a log until the file changes, and not a log still being written", async () => {
  await using files = await logFiles(3);
  const reads: string[] = [];
  const tails = new LogTails({
    cacheEntries: 1,
    read(path) {
      reads.push(path);
      return Promise.resolve(tailOf(path, path.endsWith("2.log.gz")));
    },
  });
  const [first, second, live] = files.paths;
  await tails.tail(first);
  await tails.tail(first);
  assert.deepEqual(reads, [first]);
  await Deno.writeFile(first, gzipSync("log 0, rebuilt with a longer log\n"));
  await tails.tail(first);
  assert.deepEqual(reads, [first, first]);
  // One entry: the second log's tail takes the first one's place.
  await tails.tail(second);
  await tails.tail(first);
  assert.deepEqual(reads, [first, first, second, first]);
  await tails.tail(live);
  await tails.tail(live);
  assert.deepEqual(reads.slice(4), [live, live]);
  assert.equal(await tails.tail(`${first}.absent`), null);
});

Deno.test("LogTails reads real gzip logs by default", async () => {
  await using files = await logFiles(1);
  const tail = await new LogTails().tail(files.paths[0]);
  assert.equal(tail?.text, "log 0\n");
  assert.equal(tail?.incomplete, false);
});
