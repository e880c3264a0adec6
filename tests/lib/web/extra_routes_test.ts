import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  breakJob,
  C10_LOG,
  createFixture,
  job,
  NOW,
  rawExchange,
  STORE_DIR,
  T0,
  XSS,
} from "./_fixture.ts";
import { createFarmMetrics } from "../../../lib/web/metrics.ts";
import { changedCheckouts } from "../../../lib/web/extra_routes.ts";
import {
  type Build,
  BuildStatus,
  type Store,
} from "../../../lib/store/types.ts";

type Json = Record<string, unknown>;

async function json(response: Response, status = 200): Promise<unknown> {
  assert.equal(response.status, status);
  assert.equal(response.headers.get("content-type"), "application/json");
  return await response.json();
}

/** Characters XML 1.0 allows in no form, not even escaped. */
// deno-lint-ignore no-control-regex
const XML_FORBIDDEN = /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]/;

Deno.test("GET /api/jobs lists an evaluation's jobs by name, filtered by names and system", async () => {
  await using fx = await createFixture();
  const all = await json(await fx.fetch("/api/jobs?evaluation=1")) as Json[];
  assert.equal(all.length, 12);
  assert.deepEqual(Object.keys(all[0]), ["build", "status", "name"]);
  const names = all.map((row) => row.name as string);
  assert.deepEqual(names, [...names].sort());
  const some = await json(
    await fx.fetch("/api/jobs?evaluation=1&names=job-0,broken,nope"),
  ) as Json[];
  assert.deepEqual(some.map((row) => row.name), ["broken", "job-0"]);
  const broken = some[0];
  assert.equal(broken.build, fx.builds.broken.id);
  assert.equal(broken.status, 1);
  const aarch = await json(
    await fx.fetch("/api/jobs?evaluation=1&system=aarch64-linux"),
  ) as Json[];
  assert.deepEqual(aarch.map((row) => row.name), ["broken", "needs-broken"]);
  assert.equal((await fx.fetch("/api/jobs")).status, 400);
  assert.equal((await fx.fetch("/api/jobs?evaluation=x")).status, 400);
  assert.deepEqual(await json(await fx.fetch("/api/jobs?evaluation=99"), 404), {
    error: "Evaluation with ID 99 doesn't exist.",
  });
  const many = Array.from({ length: 1001 }, (_, i) => `n${i}`).join(",");
  assert.equal(
    (await fx.fetch(`/api/jobs?evaluation=1&names=${many}`)).status,
    400,
  );
});

Deno.test("GET /api/jobs/history gives the last successful evaluations with changed checkouts", async () => {
  await using fx = await createFixture();
  // A second successful evaluation of hello, changing one channel.
  const eval3 = await fx.store.addEvaluation("hello", [
    { channel: "guix", revision: "c".repeat(40), directory: "/tmp/guix" },
    { channel: "extra", revision: "b".repeat(40), directory: "/tmp/extra" },
  ], T0 + 900);
  await fx.store.registerBuilds(eval3, [job(40, "job-0")], {
    priority: 1,
    now: T0 + 901,
  });
  await fx.store.setEvaluationStatus(eval3, 0, T0 + 902);
  const history = await json(
    await fx.fetch("/api/jobs/history?spec=hello&names=job-0&nr=5"),
  ) as Json[];
  assert.deepEqual(history.map((item) => item.evaluation), [eval3, 1]);
  assert.deepEqual(history[0].checkouts, [
    { commit: "c".repeat(40), channel: "guix", directory: "/tmp/guix" },
  ]);
  assert.equal((history[1].checkouts as unknown[]).length, 2);
  assert.deepEqual(
    (history[0].jobs as Json[]).map((j) => [j.name, j.status]),
    [["job-0", -2]],
  );
  for (
    const query of [
      "names=job-0&nr=5",
      "spec=hello&nr=5",
      "spec=hello&names=job-0",
      "spec=hello&names=job-0&nr=101",
    ]
  ) {
    assert.equal(
      (await fx.fetch(`/api/jobs/history?${query}`)).status,
      400,
      query,
    );
  }
  assert.equal(
    (await fx.fetch("/api/jobs/history?spec=nope&names=a&nr=1")).status,
    404,
  );
});

Deno.test("changedCheckouts() keeps channels whose revision moved", () => {
  const a = { channel: "a", revision: "1", directory: "" };
  const b = { channel: "b", revision: "2", directory: "" };
  assert.deepEqual(changedCheckouts([a, b], [a, { ...b, revision: "1" }]), [b]);
  assert.deepEqual(changedCheckouts([a], []), [a]);
});

Deno.test("GET /output/BASENAME and /log/BASENAME find the build of an output", async () => {
  await using fx = await createFixture();
  const { succeeded } = fx.builds;
  const basename = succeeded.outputs[1].path.slice(STORE_DIR.length + 1);
  const found = await json(await fx.fetch(`/output/${basename}`)) as Json;
  assert.equal(found.name, "doc");
  assert.equal(found.derivation, succeeded.derivation);
  assert.equal((found.build as Json).id, succeeded.id);
  const log = await fx.fetch(`/log/${basename}`);
  assert.equal(log.status, 200);
  assert.equal(log.headers.get("content-encoding"), "gzip");
  assert.deepEqual(
    new Uint8Array(gunzipSync(new Uint8Array(await log.arrayBuffer()))),
    C10_LOG,
  );
  const unknown = `${"1".repeat(32)}-nothing`;
  assert.deepEqual(await json(await fx.fetch(`/output/${unknown}`), 404), {
    error: `Output with ID ${unknown} doesn't exist.`,
  });
  for (const bad of ["..%2Fetc", "short-name", `${"1".repeat(32)}-x.drv`]) {
    assert.equal((await fx.fetch(`/output/${bad}`)).status, 400, bad);
    assert.equal((await fx.fetch(`/log/${bad}`)).status, 400, bad);
  }
  // The build of the failed-dependency has no log.
  const noLog = fx.builds.dependent.outputs[0].path.slice(STORE_DIR.length + 1);
  assert.equal((await fx.fetch(`/log/${noLog}`)).status, 404);
});

Deno.test("GET /log/BASENAME inflates the log for a client that does not accept gzip, as /build/ID/log/raw does", async () => {
  await using fx = await createFixture();
  const { succeeded } = fx.builds;
  const basename = succeeded.outputs[0].path.slice(STORE_DIR.length + 1);
  for (const acceptEncoding of ["identity", "gzip;q=0, deflate", "br"]) {
    const response = await fx.fetch(`/log/${basename}`, {
      headers: { "accept-encoding": acceptEncoding },
    });
    assert.equal(response.status, 200, acceptEncoding);
    assert.equal(response.headers.get("content-encoding"), null);
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
    assert.deepEqual(new Uint8Array(await response.arrayBuffer()), C10_LOG);
  }
  // A browser, or a client sending no header (guix publish's), gets the
  // stored file, told that the answer depends on Accept-Encoding.
  const browser: Record<string, string> = { "accept-encoding": "gzip, br" };
  for (const headers of [browser, {}]) {
    const response = await fx.fetch(`/log/${basename}`, { headers });
    assert.equal(response.headers.get("content-encoding"), "gzip");
    assert.equal(response.headers.get("vary"), "Accept-Encoding");
    assert.deepEqual(
      new Uint8Array(gunzipSync(new Uint8Array(await response.arrayBuffer()))),
      C10_LOG,
    );
  }
});

Deno.test("GET /eval/ID/log/raw serves the evaluation log from evaluationLog()", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-evallog-" });
  try {
    await Deno.writeTextFile(`${dir}/1.log`, "evaluating hello\n");
    await Deno.writeFile(`${dir}/2.log.gz`, new Uint8Array(gzipSync("gz\n")));
    await using fx = await createFixture({
      app: {
        evaluationLog: (id) =>
          id === 1 ? `${dir}/1.log` : id === 2 ? `${dir}/2.log.gz` : null,
      },
    });
    const plain = await fx.fetch("/eval/1/log/raw");
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("content-encoding"), null);
    assert.equal(await plain.text(), "evaluating hello\n");
    const gz = await fx.fetch("/eval/2/log/raw");
    assert.equal(gz.headers.get("content-encoding"), "gzip");
    await gz.body?.cancel();
    assert.equal((await fx.fetch("/eval/99/log/raw")).status, 404);
    assert.equal((await fx.fetch("/eval/x/log/raw")).status, 400);
    const page = await (await fx.fetch("/eval/1")).text();
    assert.ok(page.includes(`href="/eval/1/log/raw"`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await using bare = await createFixture();
  assert.equal((await bare.fetch("/eval/1/log/raw")).status, 404);
});

Deno.test("GET /eval/ID/log/raw of an evaluation another server ran names that server, still 404", async () => {
  await using fx = await createFixture();
  const owner = { host: "build-b pid:[4026531836]", pid: 5151, started: "123" };
  const id = await fx.store.addEvaluation("hello", [], NOW, { owner });
  const body = await json(await fx.fetch(`/eval/${id}/log/raw`), 404) as Json;
  assert.equal(
    body.error,
    `Log of evaluation ${id} doesn't exist here: it was evaluated by build-b (pid 5151); its log is in that server's state directory.`,
  );
  // Without a recorded owner, nothing to tell.
  const unowned = await json(await fx.fetch("/eval/1/log/raw"), 404) as Json;
  assert.equal(unowned.error, "Log of evaluation 1 doesn't exist.");
});

Deno.test("GET /eval/latest redirects to the newest successful evaluation", async () => {
  await using fx = await createFixture();
  const response = await fx.fetch("/eval/latest?spec=hello");
  assert.equal(response.status, 302);
  assert.equal(response.headers.get("location"), "/eval/1");
  assert.equal(
    (await fx.fetch(`/eval/latest?spec=${encodeURIComponent(XSS)}`)).status,
    404,
  );
  assert.equal((await fx.fetch("/eval/latest")).status, 400);
});

Deno.test("GET /eval/latest and the routes taking a spec answer 404 naming a specification that does not exist", async () => {
  await using fx = await createFixture();
  const unknown = `"<nope>"`;
  const doesNotExist = {
    error: `Specification ${JSON.stringify(unknown)} doesn't exist.`,
  };
  const spec = encodeURIComponent(unknown);
  for (
    const path of [
      `/eval/latest?spec=${spec}`,
      `/eval/latest/dashboard?spec=${spec}`,
      `/api/evaluations?nr=5&spec=${spec}`,
      `/api/jobs/history?spec=${spec}&names=a&nr=1`,
      `/api/dashboard/register?spec=${spec}&names=a`,
    ]
  ) {
    assert.deepEqual(await json(await fx.fetch(path), 404), doesNotExist, path);
  }
  // One that exists but never evaluated successfully says so.
  assert.deepEqual(
    await json(
      await fx.fetch(`/eval/latest?spec=${encodeURIComponent(XSS)}`),
      404,
    ),
    {
      error: `Specification ${
        JSON.stringify(XSS)
      } has no successful evaluation.`,
    },
  );
});

Deno.test("GET /jobset/NAME/badge.svg shows the success percentage, never dividing by zero", async () => {
  await using fx = await createFixture();
  const response = await fx.fetch("/jobset/hello/badge.svg");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "image/svg+xml");
  const svg = await response.text();
  // Evaluation 1: 1 succeeded of 12 builds.
  assert.ok(svg.includes(">8%<"), svg);
  assert.ok(svg.includes(">build<"));
  const named = await (await fx.fetch("/jobset/hello/badge.svg?type=1")).text();
  assert.ok(named.includes(">hello<"));
  // The XSS jobset has no successful evaluation.
  const none = await fx.fetch(`/jobset/${encodeURIComponent(XSS)}/badge.svg`);
  const noneSvg = await none.text();
  assert.ok(noneSvg.includes("no evaluation"));
  assert.ok(!noneSvg.includes("<script>"));
  assert.ok(!noneSvg.includes("NaN"));
  assert.equal((await fx.fetch("/jobset/nope/badge.svg")).status, 404);
  // Control characters in the name: still a readable XML document. (A NUL
  // is refused before any route, as a bad request.)
  const controls = await fx.fetch("/jobset/%01%1b/badge.svg?type=1");
  assert.equal(controls.status, 404);
  assert.equal((await fx.fetch("/jobset/%00/badge.svg")).status, 400);
  const controlsSvg = await controls.text();
  assert.doesNotMatch(controlsSvg, XML_FORBIDDEN);
  assert.ok(controlsSvg.includes("\uFFFD\uFFFD"), controlsSvg);
  assert.equal((await fx.fetch("/jobset/hello/badge.svg?type=x")).status, 400);
  // A successful evaluation without builds: still no NaN.
  const empty = await fx.store.addEvaluation("old", [], T0);
  await fx.store.setEvaluationStatus(empty, 0, T0 + 1);
  const emptySvg = await (await fx.fetch("/jobset/old/badge.svg")).text();
  assert.ok(emptySvg.includes("no builds") && !emptySvg.includes("NaN"));
});

Deno.test("GET /jobset/NAME/badge.svg labels every badge by its type, known jobset or not", async () => {
  await using fx = await createFixture();
  const labelOf = async (path: string) =>
    /<title>(.*?): /.exec(await (await fx.fetch(path)).text())?.[1];
  // Known with a percentage, known without a successful evaluation, unknown.
  await fx.store.upsertSpecification({
    ...(await fx.store.getSpecification("hello"))!,
    name: "quiet",
  });
  for (const name of ["hello", "quiet", "nope"]) {
    assert.equal(await labelOf(`/jobset/${name}/badge.svg`), "build", name);
    assert.equal(await labelOf(`/jobset/${name}/badge.svg?type=0`), "build");
    assert.equal(await labelOf(`/jobset/${name}/badge.svg?type=1`), name);
  }
});

Deno.test("GET /jobset/NAME/badge.svg refuses a type other than 0 or 1, naming it", async () => {
  await using fx = await createFixture();
  for (const type of ["2", "999", "01", "-1", "1.0", "", "x"]) {
    const response = await fx.fetch(
      `/jobset/hello/badge.svg?type=${encodeURIComponent(type)}`,
    );
    assert.deepEqual(await json(response, 400), {
      error: `Cannot read parameter "type": value ${
        JSON.stringify(type)
      } is not 0 or 1`,
    }, type);
  }
});

Deno.test("GET /events/rss lists builds that were fixed or broken, escaped", async () => {
  await using fx = await createFixture();
  const changed = (build: Build, weather: 0 | 1): Build => ({
    ...build,
    weather,
  });
  const store = new Proxy(fx.store, {
    get(target, key) {
      if (key === "latestBuilds") {
        // Two builds pose as changed, the weather filter applied after.
        return async (...args: Parameters<Store["latestBuilds"]>) => {
          const [{ weathers, ...filter }, limit] = args;
          const list = await target.latestBuilds(filter, limit);
          return list.map((b, i) =>
            i === 0
              ? changed({ ...b, jobName: "bell\u0007nul\u0000" }, 1)
              : i === 1
              ? changed({ ...b, jobName: XSS }, 0)
              : b
          ).filter((b) =>
            weathers === undefined || weathers.includes(b.weather)
          );
        };
      }
      const value = Reflect.get(target, key);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await using rssFx = await createFixture({
    store: undefined,
    app: { store, publicUrl: "https://ci.example/" },
  });
  const response = await rssFx.fetch("/events/rss?specification=hello");
  assert.equal(
    response.headers.get("content-type"),
    "application/rss+xml; charset=utf-8",
  );
  const text = await response.text();
  assert.equal(text.match(/<item>/g)?.length, 2);
  assert.ok(text.includes("is broken.") && text.includes("is fixed."));
  assert.ok(text.includes("<link>https://ci.example/build/"));
  assert.ok(
    text.includes(`href="https://ci.example/events/rss/?specification=hello"`),
  );
  assert.ok(!text.includes("<script>"));
  assert.doesNotMatch(text, XML_FORBIDDEN);
  assert.ok(text.includes("Build bell\uFFFDnul\uFFFD on hello"), text);
  const plain = await (await rssFx.fetch("/events/rss/")).text();
  assert.ok(plain.startsWith(`<?xml`));
});

// Any client names the Host it likes, and a cache in front of the server
// would serve the feed one request got to every reader after it.
Deno.test("GET /events/rss with a Host header of the client's choosing links to the server's own origin, not to that host", async () => {
  await using fx = await createFixture({
    app: { ownOrigin: () => `http://127.0.0.1:${server.addr.port}` },
  });
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, fx.app);
  const id = await breakJob(fx.store, "feed-job");
  const origin = `http://127.0.0.1:${server.addr.port}`;
  for (const host of ["evil.example", "evil.example:8080"]) {
    const answer = await rawExchange(
      server.addr.port,
      `GET /events/rss/?specification=hello HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 200 /);
    assert.ok(!answer.includes("evil"), answer);
    assert.ok(
      answer.includes(`<link>${origin}/build/${id}/details</link>`),
      answer,
    );
    assert.ok(answer.includes(`<link>${origin}/</link>`), answer);
    assert.ok(
      answer.includes(`href="${origin}/events/rss/?specification=hello"`),
      answer,
    );
  }
});

Deno.test("GET /events/rss links to the public URL when one is set, whatever the Host", async () => {
  await using fx = await createFixture({
    app: {
      publicUrl: "https://ci.example.org/",
      ownOrigin: () => "http://127.0.0.1:8080",
    },
  });
  const id = await breakJob(fx.store, "feed-job");
  const text = await (await fx.app(
    new Request("http://evil.example/events/rss", {
      headers: { host: "evil.example" },
    }),
  )).text();
  assert.ok(text.includes(`<link>https://ci.example.org/build/${id}/details`));
  assert.ok(!text.includes("evil") && !text.includes("127.0.0.1"), text);
});

// Cuirass lists the 100 newest builds whose weather changed, however many
// unchanged builds finished since; picking them out of only the newest
// finished builds lost a change behind a busy hour's worth of builds.
Deno.test("GET /events/rss finds a change behind more than 1000 newer unchanged builds", async () => {
  await using fx = await createFixture();
  const { store } = fx;
  const finish = async (
    evaluation: number,
    jobs: ReturnType<typeof job>[],
    status: 0 | 1,
    now: number,
  ) => {
    await store.registerBuilds(evaluation, jobs, { priority: 9, now });
    for (const one of jobs) {
      await store.completeBuild(one.derivation, status, { now: now + 1 });
    }
  };
  const broken = await store.addEvaluation("hello", [], T0 + 1000);
  await finish(broken, [job(500, "flip")], 1, T0 + 1001);
  const fixed = await store.addEvaluation("hello", [], T0 + 1100);
  await finish(fixed, [job(501, "flip")], 0, T0 + 1101);
  const busy = await store.addEvaluation("hello", [], T0 + 1200);
  const fillers = Array.from({ length: 1001 }, (_, i) => job(600 + i, `f${i}`));
  await finish(busy, fillers, 0, T0 + 1201);
  const text = await (await fx.fetch("/events/rss?specification=hello"))
    .text();
  assert.ok(text.includes("Build flip on hello is fixed."), text);
});

Deno.test("GET /metrics reports queue, builds by status, workers and what the server fed", async () => {
  const metrics = createFarmMetrics();
  metrics.logBytesReceived.inc(4096);
  metrics.dispatchLatency.observe(12);
  await using fx = await createFixture({ app: { metrics } });
  const response = await fx.fetch("/metrics");
  assert.equal(response.status, 200);
  assert.match(
    response.headers.get("content-type")!,
    /^text\/plain; version=0\.0\.4/,
  );
  const text = await response.text();
  const queued = await fx.store.queueLengthBySystem();
  for (const [system, n] of queued) {
    assert.ok(
      text.includes(`lorica_queue_length{system="${system}"} ${n}`),
      system,
    );
  }
  for (
    const line of [
      `lorica_builds{status="succeeded"} 1`,
      `lorica_builds{status="failed"} 2`,
      `lorica_builds{status="failed-dependency"} 1`,
      `lorica_builds{status="failed-other"} 1`,
      `lorica_builds{status="canceled"} 1`,
      `lorica_builds{status="started"} 2`,
      `lorica_builds{status="submitted"} 1`,
      // w1 was seen 5 s ago, w2 1000 s ago (timeout 120 s).
      "lorica_workers_connected 1",
      "lorica_workers_known 2",
      "lorica_log_bytes_received_total 4096",
      "lorica_dispatch_latency_seconds_count 1",
    ]
  ) {
    assert.ok(text.includes(line + "\n"), line);
  }
  // Every non-comment line is `name{labels} value`.
  for (const line of text.trim().split("\n")) {
    if (line.startsWith("#")) continue;
    assert.match(line, /^[a-z_:]+(\{.*\})? [-+0-9.eInf]+$/, line);
  }
});

Deno.test("GET /api/queue/reasons explains why each pending build waits", async () => {
  await using fx = await createFixture();
  // An i686 build no worker serves.
  await fx.store.registerBuilds(1, [job(50, "lonely", "i686-linux")], {
    priority: 0,
    now: T0 + 5,
  });
  const list = await json(
    await fx.fetch("/api/queue/reasons?nr=100"),
  ) as Json[];
  const byId = new Map(list.map((item) => [(item.build as Json).id, item]));
  assert.equal(byId.get(fx.builds.started.id)!.reason, "running");
  assert.equal(byId.get(fx.builds.submitted.id)!.reason, "submitted");
  const lonely = list.find((item) => (item.build as Json).job === "lonely")!;
  assert.equal(lonely.reason, "no-worker");
  assert.equal(
    lonely.explanation,
    "No connected worker builds for i686-linux.",
  );
  const scheduled = list.filter((item) =>
    (item.build as Json).buildstatus === -2 &&
    (item.build as Json).system === "x86_64-linux"
  );
  assert.deepEqual(
    scheduled.map((item) => item.reason),
    ["next", ...scheduled.slice(1).map(() => "behind")],
  );
  assert.match(
    scheduled[1].explanation as string,
    /^1 build for x86_64-linux goes first/,
  );
  assert.equal((await fx.fetch("/api/queue/reasons")).status, 400);
});

Deno.test("the queue page names the dependency a build waits for", async () => {
  await using fx = await createFixture();
  const base = job(60, "base");
  const top = { ...job(61, "top"), inputs: [base.derivation] };
  await fx.store.registerBuilds(1, [base, top], { priority: 0, now: T0 + 1 });
  const page = await (await fx.fetch("/queue")).text();
  const baseBuild = (await fx.store.getBuildByDerivation(base.derivation))!;
  const row = page.slice(page.indexOf(`>${top.nixName}<`) - 400);
  assert.ok(row.includes("r-dependency"), row.slice(0, 800));
  assert.ok(
    row.includes(`href="/build/${baseBuild.id}/details">${base.nixName}</a>`),
  );
  assert.ok(page.includes("Why it is not running"));
  assert.ok(page.includes("Running builds (2)"));
  assert.ok(!page.includes("<script>alert"));
});

Deno.test("GET /search and /search/latest use Cuirass's query syntax", async () => {
  await using fx = await createFixture();
  const page = await (await fx.fetch("/search?query=job-1%25")).text();
  assert.ok(page.includes("job-1-1."));
  const failed = await (await fx.fetch(
    "/search?query=" + encodeURIComponent("status:failed system:aarch64-linux"),
  )).text();
  assert.ok(failed.includes(`href="/build/${fx.builds.broken.id}/details"`));
  assert.ok(
    !failed.includes(`href="/build/${fx.builds.succeeded.id}/details"`),
  );
  const latest = await fx.fetch("/search/latest?query=job");
  assert.equal(latest.status, 302);
  assert.match(latest.headers.get("location")!, /^\/build\/\d+\/details$/);
  assert.equal((await fx.fetch("/search/latest?query=zzz")).status, 404);
  for (const query of ["", "status:bogus", "x".repeat(201)]) {
    assert.equal(
      (await fx.fetch(`/search?query=${encodeURIComponent(query)}`)).status,
      400,
      query,
    );
  }
  const xss = await (await fx.fetch(`/search?query=${encodeURIComponent(XSS)}`))
    .text();
  assert.ok(!xss.includes("<script>alert"));
});

Deno.test("GET /search finds an old finished build, however many finished since (it looked at the newest 1,000 only)", async () => {
  await using fx = await createFixture();
  const evaluation = await fx.store.addEvaluation("hello", [], NOW);
  const jobs = [job(100, "ancient-tool")];
  for (let i = 0; i < 1_100; i++) jobs.push(job(200 + i, `filler-${i}`));
  await fx.store.registerBuilds(evaluation, jobs, { priority: 9, now: NOW });
  for (let i = 0; i < jobs.length; i++) {
    const build = (await fx.store.popBuild("w1", ["x86_64-linux"], NOW))!;
    await fx.store.completeBuild(build.derivation, BuildStatus.succeeded, {
      now: NOW,
    });
  }
  const ancient = (await fx.store.getBuildByDerivation(jobs[0].derivation))!;
  assert.equal(ancient.status, BuildStatus.succeeded);
  const page = await (await fx.fetch("/search?query=ancient")).text();
  assert.ok(
    page.includes(`href="/build/${ancient.id}/details"`),
    page.slice(page.indexOf("<main"), page.indexOf("<main") + 800),
  );
  const latest = await fx.fetch("/search/latest?query=status:success+ancient");
  assert.equal(latest.headers.get("location"), `/build/${ancient.id}/details`);
});

Deno.test("GET /search refuses a status named after a property every object has", async () => {
  await using fx = await createFixture();
  for (const status of ["constructor", "__proto__", "toString"]) {
    const query = encodeURIComponent(`status:${status}`);
    const page = await fx.fetch(`/search?query=${query}`);
    assert.equal(page.status, 400, status);
    assert.match(await page.text(), new RegExp(`status &quot;${status}`));
    const latest = await fx.fetch(`/search/latest?query=${query}`);
    assert.equal(latest.status, 400, status);
    assert.equal(
      (await latest.json()).error,
      `Cannot search: status "${status}" is not one of success, failed, failed-dependency, failed-other, canceled, pending`,
    );
  }
});

// Guix's own web site links its downloads this way, e.g.
// /search/latest/ISO-9660?query=spec:images+status:success+...
Deno.test("GET /search/latest/TYPE redirects to the newest match's product of that type", async () => {
  await using fx = await createFixture();
  const succeeded = fx.builds.succeeded;
  await fx.store.addBuildProducts(succeeded.id, [
    {
      type: "archive",
      fileSize: 10,
      path: `${succeeded.outputs[0].path}/a.tar`,
    },
  ]);
  const [product] = (await fx.store.getBuild(succeeded.id))!.products!;
  const query = encodeURIComponent(`status:success ${succeeded.nixName}`);
  const found = await fx.fetch(`/search/latest/archive?query=${query}`);
  assert.equal(found.status, 302);
  assert.equal(found.headers.get("location"), `/download/${product.id}`);
  // A plus stands for a space in the query, as in a form submission.
  const plus = await fx.fetch(
    `/search/latest/archive?query=status:success+${succeeded.nixName}`,
  );
  assert.equal(plus.headers.get("location"), `/download/${product.id}`);
  for (
    const path of [
      `/search/latest/ISO-9660?query=${query}`,
      "/search/latest/archive?query=zzz",
    ]
  ) {
    const response = await fx.fetch(path);
    assert.equal(response.status, 404, path);
    assert.equal(typeof (await response.json()).error, "string", path);
  }
  assert.equal((await fx.fetch("/search/latest/archive")).status, 400);
});

Deno.test("GET /workers/cards is the live fragment of the workers page", async () => {
  await using fx = await createFixture();
  const fragment = await (await fx.fetch("/workers/cards")).text();
  assert.ok(!fragment.includes("<html"));
  assert.ok(fragment.includes(`data-worker="w1"`));
  assert.ok(fragment.includes("1 connected worker, 1 busy"));
  await fx.store.removeWorker("w1", NOW);
  const after = await (await fx.fetch("/workers/cards")).text();
  assert.ok(!after.includes(`data-worker="w1"`));
  const page = await (await fx.fetch("/workers")).text();
  assert.ok(page.includes(`data-refresh="/workers/cards"`));
});

Deno.test("GET /build/ID/log redirects to the build page's log", async () => {
  await using fx = await createFixture();
  const response = await fx.fetch(`/build/${fx.builds.succeeded.id}/log`);
  assert.equal(response.status, 302);
  assert.equal(
    response.headers.get("location"),
    `/build/${fx.builds.succeeded.id}/details#log`,
  );
});

Deno.test("the specification forms render, escaped, with admin hints", async () => {
  await using fx = await createFixture();
  const add = await (await fx.fetch("/specification/add")).text();
  assert.ok(add.includes(`action="/admin/specification/add"`));
  assert.ok(add.includes("Admin actions are disabled"));
  const edit = await (await fx.fetch("/specification/edit/hello")).text();
  assert.ok(edit.includes(`value="https://git.example/guix.git"`));
  assert.ok(edit.includes(`name="x86_64-linux" checked`));
  assert.equal((await fx.fetch("/specification/edit/nope")).status, 404);
  await using admin = await createFixture({ app: { adminToken: "t" } });
  const jobset = await (await admin.fetch("/jobset/hello")).text();
  assert.ok(
    jobset.includes(`formaction="/admin/specification/hello/evaluate"`),
  );
  const build =
    await (await admin.fetch(`/build/${admin.builds.started.id}/details`))
      .text();
  assert.ok(
    build.includes(
      `formaction="/admin/build/${admin.builds.started.id}/cancel"`,
    ),
  );
  const plain = await (await fx.fetch(`/build/${fx.builds.started.id}/details`))
    .text();
  assert.ok(!plain.includes("formaction"));
});
