// C19: the JSON API contract — shapes, types, status coverage and queue order.

import assert from "node:assert/strict";
import { createFixture, job, T0 } from "./_fixture.ts";

type Json = Record<string, unknown>;

const BUILD_FIELDS: [string, string][] = [
  ["id", "integer"],
  ["evaluation", "integer"],
  ["jobset", "string"],
  ["job", "string"],
  ["timestamp", "epoch"],
  ["starttime", "integer"],
  ["stoptime", "integer"],
  ["derivation", "string"],
  ["buildoutputs", "object"],
  ["system", "string"],
  ["nixname", "string"],
  ["buildstatus", "integer"],
  ["weather", "integer"],
  ["busy", "integer"],
  ["priority", "integer"],
  ["finished", "integer"],
  ["buildproducts", "array"],
];

function assertType(value: unknown, type: string, where: string) {
  switch (type) {
    case "integer":
      return assert.ok(Number.isSafeInteger(value), `${where} is an integer`);
    case "epoch":
      return assert.ok(
        Number.isSafeInteger(value) && (value as number) > 1e9 &&
          (value as number) < 1e10,
        `${where} is epoch seconds`,
      );
    case "array":
      return assert.ok(Array.isArray(value), `${where} is an array`);
    case "object":
      return assert.ok(
        typeof value === "object" && value !== null && !Array.isArray(value),
        `${where} is an object`,
      );
    default:
      return assert.equal(typeof value, type, `${where} is a ${type}`);
  }
}

function assertBuild(value: unknown, where: string): Json {
  const build = value as Json;
  assert.deepEqual(Object.keys(build), BUILD_FIELDS.map(([key]) => key), where);
  for (const [key, type] of BUILD_FIELDS) {
    assertType(build[key], type, `${where}.${key}`);
  }
  for (const [name, output] of Object.entries(build.buildoutputs as Json)) {
    assert.deepEqual(Object.keys(output as Json), ["path"], `${where} ${name}`);
  }
  return build;
}

function assertEvaluation(value: unknown, where: string): Json {
  const evaluation = value as Json;
  assert.deepEqual(Object.keys(evaluation), [
    "id",
    "specification",
    "status",
    "timestamp",
    "checkouttime",
    "evaltime",
    "checkouts",
  ], where);
  for (const key of ["id", "status", "timestamp", "checkouttime", "evaltime"]) {
    assertType(evaluation[key], "integer", `${where}.${key}`);
  }
  for (const checkout of evaluation.checkouts as Json[]) {
    assert.deepEqual(Object.keys(checkout), ["commit", "channel", "directory"]);
  }
  return evaluation;
}

async function getJson(
  fetch: (path: string) => Promise<Response>,
  path: string,
  status = 200,
): Promise<unknown> {
  const response = await fetch(path);
  assert.equal(response.status, status, path);
  assert.equal(response.headers.get("content-type"), "application/json", path);
  return JSON.parse(await response.text());
}

/** The fixture plus builds of every priority 0..9 with clashing times. */
async function contractFixture() {
  const fx = await createFixture();
  const eval3 = await fx.store.addEvaluation("hello", [
    { channel: "guix", revision: "d".repeat(40), directory: "/g" },
    { channel: "extra", revision: "e".repeat(40), directory: "/e" },
    { channel: "third", revision: "f".repeat(40), directory: "/t" },
  ], T0 + 1000);
  for (let i = 0; i < 20; i++) {
    await fx.store.registerBuilds(eval3, [
      job(100 + i, `p-${i}`, i % 3 === 0 ? "aarch64-linux" : "x86_64-linux"),
    ], {
      priority: (i * 3) % 10,
      // Newer registrations sometimes get older times, and ties happen.
      now: T0 + 2000 - (i % 4) * 100,
    });
  }
  await fx.store.setEvaluationStatus(eval3, 0, T0 + 2100);
  // The succeeded build offers two products.
  await fx.store.addBuildProducts(fx.builds.succeeded.id, [
    { type: "tarball", fileSize: 4096, path: "/gnu/store/a-p/p.tar.xz" },
    { type: "doc", fileSize: 12, path: "/gnu/store/a-p/README" },
  ]);
  return fx;
}

Deno.test("C19: every endpoint answers valid JSON with the documented fields and types", async () => {
  await using fx = await contractFixture();
  const f = fx.fetch;
  const latest = await getJson(f, "/api/latestbuilds?nr=1000") as Json[];
  const queue = await getJson(f, "/api/queue?nr=1000") as Json[];
  latest.forEach((b, i) => assertBuild(b, `latestbuilds[${i}]`));
  queue.forEach((b, i) => assertBuild(b, `queue[${i}]`));
  // Every status from -3 to 4 appears, and each build has a products array.
  const statuses = new Set([...latest, ...queue].map((b) => b.buildstatus));
  assert.deepEqual([...statuses].sort((a, b) => Number(a) - Number(b)), [
    -3,
    -2,
    -1,
    0,
    1,
    2,
    3,
    4,
  ]);
  for (const build of [...latest, ...queue]) {
    const products = build.buildproducts as Json[];
    if (build.id !== fx.builds.succeeded.id) {
      assert.deepEqual(products, []);
      continue;
    }
    assert.deepEqual(products.map((p) => [p.type, p.path, p["file-size"]]), [
      ["tarball", "/gnu/store/a-p/p.tar.xz", 4096],
      ["doc", "/gnu/store/a-p/README", 12],
    ]);
    for (const product of products) {
      assert.deepEqual(Object.keys(product), [
        "id",
        "type",
        "path",
        "file-size",
      ]);
      assert.ok(Number.isSafeInteger(product.id));
    }
  }
  for (const build of [...latest, ...queue]) {
    assert.equal(build.finished, (build.buildstatus as number) >= 0 ? 1 : 0);
    assert.equal(build.busy, build.buildstatus === -1 ? 1 : 0);
  }

  for (const build of [...latest, ...queue].slice(0, 10)) {
    assert.deepEqual(
      await getJson(f, `/build/${build.id}`),
      build,
      `/build/${build.id} matches the list entry`,
    );
  }
  assert.deepEqual(await getJson(f, "/build/999999", 404), {
    error: "Build with ID 999999 doesn't exist.",
  });

  const evaluations = await getJson(f, "/api/evaluations?nr=10") as Json[];
  evaluations.forEach((e, i) => assertEvaluation(e, `evaluations[${i}]`));
  assert.deepEqual(evaluations.map((e) => e.id), [3, 2, 1]);
  const three = assertEvaluation(
    await getJson(f, "/api/evaluation?id=3"),
    "evaluation 3",
  );
  assert.deepEqual(
    (three.checkouts as Json[]).map((c) => c.channel).sort(),
    ["extra", "guix", "third"],
  );
  await getJson(f, "/api/evaluation?id=77", 404);

  const history = await getJson(
    f,
    "/api/jobs/history?spec=hello&names=p-0,job-0&nr=10",
  ) as Json[];
  for (const item of history) {
    assert.deepEqual(Object.keys(item), ["evaluation", "checkouts", "jobs"]);
    for (const row of item.jobs as Json[]) {
      assert.deepEqual(Object.keys(row), ["name", "build", "status"]);
      assertType(row.build, "integer", "job build");
      assertType(row.status, "integer", "job status");
    }
  }
  const jobs = await getJson(f, "/api/jobs?evaluation=3") as Json[];
  assert.equal(jobs.length, 20);

  const specs = await getJson(f, "/specifications") as Json[];
  for (const spec of specs) {
    assert.deepEqual(Object.keys(spec), [
      "name",
      "build",
      "channels",
      "build-outputs",
      "notifications",
      "period",
      "priority",
      "systems",
    ]);
    for (const channel of spec.channels as Json[]) {
      assert.deepEqual(Object.keys(channel), [
        "name",
        "url",
        "branch",
        "commit",
      ]);
    }
  }

  const workers = await getJson(f, "/api/workers") as Json[];
  for (const worker of workers) {
    assert.deepEqual(Object.keys(worker), [
      "name",
      "address",
      "machine",
      "systems",
      "lastseen",
      "currentbuild",
      "disklow",
    ]);
    assertType(worker.lastseen, "epoch", "lastseen");
  }

  const badge = await f("/jobset/hello/badge.svg");
  assert.equal(badge.status, 200);
  assert.equal(badge.headers.get("content-type"), "image/svg+xml");
  assert.match(
    await badge.text(),
    /^<svg [^>]*>[\s\S]*>\d+%<[\s\S]*<\/svg>\n$/,
  );
});

Deno.test("C19: /api/queue is in exactly the order the dispatcher picks", async () => {
  await using fx = await contractFixture();
  const queue = await getJson(fx.fetch, "/api/queue?nr=1000") as Json[];
  // Started builds first, then by priority and submission time.
  const firstWaiting = queue.findIndex((b) => b.buildstatus !== -1);
  assert.ok(queue.slice(firstWaiting).every((b) => b.buildstatus !== -1));
  const scheduled = queue.filter((b) => b.buildstatus === -2);
  for (let i = 1; i < scheduled.length; i++) {
    const [a, b] = [scheduled[i - 1], scheduled[i]];
    assert.ok(
      (a.priority as number) < (b.priority as number) ||
        (a.priority === b.priority &&
          ((a.timestamp as number) < (b.timestamp as number) ||
            (a.timestamp === b.timestamp &&
              (a.id as number) < (b.id as number)))),
      `queue order at ${i}: ${
        JSON.stringify([a.id, a.priority, a.timestamp])
      } before ${JSON.stringify([b.id, b.priority, b.timestamp])}`,
    );
  }
  assert.deepEqual(
    [...new Set(scheduled.map((b) => b.priority))].sort(),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  // Now let a worker for every system take builds one at a time.
  const popped = [];
  while (true) {
    const build = await fx.store.popBuild(
      "w1",
      ["x86_64-linux", "aarch64-linux"],
      T0 + 5000,
    );
    if (build === null) break;
    popped.push(build.id);
  }
  assert.deepEqual(popped, scheduled.map((b) => b.id));
});

Deno.test("C19: bad parameters get 400 JSON naming the problem, never 500", async () => {
  await using fx = await contractFixture();
  const cases: [string, number][] = [
    ["/api/latestbuilds", 400],
    ["/api/latestbuilds?nr=0", 400],
    ["/api/latestbuilds?nr=1001", 400],
    ["/api/latestbuilds?nr=99999999999999999999", 400],
    ["/api/latestbuilds?nr=-1", 400],
    ["/api/latestbuilds?nr=5&evaluation=abc", 400],
    ["/api/queue?nr=1e3", 400],
    ["/api/evaluations?nr=%25", 400],
    ["/api/evaluation?id=", 400],
    ["/api/evaluation?id=1.5", 400],
    ["/api/jobs?evaluation=0", 400],
    ["/build/%25", 400],
    ["/build/12abc", 400],
    ["/search?query=%25%25%25", 200],
    ["/api/jobs/history?spec=%25&names=a&nr=1", 404],
  ];
  for (const [path, status] of cases) {
    const response = await fx.fetch(path);
    assert.equal(response.status, status, path);
    if (status !== 200) {
      const body = await response.json() as Json;
      assert.equal(typeof body.error, "string", path);
    } else {
      await response.body?.cancel();
    }
  }
});
