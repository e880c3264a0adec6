import assert from "node:assert/strict";
import { createFixture, job, NOW, spec, T0, XSS } from "./_fixture.ts";
import { randomDashboardId } from "../../../lib/web/dashboard_routes.ts";
import { LABELLED_TILES_MAX } from "../../../lib/web/pages/job_grid.ts";
import { type Build, buildStatusName } from "../../../lib/store/types.ts";

type Json = Record<string, unknown>;

async function json(response: Response, status = 200): Promise<Json> {
  assert.equal(response.status, status);
  assert.equal(response.headers.get("content-type"), "application/json");
  return await response.json();
}

async function page(response: Response, status = 200): Promise<string> {
  assert.equal(response.status, status);
  assert.equal(
    response.headers.get("content-type"),
    "text/html; charset=utf-8",
  );
  return await response.text();
}

function assertRedirect(response: Response, location: string): void {
  assert.equal(response.status, 302);
  assert.equal(response.headers.get("location"), location);
}

/** The job names of the grid's tiles, with their status class. */
function tiles(text: string): string[] {
  const grid = text.slice(
    text.indexOf(`<ul class="job-grid`),
    text.indexOf("</ul>", text.indexOf(`<ul class="job-grid`)),
  );
  return [
    ...grid.matchAll(
      /<a class="s-([a-z-]+)" href="\/build\/\d+\/details" title="([^"]*): /g,
    ),
  ]
    .map((match) => `${match[2]} ${match[1]}`);
}

/**
 * The grid of a system the specification does not build says so, naming
 * those it builds, instead of an empty "0 jobs" grid.
 */
function assertUnbuilt(text: string, system: string, builds: string): void {
  const notice = text.slice(text.indexOf(`id="unbuilt-system"`))
    .replace(/\s+/g, " ");
  assert.ok(
    notice.startsWith(
      `id="unbuilt-system">Specification hello does not build ${system}; it builds ${builds}.</div>`,
    ),
    notice.slice(0, 160),
  );
  assert.ok(!text.includes("0 jobs"));
  assert.ok(!text.includes(`No jobs for ${system}.`));
  // Still the page, with the systems to switch to.
  assert.ok(text.includes(`<strong>${system}</strong>`));
}

Deno.test("GET /eval/ID/dashboard of a system the specification no longer builds shows its jobs, saying so", async () => {
  await using fx = await createFixture();
  await fx.store.upsertSpecification({
    ...spec("hello"),
    systems: ["x86_64-linux"],
  });
  const arm = await page(
    await fx.fetch("/eval/1/dashboard?system=aarch64-linux"),
  );
  assert.equal(tiles(arm).length, 2);
  assert.ok(
    arm.replace(/\s+/g, " ").includes(
      "Specification hello does not build aarch64-linux any more (these jobs are from when it did); it builds x86_64-linux.",
    ),
  );
  assert.ok(arm.includes("2 jobs: "));
});

Deno.test("randomDashboardId() makes 16 letters and digits, different each time", () => {
  const ids = new Set(Array.from({ length: 200 }, randomDashboardId));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.match(id, /^[A-Za-z0-9]{16}$/);
});

Deno.test("GET /api/dashboard/register saves the names; /dashboard/ID redirects to its latest successful evaluation", async () => {
  await using fx = await createFixture();
  const body = await json(
    await fx.fetch(
      "/api/dashboard/register?spec=hello&names=job-0,%20broken,,nope",
    ),
  );
  assert.deepEqual(Object.keys(body), ["id"]);
  const id = body.id as string;
  assert.match(id, /^[A-Za-z0-9]{16}$/);
  assert.deepEqual(await fx.store.getDashboard(id), {
    id,
    specification: "hello",
    jobs: ["broken", "job-0", "nope"],
    lastUsed: NOW,
  });
  assertRedirect(await fx.fetch(`/dashboard/${id}`), `/eval/1/dashboard/${id}`);

  // A later successful evaluation is where it leads next.
  const later = await fx.store.addEvaluation("hello", [], T0 + 900);
  await fx.store.registerBuilds(later, [job(40, "job-0")], {
    priority: 1,
    now: T0 + 901,
  });
  assertRedirect(await fx.fetch(`/dashboard/${id}`), `/eval/1/dashboard/${id}`);
  await fx.store.setEvaluationStatus(later, 0, T0 + 902);
  assertRedirect(
    await fx.fetch(`/dashboard/${id}`),
    `/eval/${later}/dashboard/${id}`,
  );
});

Deno.test("GET /dashboard/ID keeps the query string across the redirect, encoded", async () => {
  await using fx = await createFixture();
  const { id } = await json(
    await fx.fetch("/api/dashboard/register?spec=hello&names=job-0"),
  );
  assertRedirect(
    await fx.fetch(`/dashboard/${id}?system=aarch64-linux`),
    `/eval/1/dashboard/${id}?system=aarch64-linux`,
  );
  // Every parameter, in order; reserved, spaced and non-ASCII values stay
  // one value each and the header stays ASCII.
  assertRedirect(
    await fx.fetch(
      `/dashboard/${id}?system=x86_64-linux&note=a%26b%3Dc&who=r%C3%A9mi%20x&<b>`,
    ),
    `/eval/1/dashboard/${id}?system=x86_64-linux&note=a%26b%3Dc&who=r%C3%A9mi+x&%3Cb%3E=`,
  );
  assertRedirect(
    await fx.fetch(`/dashboard/${id}?`),
    `/eval/1/dashboard/${id}`,
  );
});

Deno.test("GET /api/dashboard/register rejects bad parameters, naming them", async () => {
  await using fx = await createFixture();
  const cases: [string, number, string][] = [
    ["names=a", 400, `Cannot read parameter "spec": missing`],
    ["spec=&names=a", 400, `Cannot read parameter "spec": missing`],
    ["spec=hello", 400, `Cannot read parameter "names": missing`],
    [
      "spec=hello&names=",
      400,
      `Cannot read parameter "names": value "" holds no job name`,
    ],
    [
      "spec=hello&names=,%20,",
      400,
      `Cannot read parameter "names": value ", ," holds no job name`,
    ],
    [
      `spec=hello&names=a,${"x".repeat(201)}`,
      400,
      `Cannot read parameter "names": name "${
        "x".repeat(100)
      }…" is over 200 characters`,
    ],
    [
      `spec=hello&names=${Array.from({ length: 1001 }, (_, i) => i).join(",")}`,
      400,
      `Cannot read parameter "names": 1001 names, more than 1000`,
    ],
    [
      "spec=nope&names=a",
      404,
      `Specification "nope" doesn't exist.`,
    ],
  ];
  for (const [query, status, error] of cases) {
    assert.deepEqual(
      await json(await fx.fetch(`/api/dashboard/register?${query}`), status),
      { error },
      query,
    );
  }
  assert.ok(!fx.logLines.some((line) => line.includes(" error ")));
});

Deno.test("GET /api/dashboard/register draws a new id when one is taken", async () => {
  const ids = ["A".repeat(16), "A".repeat(16), "B".repeat(16)];
  await using fx = await createFixture({
    app: { dashboardId: () => ids.shift() ?? "A".repeat(16) },
  });
  const register = (names: string) =>
    fx.fetch(`/api/dashboard/register?spec=hello&names=${names}`);
  assert.deepEqual(await json(await register("job-1")), { id: "A".repeat(16) });
  assert.deepEqual(await json(await register("job-2")), { id: "B".repeat(16) });
  // Every id taken: a server fault, not the client's.
  assert.deepEqual(await json(await register("job-3"), 500), {
    error: "Internal server error",
  });
  assert.ok(
    fx.logLines.some((line) =>
      line.includes("http handler failed") && line.includes("were all taken")
    ),
  );
});

Deno.test("GET /api/dashboard/register answers the same id for the same names of a jobset; a view records its use once a minute", async () => {
  let now = NOW;
  await using fx = await createFixture({
    app: {
      clock: {
        now: () => now * 1000,
        monotonic: () => 0,
        sleep: () => Promise.resolve(),
      },
    },
  });
  const register = async (spec: string, names: string) =>
    (await json(
      await fx.fetch(
        `/api/dashboard/register?spec=${
          encodeURIComponent(spec)
        }&names=${names}`,
      ),
    )).id as string;
  const id = await register("hello", "job-0,job-1");
  // Another order, repeats, blanks: the same set of jobs, the same id.
  for (const names of ["job-1,job-0", "job-0,%20job-1,job-0,,"]) {
    assert.equal(await register("hello", names), id);
  }
  // Another set, or another jobset: a dashboard of its own.
  const others = [
    await register("hello", "job-0"),
    await register(XSS, "job-0,job-1"),
  ];
  assert.equal(new Set([id, ...others]).size, 3);
  assert.equal((await fx.store.getDashboard(id))?.lastUsed, NOW);

  const view = async () => {
    assertRedirect(
      await fx.fetch(`/dashboard/${id}`),
      `/eval/1/dashboard/${id}`,
    );
    assert.equal(
      (await fx.fetch(`/eval/1/dashboard/${id}`, {
        headers: { accept: "text/html" },
      })).status,
      200,
    );
    return (await fx.store.getDashboard(id))?.lastUsed;
  };
  now = NOW + 59;
  assert.equal(await view(), NOW);
  now = NOW + 60;
  assert.equal(await view(), NOW + 60);
  now = NOW + 200;
  assert.equal(await register("hello", "job-0,job-1"), id);
  assert.equal((await fx.store.getDashboard(id))?.lastUsed, NOW + 200);
});

Deno.test("GET /dashboard/ID answers 400 for a malformed id and 404 JSON for an unknown one", async () => {
  await using fx = await createFixture();
  const html = { headers: { accept: "text/html" } };
  assert.deepEqual(await json(await fx.fetch("/dashboard/abc", html), 400), {
    error: `Cannot read dashboard ID "abc": not 16 letters and digits`,
  });
  assert.deepEqual(
    await json(await fx.fetch(`/dashboard/${"Z".repeat(16)}`, html), 404),
    { error: `Dashboard with ID ${"Z".repeat(16)} doesn't exist.` },
  );
  // A dashboard of a jobset that never evaluated successfully.
  const { id } = await json(
    await fx.fetch(
      `/api/dashboard/register?spec=${encodeURIComponent(XSS)}&names=a`,
    ),
  );
  assert.deepEqual(await json(await fx.fetch(`/dashboard/${id}`), 404), {
    error: `Specification ${JSON.stringify(XSS)} has no successful evaluation.`,
  });
});

Deno.test("GET /eval/latest/dashboard redirects to the latest successful evaluation's dashboard", async () => {
  await using fx = await createFixture();
  assertRedirect(
    await fx.fetch("/eval/latest/dashboard?spec=hello"),
    "/eval/1/dashboard",
  );
  assertRedirect(
    await fx.fetch("/eval/latest/dashboard?spec=hello&system=aarch64-linux"),
    "/eval/1/dashboard?system=aarch64-linux",
  );
  assert.deepEqual(
    await json(
      await fx.fetch("/eval/latest/dashboard?system=x86_64-linux"),
      400,
    ),
    { error: `Cannot read parameter "spec": missing` },
  );
  assert.deepEqual(
    await json(
      await fx.fetch("/eval/latest/dashboard?spec=hello&system=%3Cb%3E"),
      400,
    ),
    {
      error:
        `Cannot read parameter "system": value "<b>" is not a system type such as "x86_64-linux"`,
    },
  );
  assert.deepEqual(
    await json(
      await fx.fetch(`/eval/latest/dashboard?spec=${encodeURIComponent(XSS)}`),
      404,
    ),
    {
      error: `Specification ${
        JSON.stringify(XSS)
      } has no successful evaluation.`,
    },
  );
});

Deno.test("GET /eval/ID/dashboard shows one system's jobs as tiles coloured by status", async () => {
  await using fx = await createFixture();
  const x86 = await page(await fx.fetch("/eval/1/dashboard"));
  const shown = tiles(x86);
  // x86_64-linux by default, every job in name order, by status.
  assert.equal(shown.length, 10);
  const byName = new Map(
    shown.map((tile) => tile.split(" ") as [string, string]),
  );
  for (
    const [role, status] of [
      ["succeeded", "succeeded"],
      ["failed", "failed"],
      ["failedOther", "failed-other"],
      ["canceled", "canceled"],
      ["started", "started"],
      ["submitted", "submitted"],
    ]
  ) {
    assert.equal(byName.get(fx.builds[role].jobName), status, role);
    assert.ok(x86.includes(`href="/build/${fx.builds[role].id}/details"`));
  }
  assert.deepEqual([...byName.keys()], [...byName.keys()].sort());
  assert.ok(x86.includes("<strong>x86_64-linux</strong>"));
  assert.ok(x86.includes(`href="/eval/1/dashboard?system=aarch64-linux"`));
  assert.ok(
    x86.includes("10 jobs: 1 succeeded, 2 failed, 6 pending, 1 canceled"),
  );

  const arm = await page(
    await fx.fetch("/eval/1/dashboard?system=aarch64-linux"),
  );
  assert.deepEqual(tiles(arm), [
    "broken failed",
    "needs-broken failed-dependency",
  ]);
  assert.ok(arm.includes("Failed jobs (2)"));

  // A specification without x86_64-linux: its first system.
  await fx.store.upsertSpecification({
    ...spec("hello"),
    systems: ["aarch64-linux", "x86_64-linux"].slice(0, 1),
  });
  assert.deepEqual(
    tiles(await page(await fx.fetch("/eval/1/dashboard"))),
    tiles(arm),
  );
  const none = await page(
    await fx.fetch("/eval/1/dashboard?system=i686-linux"),
  );
  assertUnbuilt(none, "i686-linux", "aarch64-linux");
});

Deno.test("GET /eval/ID/dashboard escapes names and answers bad ids as other pages do", async () => {
  await using fx = await createFixture();
  const xss = await page(await fx.fetch("/eval/2/dashboard"));
  assert.equal(tiles(xss).length, 1);
  assert.ok(!xss.includes("<script>alert"));
  assert.ok(xss.includes("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
  const html = { headers: { accept: "text/html" } };
  const missing = await page(await fx.fetch("/eval/99/dashboard", html), 404);
  assert.ok(missing.includes("Evaluation with ID 99 doesn&#39;t exist."));
  const bad = await page(await fx.fetch("/eval/abc/dashboard", html), 400);
  assert.ok(bad.includes("Cannot read evaluation ID: value &quot;abc&quot;"));
  const system = await page(
    await fx.fetch(`/eval/1/dashboard?system=${encodeURIComponent(XSS)}`),
    400,
  );
  assert.ok(!system.includes("<script>alert"));
  assert.ok(system.includes(`Cannot read parameter &quot;system&quot;`));
});

Deno.test("GET /eval/ID/dashboard draws small labelled squares beyond 300 jobs", async () => {
  await using fx = await createFixture();
  const id = await fx.store.addEvaluation("hello", [], T0 + 900);
  const count = LABELLED_TILES_MAX + 1;
  await fx.store.registerBuilds(
    id,
    Array.from({ length: count }, (_, i) => job(100 + i, `many-${i}`)),
    { priority: 5, now: T0 + 901 },
  );
  const text = await page(await fx.fetch(`/eval/${id}/dashboard`));
  assert.equal(tiles(text).length, count);
  assert.ok(text.includes(`<ul class="job-grid">`));
  assert.ok(text.includes(`aria-label="many-0: scheduled"></a>`));
  assert.ok(text.includes(`Pending jobs (${count})`));
});

Deno.test("GET /eval/ID/dashboard/DID shows the saved names on one system, chosen as on the whole grid, and those missing", async () => {
  await using fx = await createFixture();
  const names = ["job-0", "broken", "nope", XSS].map(encodeURIComponent);
  const { id } = await json(
    await fx.fetch(`/api/dashboard/register?spec=hello&names=${names}`),
  );
  // x86_64-linux by default, as on the whole grid.
  const text = await page(await fx.fetch(`/eval/1/dashboard/${id}`));
  assert.deepEqual(tiles(text), [`job-0 ${buildStatus(fx, "job-0")}`]);
  assert.ok(text.includes(`Jobs of saved dashboard <code>${id}</code>`));
  assert.ok(text.includes(`href="/dashboard/${id}"`));
  // A name of another system is not missing; in name order, as the tiles.
  assert.ok(
    text.includes(
      "Not jobs of this evaluation: <code>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</code>, <code>nope</code>.",
    ),
  );
  assert.ok(!text.includes("<script>alert"));
  // The system choice stays on this dashboard.
  assert.ok(text.includes("<strong>x86_64-linux</strong>"));
  assert.ok(
    text.includes(`href="/eval/1/dashboard/${id}?system=aarch64-linux"`),
  );

  // /dashboard/ID keeps `system` across its redirect, and the page honours
  // it: the tiles are what /api/jobs answers for those names and system.
  const redirected = await fx.fetch(`/dashboard/${id}?system=aarch64-linux`);
  assertRedirect(redirected, `/eval/1/dashboard/${id}?system=aarch64-linux`);
  const arm = await page(
    await fx.fetch(redirected.headers.get("location")!),
  );
  assert.deepEqual(tiles(arm), ["broken failed"]);
  assert.ok(arm.includes("<strong>aarch64-linux</strong>"));
  assert.ok(arm.includes("1 job: 0 succeeded, 1 failed, 0 pending"));
  const api = await fx.fetch(
    `/api/jobs?evaluation=1&names=${names}&system=aarch64-linux`,
  );
  assert.deepEqual(
    ((await api.json()) as { name: string }[]).map((job) => job.name),
    ["broken"],
  );
  const none = await page(
    await fx.fetch(`/eval/1/dashboard/${id}?system=i686-linux`),
  );
  assertUnbuilt(none, "i686-linux", "x86_64-linux, aarch64-linux");
  await page(
    await fx.fetch(`/eval/1/dashboard/${id}?system=bad%20system`, {
      headers: { accept: "text/html" },
    }),
    400,
  );

  // A specification without x86_64-linux: its first system.
  await fx.store.upsertSpecification({
    ...spec("hello"),
    systems: ["aarch64-linux"],
  });
  assert.deepEqual(
    tiles(await page(await fx.fetch(`/eval/1/dashboard/${id}`))),
    ["broken failed"],
  );

  const html = { headers: { accept: "text/html" } };
  await page(await fx.fetch("/eval/1/dashboard/abc", html), 400);
  const unknown = await page(
    await fx.fetch(`/eval/1/dashboard/${"Z".repeat(16)}`, html),
    404,
  );
  assert.ok(unknown.includes(`Dashboard with ID ${"Z".repeat(16)}`));
  await page(await fx.fetch(`/eval/99/dashboard/${id}`, html), 404);
});

Deno.test("the home, jobset and evaluation pages link to the dashboard", async () => {
  await using fx = await createFixture();
  for (const path of ["/", "/jobset/hello", "/eval/1"]) {
    const text = await page(await fx.fetch(path));
    assert.ok(text.includes(`href="/eval/1/dashboard"`), path);
  }
});

/** The status class of the grid tile of job `name` on the whole grid. */
function buildStatus(fx: { builds: Record<string, Build> }, name: string) {
  const build = Object.values(fx.builds).find((b) => b.jobName === name);
  assert.ok(build, `no build of ${name}`);
  return buildStatusName(build.status);
}
