import assert from "node:assert/strict";
import zlib from "node:zlib";
import { createFixture, type Fixture, NOW, writeLog } from "./_fixture.ts";
import { createLiveLogHub } from "../../../lib/web/live_logs.ts";
import { systemClock } from "../../../lib/clock.ts";
import { logFilePath } from "../../../lib/web/build_log.ts";
import type { Build } from "../../../lib/store/types.ts";

/**
 * Reads server-sent events from a response body; with `comments`, a
 * comment line comes as an event named ":" (a keepalive proves that the
 * stream polled quietly many times).
 */
function eventReader(response: Response, { comments = false } = {}) {
  const reader = response.body!.pipeThrough(new TextDecoderStream())
    .getReader();
  let buffer = "";
  return {
    async next(): Promise<{ event: string; data: unknown } | null> {
      while (true) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (block.startsWith(":")) {
            if (comments) return { event: ":", data: block };
            continue;
          }
          const event = /^event: (.*)$/m.exec(block)![1];
          const data = JSON.parse(/^data: (.*)$/m.exec(block)![1]);
          return { event, data };
        }
        const { done, value } = await reader.read();
        if (done) return null;
        buffer += value;
      }
    },
    /** Skips events until one named `name`. */
    async until(name: string) {
      while (true) {
        const item = await this.next();
        if (item === null) throw new Error(`stream ended before ${name}`);
        if (item.event === name) return item;
      }
    },
    cancel: () => reader.cancel(),
  };
}

const realSleepClock = {
  ...systemClock,
  now: () => NOW * 1000,
};

Deno.test("GET /build/ID/log/events streams a running build's log as it grows, then ends", async () => {
  const hub = createLiveLogHub();
  await using fx = await createFixture({
    app: { clock: realSleepClock, liveLogs: hub, livePollMs: 50 },
  });
  const build = fx.builds.started;
  const path = logFilePath(fx.logDir, build.derivation)!;
  const gzip = zlib.createGzip();
  const parts: Uint8Array[] = [];
  gzip.on("data", (part: Uint8Array) => parts.push(part));
  async function append(text: string) {
    gzip.write(text);
    await new Promise<void>((r) =>
      gzip.flush(zlib.constants.Z_SYNC_FLUSH, () => r())
    );
    const bytes = parts.splice(0);
    const file = await Deno.open(path, { append: true, create: true });
    for (const part of bytes) await file.write(part);
    file.close();
    for (const part of bytes) hub.chunk(build.derivation, part);
  }
  await append("starting phase build\n");

  const response = await fx.fetch(`/build/${build.id}/log/events`);
  assert.equal(response.status, 200);
  assert.equal(
    response.headers.get("content-type"),
    "text/event-stream; charset=utf-8",
  );
  const events = eventReader(response);
  assert.deepEqual(await events.next(), {
    event: "start",
    data: { build: build.id },
  });
  assert.deepEqual(await events.next(), {
    event: "status",
    data: { status: -1 },
  });
  assert.deepEqual(await events.until("log"), {
    event: "log",
    data: "starting phase build\n",
  });
  await append("compiling <b>x</b> \x1b[31mred\x1b[0m\n");
  assert.deepEqual(await events.until("log"), {
    event: "log",
    data: "compiling <b>x</b> red\n",
  });
  assert.equal(hub.watched, 1);

  await append("done\n");
  await new Promise<void>((r) => gzip.end(r));
  await fx.store.completeBuild(build.derivation, 0, { worker: "w1", now: NOW });
  hub.complete(build.derivation, 0);
  const rest = [];
  for (
    let item = await events.next();
    item !== null;
    item = await events.next()
  ) {
    rest.push(item);
  }
  assert.deepEqual(
    rest.filter((e) => e.event === "log").map((e) => e.data).join(""),
    "done\n",
  );
  assert.deepEqual(rest.at(-1), { event: "end", data: { status: 0 } });
  assert.ok(
    rest.some((e) =>
      e.event === "status" && (e.data as { status: number }).status === 0
    ),
  );
  assert.equal(hub.watched, 0);
});

Deno.test("GET /build/ID/log/events without a hub tails the file, and ends at once for a finished build", async () => {
  await using fx = await createFixture({
    app: { clock: realSleepClock, livePollMs: 20 },
  });
  const response = await fx.fetch(`/build/${fx.builds.failed.id}/log/events`);
  const events = eventReader(response);
  const all = [];
  for (
    let item = await events.next();
    item !== null;
    item = await events.next()
  ) {
    all.push(item.event);
  }
  // No log file: only the status and the end.
  assert.deepEqual(all, ["start", "status", "end"]);

  await writeLog(
    fx.logDir,
    fx.builds.failed.derivation,
    new TextEncoder().encode("boom\n"),
  );
  const again = eventReader(
    await fx.fetch(`/build/${fx.builds.failed.id}/log/events`),
  );
  assert.deepEqual(await again.until("log"), { event: "log", data: "boom\n" });
  assert.deepEqual(await again.until("end"), {
    event: "end",
    data: { status: 1 },
  });
  assert.equal(await again.next(), null);
  assert.equal((await fx.fetch("/build/4242/log/events")).status, 404);
});

Deno.test("GET /build/ID/log/events sends every line before garbage after the log's end, then says the log is damaged", async () => {
  await using fx = await createFixture({
    app: { clock: realSleepClock, livePollMs: 20 },
  });
  const build = fx.builds.failed;
  // Lines that gzip shrinks only so much: several 4 KiB input chunks.
  const text = Array.from(
    { length: 3000 },
    (_, i) => `line ${i} ${(i * 2654435761 % 2 ** 32).toString(36)}\n`,
  ).join("");
  const compressed = await writeLog(
    fx.logDir,
    build.derivation,
    new TextEncoder().encode(text),
  );
  assert.ok(compressed.length > 3 * 4096, `${compressed.length}`);
  // The garbage lands in the middle of a 4 KiB chunk of the follower's.
  const inLastChunk = compressed.length % 4096;
  assert.ok(inLastChunk > 100 && inLastChunk < 4000, `${inLastChunk}`);
  await Deno.writeFile(
    logFilePath(fx.logDir, build.derivation)!,
    new TextEncoder().encode("garbage"),
    { append: true },
  );

  const events = eventReader(await fx.fetch(`/build/${build.id}/log/events`));
  const all = [];
  for (
    let item = await events.next();
    item !== null;
    item = await events.next()
  ) {
    all.push(item);
  }
  assert.equal(
    all.filter((e) => e.event === "log").map((e) => e.data).join(""),
    text,
  );
  assert.deepEqual(
    all.map((e) => e.event).filter((name) => name !== "log"),
    ["start", "status", "damaged", "end"],
  );
});

/**
 * Puts a new gzip log in place of the build's as an upload does: a new
 * file renamed over the old one.
 */
async function publishLog(fx: Fixture, derivation: string, text: string) {
  const path = logFilePath(fx.logDir, derivation)!;
  const part = `${path}.0123456789abcdef.part`;
  await Deno.writeFile(part, zlib.gzipSync(text));
  await Deno.rename(part, path);
}

/** Hands the build to worker "w2" (other builds first if they come first) and starts it. */
async function startAgain(fx: Fixture, build: Build) {
  for (let i = 0; i <= fx.scheduled.length; i++) {
    const popped = await fx.store.popBuild("w2", [build.system], NOW + 1);
    if (popped?.id === build.id) break;
  }
  assert.ok(await fx.store.markStarted(build.derivation, "w2", "", NOW + 2));
}

/** The events up to the first named `name`, which is the last one. */
async function eventsUntil(
  events: ReturnType<typeof eventReader>,
  name: string,
) {
  const seen = [];
  while (true) {
    const item = await events.next();
    if (item === null) throw new Error(`stream ended before ${name}`);
    seen.push(item);
    if (item.event === name) return seen;
  }
}

/**
 * Starts `build` again and checks that its stream says so and sends
 * nothing of the old file, many polls on, until the new attempt's log
 * replaces it, which it then streams.
 */
async function secondAttemptStreams(
  fx: Fixture,
  build: Build,
  events: ReturnType<typeof eventReader>,
) {
  await startAgain(fx, build);
  const started = [
    ...await eventsUntil(events, "status"),
    ...await eventsUntil(events, ":"),
  ];
  assert.deepEqual(started.filter((e) => e.event !== ":"), [
    { event: "status", data: { status: -1 } },
  ]);
  await publishLog(fx, build.derivation, "second attempt\n");
  assert.deepEqual(await events.until("log"), {
    event: "log",
    data: "second attempt\n",
  });
}

Deno.test("GET /build/ID/log/events of a restarted build waiting to start sends none of its previous log, then the new attempt's", async () => {
  await using fx = await createFixture({
    app: { clock: realSleepClock, livePollMs: 10 },
  });
  const build = fx.builds.failed;
  await publishLog(fx, build.derivation, "first attempt\n");
  assert.ok((await fx.store.restartBuild(build.id, NOW)).changed);

  const events = eventReader(
    await fx.fetch(`/build/${build.id}/log/events`),
    { comments: true },
  );
  // Many quiet polls go by, and no text of the first attempt.
  const waiting = await eventsUntil(events, ":");
  assert.deepEqual(waiting, [
    { event: "start", data: { build: build.id } },
    { event: "status", data: { status: -2, waiting: true } },
    { event: ":", data: ": keepalive" },
  ]);
  // Started, the new attempt's upload not yet in place: still the old file.
  await secondAttemptStreams(fx, build, events);
  await fx.store.completeBuild(build.derivation, 0, { worker: "w2", now: NOW });
  assert.deepEqual(await events.until("end"), {
    event: "end",
    data: { status: 0 },
  });
});

Deno.test("GET /build/ID/log/events of a build restarted while followed clears its text and waits for the new attempt", async () => {
  await using fx = await createFixture({
    app: { clock: realSleepClock, livePollMs: 10 },
  });
  const build = fx.builds.started;
  await publishLog(fx, build.derivation, "first attempt\n");
  const events = eventReader(
    await fx.fetch(`/build/${build.id}/log/events`),
    { comments: true },
  );
  assert.deepEqual(await events.until("log"), {
    event: "log",
    data: "first attempt\n",
  });
  assert.ok((await fx.store.restartBuild(build.id, NOW)).changed);
  const waiting = await eventsUntil(events, ":");
  assert.deepEqual(waiting.filter((e) => e.event !== ":"), [
    { event: "reset", data: {} },
    { event: "status", data: { status: -2, waiting: true } },
  ]);
  await secondAttemptStreams(fx, build, events);
  await events.cancel();
});

// The op sanitizer fails this test if a stream closed by its client polls
// once more (a timer left running, the log file still open).
Deno.test("live log streams are limited; closing one frees its place", async () => {
  await using fx = await createFixture({
    app: { clock: realSleepClock, livePollMs: 20, maxLiveStreams: 1 },
  });
  const first = await fx.fetch(`/build/${fx.builds.started.id}/log/events`);
  assert.equal(first.status, 200);
  const refused = await fx.fetch(`/build/${fx.builds.started.id}/log/events`);
  assert.equal(refused.status, 503);
  await refused.body?.cancel();
  const reader = eventReader(first);
  await reader.next();
  await reader.cancel();
  const second = await fx.fetch(`/build/${fx.builds.started.id}/log/events`);
  assert.equal(second.status, 200);
  await second.body?.cancel();
  const metrics = await (await fx.fetch("/metrics")).text();
  assert.ok(metrics.includes("lorica_live_log_streams 0"));
});
