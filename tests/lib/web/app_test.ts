import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import { createWebApp } from "../../../lib/web/app.ts";
import { createLogger } from "../../../lib/log.ts";
import {
  C10_LOG,
  createFixture,
  drvPath,
  job,
  NOW,
  rawExchange,
  STORE_DIR,
  T0,
  writeLog,
  XSS,
} from "./_fixture.ts";
import type { Store } from "../../../lib/store/types.ts";

const BUILD_KEYS = [
  "id",
  "evaluation",
  "jobset",
  "job",
  "timestamp",
  "starttime",
  "stoptime",
  "derivation",
  "buildoutputs",
  "system",
  "nixname",
  "buildstatus",
  "weather",
  "busy",
  "priority",
  "finished",
  "buildproducts",
];

type Json = Record<string, unknown>;

async function json(response: Response, status = 200): Promise<unknown> {
  assert.equal(response.status, status);
  assert.equal(response.headers.get("content-type"), "application/json");
  return await response.json();
}

function assertBuildShape(value: unknown): asserts value is Json {
  const build = value as Json;
  assert.deepEqual(Object.keys(build), BUILD_KEYS);
  for (
    const key of [
      "id",
      "evaluation",
      "timestamp",
      "starttime",
      "stoptime",
      "buildstatus",
      "weather",
      "busy",
      "priority",
      "finished",
    ]
  ) {
    assert.ok(Number.isSafeInteger(build[key]), `${key} is an integer`);
  }
  for (const key of ["jobset", "job", "derivation", "system", "nixname"]) {
    assert.equal(typeof build[key], "string", `${key} is a string`);
  }
  assert.deepEqual(build.buildproducts, []);
  assert.equal(build.busy, build.buildstatus === -1 ? 1 : 0);
  assert.equal(build.finished, (build.buildstatus as number) >= 0 ? 1 : 0);
  // Real epoch seconds, not milliseconds.
  assert.ok(
    (build.timestamp as number) > 1e9 && (build.timestamp as number) < 1e10,
  );
}

Deno.test("GET /api/latestbuilds returns finished builds in the Cuirass shape (C19)", async () => {
  await using fx = await createFixture();
  const list = await json(await fx.fetch("/api/latestbuilds?nr=100")) as Json[];
  assert.deepEqual(
    list.map((build) => build.buildstatus).sort(),
    [0, 1, 1, 2, 3, 4],
  );
  for (const build of list) assertBuildShape(build);
  const succeeded = list.find((build) => build.id === fx.builds.succeeded.id)!;
  assert.deepEqual(succeeded, {
    id: fx.builds.succeeded.id,
    evaluation: 1,
    jobset: "hello",
    job: fx.builds.succeeded.jobName,
    timestamp: fx.builds.succeeded.stoptime,
    starttime: fx.builds.succeeded.starttime,
    stoptime: fx.builds.succeeded.stoptime,
    derivation: fx.builds.succeeded.derivation,
    buildoutputs: {
      out: { path: fx.builds.succeeded.outputs[0].path },
      doc: { path: fx.builds.succeeded.outputs[1].path },
    },
    system: "x86_64-linux",
    nixname: fx.builds.succeeded.nixName,
    buildstatus: 0,
    weather: fx.builds.succeeded.weather,
    busy: 0,
    priority: fx.builds.succeeded.priority,
    finished: 1,
    buildproducts: [],
  });
  assert.ok(succeeded.stoptime as number > T0);
});

// Cuirass also filters on these; ignoring them answered with unrelated
// builds to a client asking about one derivation or one worker.
Deno.test("GET /api/latestbuilds and /api/queue filter on derivation and worker", async () => {
  await using fx = await createFixture();
  const { succeeded, started } = fx.builds;
  const ids = async (path: string) =>
    ((await json(await fx.fetch(path))) as Json[]).map((b) => b.id);
  const drv = encodeURIComponent(succeeded.derivation);
  assert.deepEqual(await ids(`/api/latestbuilds?nr=50&derivation=${drv}`), [
    succeeded.id,
  ]);
  assert.deepEqual(await ids(`/api/queue?nr=50&derivation=${drv}`), []);
  assert.deepEqual(
    await ids(
      `/api/queue?nr=50&derivation=${encodeURIComponent(started.derivation)}`,
    ),
    [started.id],
  );
  const byWorker = await ids("/api/latestbuilds?nr=50&worker=w1");
  assert.ok(byWorker.includes(succeeded.id));
  assert.deepEqual(await ids("/api/latestbuilds?nr=50&worker=nobody"), []);
});

Deno.test("GET /api/latestbuilds applies the jobset, job, system and evaluation filters", async () => {
  await using fx = await createFixture();
  const cases: [string, number[]][] = [
    ["jobset=hello", [0, 1, 1, 2, 3, 4]],
    [`jobset=${encodeURIComponent(XSS)}`, []],
    ["system=aarch64-linux", [1, 2]],
    [`job=${fx.builds.canceled.jobName}`, [4]],
    ["evaluation=1&system=x86_64-linux", [0, 1, 3, 4]],
    ["evaluation=2", []],
  ];
  for (const [query, statuses] of cases) {
    const list = await json(
      await fx.fetch(`/api/latestbuilds?nr=50&${query}`),
    ) as Json[];
    assert.deepEqual(list.map((b) => b.buildstatus).sort(), statuses, query);
  }
  const limited = await json(
    await fx.fetch("/api/latestbuilds?nr=2"),
  ) as Json[];
  assert.equal(limited.length, 2);
});

Deno.test("GET /api/latestbuilds and /api/queue apply the id and oldevaluation filters", async () => {
  await using fx = await createFixture();
  const { succeeded, started } = fx.builds;
  const ids = async (path: string) =>
    ((await json(await fx.fetch(path))) as Json[]).map((b) => b.id);
  assert.deepEqual(await ids(`/api/latestbuilds?nr=5&id=${succeeded.id}`), [
    succeeded.id,
  ]);
  assert.deepEqual(await ids(`/api/latestbuilds?nr=5&id=${started.id}`), []);
  assert.deepEqual(await ids(`/api/queue?nr=5&id=${started.id}`), [
    started.id,
  ]);
  assert.deepEqual(await ids(`/api/queue?nr=5&id=${succeeded.id}`), []);

  // A third evaluation with one finished and one pending build.
  const eval3 = await fx.store.addEvaluation("hello", [], T0 + 900);
  await fx.store.registerBuilds(eval3, [job(40, "late"), job(41, "later")], {
    priority: 1,
    now: T0 + 901,
  });
  const late = (await fx.store.getBuildByDerivation(drvPath(40, "late")))!;
  const later = (await fx.store.getBuildByDerivation(drvPath(41, "later")))!;
  await fx.store.completeBuild(late.derivation, 0, { now: T0 + 902 });
  const finished = await ids("/api/latestbuilds?nr=100");
  const pending = await ids("/api/queue?nr=100");
  assert.ok(finished.includes(late.id) && pending.includes(later.id));
  // Strictly older than the evaluation named: the rest, in the same order.
  assert.deepEqual(
    await ids(`/api/latestbuilds?nr=100&oldevaluation=${eval3}`),
    finished.filter((id) => id !== late.id),
  );
  assert.deepEqual(
    await ids(`/api/queue?nr=100&oldevaluation=${eval3}`),
    pending.filter((id) => id !== later.id),
  );
  assert.deepEqual(await ids("/api/latestbuilds?nr=100&oldevaluation=1"), []);
  assert.deepEqual(
    await ids(`/api/queue?nr=100&oldevaluation=2&id=${fx.builds.xss.id}`),
    [],
  );
  assert.deepEqual(
    await ids(`/api/queue?nr=100&oldevaluation=3&id=${fx.builds.xss.id}`),
    [fx.builds.xss.id],
  );

  for (const endpoint of ["/api/latestbuilds", "/api/queue"]) {
    for (
      const [query, error] of [
        [
          "id=x",
          `Cannot read parameter "id": value "x" is not a positive integer`,
        ],
        [
          "id=0",
          `Cannot read parameter "id": value "0" is not a positive integer`,
        ],
        [
          "oldevaluation=-1",
          `Cannot read parameter "oldevaluation": value "-1" is not a positive integer`,
        ],
        [
          "oldevaluation=",
          `Cannot read parameter "oldevaluation": value "" is not a positive integer`,
        ],
      ]
    ) {
      assert.deepEqual(
        await json(await fx.fetch(`${endpoint}?nr=5&${query}`), 400),
        { error },
        `${endpoint}?${query}`,
      );
    }
  }
});

Deno.test("GET /api/queue lists pending builds in the dispatcher's order (C19)", async () => {
  await using fx = await createFixture();
  const list = await json(await fx.fetch("/api/queue?nr=1000")) as Json[];
  for (const build of list) assertBuildShape(build);
  const statuses = list.map((build) => build.buildstatus);
  // Started first, then scheduled, then submitted, as Cuirass orders them.
  assert.deepEqual(
    statuses,
    [...statuses].sort((a, b) => (b as number) - (a as number)),
  );
  assert.ok(
    statuses.includes(-1) && statuses.includes(-2) && statuses.includes(-3),
  );

  const scheduled = list.filter((build) => build.buildstatus === -2);
  const priorities = scheduled.map((build) => build.priority as number);
  assert.deepEqual(priorities, [...priorities].sort((a, b) => a - b));
  // Within the queue, the scheduled builds come exactly as popBuild takes them.
  const popped: number[] = [];
  while (true) {
    const next = await fx.store.popBuild(
      "w2",
      ["x86_64-linux", "aarch64-linux"],
      NOW,
    );
    if (next === null) break;
    popped.push(next.id);
  }
  assert.ok(popped.length >= 3);
  assert.deepEqual(scheduled.map((build) => build.id), popped);
});

Deno.test("GET /api/queue applies the filters", async () => {
  await using fx = await createFixture();
  const xss = await json(
    await fx.fetch(`/api/queue?nr=10&jobset=${encodeURIComponent(XSS)}`),
  ) as Json[];
  assert.deepEqual(xss.map((build) => build.id), [fx.builds.xss.id]);
  assert.equal(xss[0].job, fx.builds.xss.jobName);
  const none = await json(
    await fx.fetch("/api/queue?nr=10&system=aarch64-linux"),
  ) as Json[];
  assert.deepEqual(none, []);
  const one = await json(await fx.fetch("/api/queue?nr=1")) as Json[];
  assert.equal(one.length, 1);
});

Deno.test("the list endpoints reject a missing or out-of-range nr with 400", async (t) => {
  await using fx = await createFixture();
  const cases: [string, string][] = [
    ["", "missing"],
    ["nr=0", `"0"`],
    ["nr=abc", `"abc"`],
    ["nr=100000", `"100000"`],
    ["nr=1001", `"1001"`],
    ["nr=-1", `"-1"`],
    ["nr=1.5", `"1.5"`],
    ["nr=", `""`],
  ];
  for (
    const endpoint of ["/api/latestbuilds", "/api/queue", "/api/evaluations"]
  ) {
    for (const [query, named] of cases) {
      await t.step(`${endpoint}?${query}`, async () => {
        const body = await json(
          await fx.fetch(`${endpoint}?${query}`),
          400,
        ) as Json;
        assert.match(body.error as string, /^Cannot read parameter "nr": /);
        assert.ok((body.error as string).includes(named), body.error as string);
      });
    }
  }
  const bad = await json(
    await fx.fetch("/api/latestbuilds?nr=5&evaluation=x"),
    400,
  ) as Json;
  assert.match(bad.error as string, /"evaluation".*"x"/);
  assert.ok(!fx.logLines.some((line) => line.includes(" error ")));
});

Deno.test("GET /build/ID finds a build by id or derivation basename", async () => {
  await using fx = await createFixture();
  const byId = await json(await fx.fetch(`/build/${fx.builds.started.id}`));
  assertBuildShape(byId);
  assert.equal(byId.busy, 1);
  assert.equal(byId.timestamp, fx.builds.started.timestamp);
  const basename = fx.builds.failed.derivation.slice(STORE_DIR.length + 1);
  const byDrv = await json(await fx.fetch(`/build/${basename}`)) as Json;
  assert.equal(byDrv.id, fx.builds.failed.id);
  assert.equal(byDrv.buildstatus, 1);
});

Deno.test("GET /build/ID answers 404 JSON for an unknown build and 400 for a bad id (C19)", async () => {
  await using fx = await createFixture();
  assert.deepEqual(await json(await fx.fetch("/build/7777"), 404), {
    error: "Build with ID 7777 doesn't exist.",
  });
  const unknownDrv = drvPath(999, "nothing").slice(STORE_DIR.length + 1);
  assert.deepEqual(await json(await fx.fetch(`/build/${unknownDrv}`), 404), {
    error: `Build with ID ${unknownDrv} doesn't exist.`,
  });
  for (const id of ["0", "abc", "-3", "99999999999999999999", "x.drv"]) {
    const body = await json(await fx.fetch(`/build/${id}`), 400) as Json;
    assert.match(body.error as string, /^Cannot read build ID/);
  }
});

Deno.test("GET /build/ID/log/raw serves the gzip file unchanged, invalid UTF-8 included (C10)", async () => {
  await using fx = await createFixture();
  const onDisk = await Deno.readFile(
    `${fx.logDir}/${fx.builds.succeeded.derivation.slice(11, 43)}.log.gz`,
  );
  const response = await fx.fetch(`/build/${fx.builds.succeeded.id}/log/raw`);
  assert.equal(response.status, 200);
  assert.equal(
    response.headers.get("content-type"),
    "text/plain; charset=UTF-8",
  );
  assert.equal(response.headers.get("content-encoding"), "gzip");
  assert.equal(response.headers.get("content-disposition"), "inline");
  assert.equal(response.headers.get("content-length"), String(onDisk.length));
  const body = new Uint8Array(await response.arrayBuffer());
  assert.deepEqual(body, onDisk);
  assert.deepEqual(new Uint8Array(gunzipSync(body)), C10_LOG);

  const basename = fx.builds.succeeded.derivation.slice(STORE_DIR.length + 1);
  const byDrv = await fx.fetch(`/build/${basename}/log/raw`);
  assert.deepEqual(new Uint8Array(await byDrv.arrayBuffer()), onDisk);
});

Deno.test("GET /build/ID/log/raw streams a log larger than one read", async () => {
  await using fx = await createFixture();
  const text = new Uint8Array(3 * 1024 * 1024);
  for (let i = 0; i < text.length; i++) text[i] = (i * 7919) % 251;
  const compressed = await writeLog(
    fx.logDir,
    fx.builds.failed.derivation,
    text,
  );
  const response = await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`);
  assert.deepEqual(new Uint8Array(await response.arrayBuffer()), compressed);
});

Deno.test("GET /build/ID/log/raw inflates the log for a client that does not accept gzip", async () => {
  await using fx = await createFixture();
  const id = fx.builds.succeeded.id;
  for (const acceptEncoding of ["identity", "gzip;q=0, deflate", "br"]) {
    const response = await fx.fetch(`/build/${id}/log/raw`, {
      headers: { "accept-encoding": acceptEncoding },
    });
    assert.equal(response.status, 200, acceptEncoding);
    assert.equal(response.headers.get("content-encoding"), null);
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
    assert.equal(
      response.headers.get("content-type"),
      "text/plain; charset=UTF-8",
    );
    assert.deepEqual(new Uint8Array(await response.arrayBuffer()), C10_LOG);
  }
  // Browsers (and clients sending no header at all) get the file as it is.
  const browser: Record<string, string> = { "accept-encoding": "gzip, br" };
  for (const headers of [browser, {}]) {
    const response = await fx.fetch(`/build/${id}/log/raw`, { headers });
    await response.body?.cancel(); // the headers suffice: close the log file
    assert.equal(response.headers.get("content-encoding"), "gzip");
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
  }
});

Deno.test("GET /build/ID/log/raw inflates every member of a log gzipped in parts", async () => {
  await using fx = await createFixture();
  const first = "phase `unpack' succeeded\n".repeat(2000);
  const second = "phase `build' succeeded\n".repeat(2000);
  // Two gzip members one after the other, as `cat a.gz b.gz` writes them.
  const a = gzipSync(first);
  const b = gzipSync(second);
  const parts = new Uint8Array(a.length + b.length);
  parts.set(a);
  parts.set(b, a.length);
  const hash = fx.builds.failed.derivation.slice(11, 43);
  await Deno.writeFile(`${fx.logDir}/${hash}.log.gz`, parts);
  const response = await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`, {
    headers: { "accept-encoding": "identity" },
  });
  assert.equal(response.status, 200);
  assert.equal(await response.text(), first + second);
});

Deno.test("GET /build/ID/log/raw inflates a log still being written up to where it ends", async () => {
  await using fx = await createFixture();
  const text = new TextEncoder().encode("phase `build' started\n".repeat(5000));
  const whole = await writeLog(fx.logDir, fx.builds.failed.derivation, text);
  // Cut as a log being written is: no gzip trailer, the last block partial.
  const cut = whole.subarray(0, whole.length - 20);
  const hash = fx.builds.failed.derivation.slice(11, 43);
  await Deno.writeFile(`${fx.logDir}/${hash}.log.gz`, cut);
  const response = await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`, {
    headers: { "accept-encoding": "identity" },
  });
  assert.equal(response.status, 200);
  const body = new Uint8Array(await response.arrayBuffer());
  assert.ok(body.length > 0, "some text before the cut");
  assert.deepEqual(body, text.subarray(0, body.length));
});

Deno.test("GET /build/ID/log/raw and /details show every line before garbage after the log's last gzip member", async () => {
  await using fx = await createFixture();
  const { text, compressed } = logSpanningChunks();
  const hash = fx.builds.failed.derivation.slice(11, 43);
  // A torn write or junk after the last member, in the middle of one of
  // the 4 KiB chunks the log is inflated by.
  for (const junk of ["garbage\n", "\x1f\x00 not a member"]) {
    const damaged = new Uint8Array([
      ...compressed,
      ...new TextEncoder().encode(junk),
    ]);
    await Deno.writeFile(`${fx.logDir}/${hash}.log.gz`, damaged);
    const raw = await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`, {
      headers: { "accept-encoding": "identity" },
    });
    assert.equal(raw.status, 200);
    assert.equal(await raw.text(), text, JSON.stringify(junk));

    const page = await (await fx.fetch(
      `/build/${fx.builds.failed.id}/details`,
    )).text();
    const log = page.slice(page.indexOf('<pre class="log">'));
    for (const line of text.split("\n")) {
      assert.ok(log.includes(line), `${JSON.stringify(junk)}: ${line}`);
    }
    assert.match(
      page,
      /The log ends early: it is still being written, or damaged/,
    );
  }
});

/**
 * Log text that gzip cannot shrink much, so that it spans several 4 KiB
 * chunks compressed, and whose compressed end falls mid-chunk.
 */
function logSpanningChunks(): { text: string; compressed: Uint8Array } {
  const lines: string[] = [];
  let seed = 1;
  while (true) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    lines.push(`line ${lines.length}: ${seed.toString(36)} ${seed % 9973}`);
    if (lines.length % 16 !== 0) continue;
    const text = lines.join("\n") + "\n";
    const compressed = new Uint8Array(gzipSync(text));
    const inChunk = compressed.length % 4096;
    if (compressed.length > 4 * 4096 && inChunk > 1024 && inChunk < 3072) {
      return { text, compressed };
    }
  }
}

Deno.test("GET /build/ID/log/raw answers 404 when the build has no log", async () => {
  await using fx = await createFixture();
  const body = await json(
    await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`),
    404,
  ) as Json;
  assert.equal(
    body.error,
    `Log of build ${fx.builds.failed.id} doesn't exist.`,
  );
  // A directory in the log's place is not served either.
  await Deno.mkdir(
    `${fx.logDir}/${fx.builds.failed.derivation.slice(11, 43)}.log.gz`,
  );
  await json(await fx.fetch(`/build/${fx.builds.failed.id}/log/raw`), 404);
});

Deno.test("GET /build/ID/log/raw refuses path traversal", async () => {
  await using fx = await createFixture();
  // A file outside the log directory that a traversal would reach.
  const outside = await Deno.makeTempDir({ prefix: "lorica-web-outside-" });
  try {
    await Deno.writeTextFile(`${outside}/secret.log.gz`, "SECRET");
    const relative = `../${outside.split("/").pop()}/secret`;
    const hash = "0".repeat(32);
    const attempts = [
      "/build/..%2F..%2Fetc/log/raw",
      "/build/..%2F..%2Fetc%2Fpasswd/log/raw",
      `/build/${encodeURIComponent(relative)}/log/raw`,
      `/build/${hash}-..%2F..%2Fx.drv/log/raw`,
      `/build/${hash}-..drv/log/raw`,
      `/build/..%2F${hash}-x.drv/log/raw`,
      "/build/%2E%2E/log/raw",
      "/build/%ZZ/log/raw",
      "/build/../../etc/passwd/log/raw",
    ];
    for (const path of attempts) {
      const response = await fx.fetch(path);
      const text = await response.text();
      assert.ok(
        [400, 404].includes(response.status),
        `${path}: ${response.status}`,
      );
      assert.ok(!text.includes("SECRET"), path);
      // `..` segments are resolved by the URL itself: what remains is no
      // route (a plain text 404); the rest are the raw log's JSON errors.
      const error = response.headers.get("content-type") === "application/json"
        ? JSON.parse(text).error
        : text;
      assert.match(error, /^(Cannot|Build|Resource not found)/, path);
    }
    // A derivation stored with `..` in it does not lead outside either.
    const evaluation = await fx.store.addEvaluation("hello", [], NOW);
    const sneaky = job(40, "sneaky");
    sneaky.derivation = `${STORE_DIR}/${hash}-x.drv/../../..${outside}/secret`;
    await fx.store.registerBuilds(evaluation, [sneaky], {
      priority: 1,
      now: NOW,
    });
    const build = (await fx.store.getBuildByDerivation(sneaky.derivation))!;
    const response = await fx.fetch(`/build/${build.id}/log/raw`);
    assert.equal(response.status, 404);
    assert.ok(!(await response.text()).includes("SECRET"));
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("GET /api/evaluations and /api/evaluation return evaluation objects (C19)", async () => {
  await using fx = await createFixture();
  const list = await json(await fx.fetch("/api/evaluations?nr=10")) as Json[];
  assert.deepEqual(list.map((item) => item.id), [2, 1]);
  for (const item of list) {
    assert.deepEqual(Object.keys(item), [
      "id",
      "specification",
      "status",
      "timestamp",
      "checkouttime",
      "evaltime",
      "checkouts",
    ]);
  }
  const hello = await json(
    await fx.fetch("/api/evaluations?nr=10&spec=hello"),
  ) as Json[];
  assert.deepEqual(hello.map((item) => item.id), [1]);
  const one = await json(await fx.fetch("/api/evaluation?id=1")) as Json;
  assert.equal(one.specification, "hello");
  assert.equal(one.status, 0);
  assert.equal(one.timestamp, T0);
  assert.deepEqual(one.checkouts, [
    { commit: "a".repeat(40), channel: "guix", directory: "/tmp/guix" },
    { commit: "b".repeat(40), channel: "extra", directory: "/tmp/extra" },
  ]);
  assert.deepEqual(await json(await fx.fetch("/api/evaluation?id=99"), 404), {
    error: "Evaluation with ID 99 doesn't exist.",
  });
  await json(await fx.fetch("/api/evaluation?id=abc"), 400);
  await json(await fx.fetch("/api/evaluation"), 400);
});

Deno.test("GET /specifications and /jobsets list active specifications by name (C19)", async () => {
  await using fx = await createFixture();
  for (const path of ["/specifications", "/jobsets", "/jobsets/anything"]) {
    const list = await json(await fx.fetch(path)) as Json[];
    assert.deepEqual(list.map((item) => item.name), [XSS, "hello"]);
    assert.deepEqual(list[1], {
      name: "hello",
      build: { packages: ["hello"] },
      channels: [{
        name: "guix",
        url: "https://git.example/guix.git",
        branch: "master",
        commit: false,
      }],
      "build-outputs": [],
      notifications: [],
      period: 300,
      priority: 5,
      systems: ["x86_64-linux", "aarch64-linux"],
    });
  }
});

Deno.test("GET /api/workers lists workers with their current build", async () => {
  await using fx = await createFixture();
  const list = await json(await fx.fetch("/api/workers")) as Json[];
  assert.deepEqual(list, [
    {
      name: "w1",
      address: "127.0.0.1",
      machine: "box-1",
      systems: ["x86_64-linux", "aarch64-linux"],
      lastseen: NOW - 5,
      currentbuild: fx.builds.started.id,
      disklow: false,
    },
    {
      name: "w2",
      address: "::1",
      machine: "box-2",
      systems: ["x86_64-linux"],
      lastseen: NOW - 1000,
      currentbuild: null,
      disklow: false,
    },
  ]);
});

Deno.test("GET / shows each specification with counters, escaped", async () => {
  await using fx = await createFixture();
  const response = await fx.fetch("/");
  assert.equal(response.status, 200);
  assert.equal(
    response.headers.get("content-type"),
    "text/html; charset=utf-8",
  );
  const page = await response.text();
  assert.ok(page.includes(`href="/jobset/hello"`));
  assert.ok(page.includes(`href="/jobset/${encodeURIComponent(XSS)}"`));
  assert.ok(page.includes("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
  assert.ok(!page.includes("<script>alert"));
  assert.ok(page.includes(`class="bar"`));
  assert.ok(page.includes("Dashboard") && page.includes("Workers"));
});

Deno.test("GET /jobset/NAME lists its evaluations; unknown jobsets are 404 HTML", async () => {
  await using fx = await createFixture();
  const page = await (await fx.fetch("/jobset/hello")).text();
  assert.ok(page.includes(`href="/eval/1"`));
  assert.ok(page.includes("succeeded"));
  const xss = await fx.fetch(`/jobset/${encodeURIComponent(XSS)}`);
  assert.equal(xss.status, 200);
  const xssPage = await xss.text();
  assert.ok(!xssPage.includes("<script>alert"));
  assert.ok(xssPage.includes(`href="/eval/2"`));
  const missing = await fx.fetch(`/jobset/${encodeURIComponent("<b>nope")}`);
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get("content-type"), "text/html; charset=utf-8");
  const text = await missing.text();
  assert.ok(text.includes("&lt;b&gt;nope"));
  assert.ok(!text.includes("<b>nope"));
});

Deno.test("GET /eval/ID shows its builds with status badges and filters", async () => {
  await using fx = await createFixture();
  const page = await (await fx.fetch("/eval/1")).text();
  for (
    const name of [
      "succeeded",
      "failed",
      "failed-dependency",
      "failed-other",
      "canceled",
      "started",
      "submitted",
      "scheduled",
    ]
  ) {
    assert.ok(page.includes(`class="badge s-${name}"`), name);
  }
  assert.ok(page.includes(`href="/build/${fx.builds.succeeded.id}/details"`));
  const failedPage = await (await fx.fetch("/eval/1?status=failed")).text();
  const failed = failedPage.slice(failedPage.indexOf("<h2>Builds</h2>"));
  assert.ok(failed.includes("s-failed-dependency"));
  assert.ok(!failed.includes(`class="badge s-succeeded"`));
  const xss = await (await fx.fetch("/eval/2")).text();
  assert.ok(!xss.includes("<script>alert"));
  assert.equal((await fx.fetch("/eval/1?status=bogus")).status, 400);
  assert.equal((await fx.fetch("/eval/99")).status, 404);
  assert.equal((await fx.fetch("/eval/abc")).status, 400);
});

Deno.test("GET /build/ID/details shows facts, dependencies and the log tail, bad UTF-8 included (C10)", async () => {
  await using fx = await createFixture();
  const page =
    await (await fx.fetch(`/build/${fx.builds.succeeded.id}/details`)).text();
  assert.ok(page.includes(fx.builds.succeeded.derivation));
  assert.ok(page.includes(fx.builds.succeeded.outputs[0].path));
  assert.ok(page.includes("w1"));
  assert.ok(page.includes(`href="/build/${fx.builds.succeeded.id}/log/raw"`));
  const log = page.slice(page.indexOf(`<pre class="log">`));
  assert.ok(
    log.startsWith(`<pre class="log">ok\n\ufffd\ufffd\ufffd(\nred\n`),
    JSON.stringify(log.slice(0, 60)),
  );
  assert.ok(!page.includes("\x1b"));

  const xss = await (await fx.fetch(`/build/${fx.builds.xss.id}/details`))
    .text();
  assert.ok(!xss.includes("<script>alert"));
  assert.equal((await fx.fetch("/build/4242/details")).status, 404);
});

Deno.test("GET /build/ID/details of a failed-dependency build says it was not built, naming the failed input, with no start time; /build/ID keeps Cuirass's values", async () => {
  await using fx = await createFixture();
  const { dependent, broken } = fx.builds;
  // Whitespace between tags is the formatter's, not the page's meaning.
  const page = (await (await fx.fetch(`/build/${dependent.id}/details`)).text())
    .replace(/\s+/g, " ").replace(/> </g, "><");
  const reason = page.slice(page.indexOf(`id="not-built"`));
  assert.ok(
    reason.startsWith(
      `id="not-built">Not built because its input <a href="/build/${broken.id}/details">build ${broken.id}</a> (${broken.nixName}, `,
    ),
    reason.slice(0, 200),
  );
  assert.ok(!page.includes("No log for this build"));
  assert.ok(
    page.includes(
      "No log: this build was not built, because a dependency failed.",
    ),
  );
  const facts = page.slice(page.indexOf("<dt>Started</dt>"));
  assert.ok(
    facts.startsWith(
      `<dt>Started</dt><dd><span class="muted">never: not built</span></dd>`,
    ),
    facts.slice(0, 120),
  );
  assert.ok(!page.includes("<dt>Duration</dt>"));
  const listing = (await (await fx.fetch(`/eval/${dependent.evaluation}`))
    .text()).replace(/\s+/g, " ").replace(/> </g, "><");
  const row = listing.slice(
    listing.indexOf(`<a href="/build/${dependent.id}/details">`),
  );
  const duration = row.slice(row.indexOf(`<td class="num nowrap">`));
  assert.ok(
    duration.startsWith(`<td class="num nowrap">—</td>`),
    duration.slice(0, 60),
  );

  const json = await (await fx.fetch(`/build/${dependent.id}`)).json();
  assert.equal(json.buildstatus, 2);
  assert.equal(json.starttime, dependent.starttime);
  assert.equal(json.stoptime, dependent.stoptime);
  assert.ok(dependent.starttime > 0);
});

Deno.test("GET /build/ID/details escapes markup in the log", async () => {
  await using fx = await createFixture();
  await writeLog(
    fx.logDir,
    fx.builds.failed.derivation,
    new TextEncoder().encode(`error: ${XSS} & <img src=x onerror=alert(1)>\n`),
  );
  const page = await (await fx.fetch(`/build/${fx.builds.failed.id}/details`))
    .text();
  assert.ok(!page.includes("<script>alert"));
  assert.ok(!page.includes("<img"));
  assert.ok(page.includes("&lt;img src=x onerror=alert(1)&gt;"));
});

Deno.test("GET /workers shows one card per worker, busy, idle or unresponsive", async () => {
  await using fx = await createFixture();
  const page = await (await fx.fetch("/workers")).text();
  const w1 = page.slice(
    page.indexOf(`data-worker="w1"`),
    page.indexOf(`data-worker="w2"`),
  );
  const w2 = page.slice(page.indexOf(`data-worker="w2"`));
  assert.ok(w1.includes("5 s ago"));
  assert.ok(w1.includes("box-1") && w1.includes("127.0.0.1"));
  assert.ok(w1.includes(`href="/build/${fx.builds.started.id}/details"`));
  assert.ok(w1.includes("s-busy"));
  assert.ok(w2.includes("1000 s ago"));
  assert.ok(w2.includes("unresponsive"));
  assert.ok(w2.includes("idle"));
});

Deno.test("GET /machine/NAME shows the workers of that machine; the workers page links it", async () => {
  await using fx = await createFixture();
  await fx.store.upsertWorker({
    name: "w3",
    address: "127.0.0.2",
    machine: "box-1",
    systems: ["i686-linux"],
    lastSeen: NOW - 2,
    timeoutSeconds: 120,
  });
  const text = await (await fx.fetch("/machine/box-1")).text();
  assert.ok(text.includes("<h1>Machine box-1</h1>"));
  assert.ok(
    text.includes(`data-worker="w1"`) && text.includes(`data-worker="w3"`),
  );
  assert.ok(!text.includes(`data-worker="w2"`));
  // What w1 builds, and the union of the machine's systems.
  assert.ok(text.includes(`href="/build/${fx.builds.started.id}/details"`));
  for (const system of ["aarch64-linux", "i686-linux", "x86_64-linux"]) {
    assert.ok(text.includes(`<code>${system}</code>`), system);
  }
  assert.ok(text.includes("127.0.0.1, 127.0.0.2"));

  const workers = await (await fx.fetch("/workers")).text();
  assert.ok(workers.includes(`href="/machine/box-1"`));
  assert.ok(workers.includes(`href="/machine/box-2"`));

  // An odd machine name is escaped in the link and on its page.
  await fx.store.upsertWorker({
    name: "w4",
    address: "127.0.0.3",
    machine: XSS,
    systems: ["x86_64-linux"],
    lastSeen: NOW,
    timeoutSeconds: 120,
  });
  assert.ok(
    (await (await fx.fetch("/workers")).text()).includes(
      `href="/machine/${encodeURIComponent(XSS)}"`,
    ),
  );
  const odd = await (await fx.fetch(`/machine/${encodeURIComponent(XSS)}`))
    .text();
  assert.ok(odd.includes(`data-worker="w4"`));
  assert.ok(!odd.includes("<script>alert"));

  const missing = await fx.fetch(`/machine/${encodeURIComponent("<b>nope")}`);
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get("content-type"), "text/html; charset=utf-8");
  const body = await missing.text();
  assert.ok(
    body.includes(
      "Machine &quot;&lt;b&gt;nope&quot; has no registered worker.",
    ),
  );
  assert.ok(!body.includes("<b>nope"));
});

Deno.test("GET /status shows the running builds", async () => {
  await using fx = await createFixture();
  const page = await (await fx.fetch("/status")).text();
  const running = page.slice(0, page.indexOf("Next in the queue"));
  assert.ok(running.includes("Running builds (2)"));
  assert.ok(running.includes(`href="/build/${fx.builds.started.id}/details"`));
  assert.ok(
    running.includes(`href="/build/${fx.builds.startedEarlier.id}/details"`),
  );
  assert.ok(
    !running.includes(`href="/build/${fx.builds.submitted.id}/details"`),
  );
});

Deno.test("unknown routes are 404 and other methods 405", async () => {
  await using fx = await createFixture();
  assert.deepEqual(await json(await fx.fetch("/api/nope"), 404), {
    error: "Resource not found: /api/nope",
  });
  assert.equal((await fx.fetch("/api/queue/extra?nr=1")).status, 404);
  assert.equal((await fx.fetch("/build/1/log/raw/more")).status, 404);
  const post = await fx.fetch("/api/queue?nr=1", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  await post.body?.cancel();
  // Admin actions are POST only: a GET (a link, a crawler) changes nothing.
  const get = await fx.fetch(`/admin/build/${fx.builds.started.id}/cancel`);
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST");
  await get.body?.cancel();
});

Deno.test("an error looks as its route answers (page, JSON or, for no route, text), for curl and for a browser alike, naming the offending value", async (t) => {
  await using fx = await createFixture();
  const kinds = {
    page: "text/html; charset=utf-8",
    json: "application/json",
    text: "text/plain; charset=utf-8",
  };
  const cases: [string, keyof typeof kinds, number, string][] = [
    // Pages: a missing build, bad parameters in the path and the query,
    // a NUL character and a path that does not decode (checked before any
    // route handler runs).
    ["/build/99999/details", "page", 404, "99999"],
    ["/build/abc/details", "page", 400, "abc"],
    ["/eval/1?status=bogus", "page", 400, "bogus"],
    ["/eval/1?status=pending&x=a%00", "page", 400, "x"],
    ["/build/%E0%A4%A/details", "page", 400, "%E0%A4%A"],
    // The JSON API, Cuirass's own shape: `{"error": …}`.
    ["/api/latestbuilds?nr=abc", "json", 400, "abc"],
    ["/api/latestbuilds?nr=5&job=a%00", "json", 400, "job"],
    ["/build/99999", "json", 404, "99999"],
    ["/api/nope", "json", 404, "/api/nope"],
    // No route: plain text, as Cuirass.
    ["/nope", "text", 404, "/nope"],
    ["/no%E0pe", "text", 400, "/no%E0pe"],
  ];
  const clients = {
    curl: { accept: "*/*" },
    browser: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
  };
  for (const [path, kind, status, value] of cases) {
    for (const [client, headers] of Object.entries(clients)) {
      await t.step(`${client} GET ${path}`, async () => {
        const response = await fx.fetch(path, { headers });
        assert.equal(response.status, status);
        assert.equal(response.headers.get("content-type"), kinds[kind]);
        const body = await response.text();
        const message = kind === "json" ? JSON.parse(body).error : body;
        assert.ok(message.includes(value), `${value} not in ${message}`);
      });
    }
  }
});

/** The web app over a store whose every call rejects with `error`. */
function appOverFailingStore(error: Error, lines: string[]) {
  return createWebApp({
    store: new Proxy({} as Store, { get: () => () => Promise.reject(error) }),
    logCacheDir: "/nonexistent",
    storeDir: STORE_DIR,
    clock: {
      now: () => NOW * 1000,
      monotonic: () => 0,
      sleep: () => Promise.resolve(),
    },
    logger: createLogger({ level: "debug", sink: (line) => lines.push(line) }),
  });
}

Deno.test("an unexpected error is a generic 500, logged with its stack", async () => {
  const lines: string[] = [];
  const app = appOverFailingStore(
    new Error("disk on fire at /secret/path"),
    lines,
  );
  const response = await app(new Request("http://x/api/queue?nr=5"));
  assert.equal(response.status, 500);
  assert.deepEqual(await response.json(), { error: "Internal server error" });
  const page = await app(new Request("http://x/workers"));
  assert.equal(page.status, 500);
  assert.ok(!(await page.text()).includes("disk on fire"));
  const errors = lines.filter((line) =>
    line.includes(" error http handler failed")
  );
  assert.equal(errors.length, 2);
  assert.ok(errors[0].includes("disk on fire"));
  assert.ok(errors[0].includes("at "), "the stack is logged");
  // A client mistake is not an error in the log.
  lines.length = 0;
  await app(new Request("http://x/api/queue?nr=0"));
  assert.ok(!lines.some((line) => line.includes(" error ")));
});

Deno.test("a database that is down is a 503 with Retry-After, logged as a warning naming the error", async () => {
  const lines: string[] = [];
  // What npm:postgres rejects with while PostgreSQL restarts.
  const app = appOverFailingStore(
    Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:54471"), {
      code: "ECONNREFUSED",
    }),
    lines,
  );
  const response = await app(new Request("http://x/api/queue?nr=5"));
  assert.equal(response.status, 503);
  assert.equal(response.headers.get("retry-after"), "5");
  assert.deepEqual(await response.json(), {
    error: "Database unavailable, try again later",
  });
  const page = await app(
    new Request("http://x/", { headers: { accept: "text/html" } }),
  );
  assert.equal(page.status, 503);
  assert.ok(!(await page.text()).includes("54471"));
  const warnings = lines.filter((line) =>
    line.includes(" warn http database unavailable")
  );
  assert.equal(warnings.length, 2, lines.join("\n"));
  assert.match(warnings[0], /path=\/api\/queue/);
  assert.match(warnings[0], /ECONNREFUSED 127\.0\.0\.1:54471/);
  assert.ok(!lines.some((line) => line.includes(" error ")));
});

Deno.test("a NUL character in a parameter or in the path is a 400 naming it, before any store reads it (PostgreSQL refuses such text)", async () => {
  await using fx = await createFixture();
  for (
    const [path, named] of [
      ["/api/dashboard/register?jobset=hello&names=a%00b", '"names"'],
      ["/api/latestbuilds?nr=5&job=%00", '"job"'],
    ]
  ) {
    const body = await json(await fx.fetch(path), 400) as Json;
    assert.match(String(body.error), /NUL character/, path);
    assert.ok(String(body.error).includes(named), `${path}: ${body.error}`);
  }
  // Pages answer theirs as pages.
  for (
    const [path, named] of [
      ["/search?query=spec:hello%00", "&quot;query&quot;"],
      ["/jobset/hel%00lo", "/jobset/hel%00lo"],
    ]
  ) {
    const response = await fx.fetch(path);
    assert.equal(response.status, 400, path);
    const text = await response.text();
    assert.match(text, /NUL character/, path);
    assert.ok(text.includes(named), `${path}: ${text}`);
  }
});

Deno.test("a parameter refused for its NUL character is named with its value, the NUL escaped", async () => {
  await using fx = await createFixture();
  for (
    const [path, shown] of [
      [
        "/api/dashboard/register?jobset=hello&names=a%00b",
        String.raw`"names": value "a\u0000b"`,
      ],
      ["/api/latestbuilds?nr=5&job=%00", String.raw`"job": value "\u0000"`],
      [
        "/api/queue?nr=5&sys%00tem=x86_64-linux",
        String.raw`"sys\u0000tem": its name`,
      ],
    ]
  ) {
    const body = await json(await fx.fetch(path), 400) as Json;
    assert.ok(String(body.error).includes(shown), `${path}: ${body.error}`);
  }
});

Deno.test("a Host header that makes no URL is a 400 naming it, not the runtime's 500", async () => {
  await using fx = await createFixture();
  const errors: unknown[] = [];
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    onError: (error) => {
      errors.push(error);
      return new Response("handler threw", { status: 500 });
    },
  }, fx.app);
  const answer = await rawExchange(
    server.addr.port,
    `GET /events/rss HTTP/1.1\r\nHost: evil"><x>\r\nConnection: close\r\n\r\n`,
  );
  assert.deepEqual(errors, []);
  assert.match(answer, /^HTTP\/1\.1 400 /);
  assert.match(
    answer,
    /Cannot read request URL: host "evil\\"><x>" is not a plain HOST\[:PORT\]/,
  );
  assert.match(answer, /x-content-type-options: nosniff/i);
});

Deno.test("a query parameter given twice is a 400 naming it and its values, rather than one value silently kept", async () => {
  await using fx = await createFixture();
  for (
    const [path, shown] of [
      [
        "/api/latestbuilds?nr=5&nr=6",
        String.raw`parameter "nr": given 2 times ("5", "6")`,
      ],
      [
        "/api/queue?nr=5&system=x86_64-linux&system=i686-linux",
        String
          .raw`parameter "system": given 2 times ("x86_64-linux", "i686-linux")`,
      ],
      [
        "/api/evaluations?nr=1&spec=a&spec=b&spec=c&spec=d",
        String.raw`parameter "spec": given 4 times ("a", "b", "c", ...)`,
      ],
    ]
  ) {
    const body = await json(await fx.fetch(path), 400) as Json;
    assert.ok(String(body.error).includes(shown), `${path}: ${body.error}`);
  }
  // A page answers its own as a page.
  const response = await fx.fetch("/search?query=a&query=b");
  assert.equal(response.status, 400);
  assert.ok((await response.text()).includes("given 2 times"));
  // Once each, distinct parameters still go through.
  await json(await fx.fetch("/api/latestbuilds?nr=5&system=x86_64-linux"), 200);
});
