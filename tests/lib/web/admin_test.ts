import assert from "node:assert/strict";
import { createFixture } from "./_fixture.ts";
import { sameSecret } from "../../../lib/web/admin.ts";
import { specFromForm, specFromJson } from "../../../lib/web/spec_input.ts";

const TOKEN = "s3cret-token";
const bearer = { authorization: `Bearer ${TOKEN}` };

function specJson(name: string, extra: Record<string, unknown> = {}) {
  return {
    name,
    build: { packages: ["hello", "grep"] },
    channels: [{
      name: "guix",
      url: "https://git.example/guix.git",
      branch: "main",
      commit: false,
    }],
    "build-outputs": [],
    notifications: [],
    period: 600,
    priority: 2,
    systems: ["x86_64-linux"],
    ...extra,
  };
}

function postJson(body: unknown, headers = bearer): RequestInit {
  return {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: JSON.stringify(body),
  };
}

async function error(response: Response, status: number): Promise<string> {
  assert.equal(response.status, status);
  return ((await response.json()) as { error: string }).error;
}

Deno.test("admin routes are refused with 403 when no token is configured", async () => {
  await using fx = await createFixture();
  const message = await error(
    await fx.fetch(`/admin/build/${fx.builds.started.id}/cancel`, {
      method: "POST",
      headers: bearer,
    }),
    403,
  );
  assert.match(message, /admin actions are disabled/);
  assert.equal((await fx.store.getBuild(fx.builds.started.id))!.status, -1);
});

Deno.test("admin routes need the right token: 401 without, 403 when wrong", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const path = `/admin/build/${fx.builds.started.id}/cancel`;
  const cases: [RequestInit, number][] = [
    [{ method: "POST" }, 401],
    [{ method: "POST", headers: { authorization: "Basic abc" } }, 401],
    [{ method: "POST", headers: { authorization: "Bearer wrong" } }, 403],
    [{ method: "POST", headers: { authorization: `Bearer ${TOKEN}x` } }, 403],
    [{
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "token=nope",
    }, 403],
  ];
  for (const [init, status] of cases) {
    const response = await fx.fetch(path, init);
    const message = await error(response, status);
    assert.ok(!message.includes(TOKEN), "the token never appears in messages");
    if (status === 401) {
      assert.equal(response.headers.get("www-authenticate"), "Bearer");
    }
  }
  assert.equal((await fx.store.getBuild(fx.builds.started.id))!.status, -1);
});

Deno.test("an admin form from a browser gets its error as an HTML page, not JSON", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const form = (body: string): RequestInit => ({
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      accept: "text/html,application/xhtml+xml,*/*;q=0.8",
    },
    body,
  });
  const cases: [string, string, number, RegExp][] = [
    [
      `/admin/build/${fx.builds.started.id}/cancel`,
      "token=nope",
      403,
      /wrong admin token/,
    ],
    [
      `/admin/build/${fx.builds.started.id}/cancel`,
      "token=",
      401,
      /no admin token given/,
    ],
    ["/admin/build/999999/restart", `token=${TOKEN}`, 404, /999999/],
    ["/admin/specification/add", `token=${TOKEN}&name=`, 400, /name/],
    [
      "/admin/specification/add",
      `token=${TOKEN}&name=a%00b`,
      400,
      /a\\u0000b/,
    ],
  ];
  for (const [path, body, status, message] of cases) {
    const response = await fx.fetch(path, form(body));
    assert.equal(response.status, status, path);
    assert.equal(
      response.headers.get("content-type"),
      "text/html; charset=utf-8",
      path,
    );
    const page = await response.text();
    assert.match(page, new RegExp(`<h1>Error ${status}</h1>`));
    assert.match(page, message);
  }
  assert.equal((await fx.store.getBuild(fx.builds.started.id))!.status, -1);
});

Deno.test("POST /admin/build/ID/cancel and /restart change the build (Bearer and form)", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const id = fx.builds.started.id;
  const response = await fx.fetch(`/admin/build/${id}/cancel`, {
    method: "POST",
    headers: bearer,
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    build: id,
    action: "cancel",
    changed: true,
  });
  assert.equal((await fx.store.getBuild(id))!.status, 4);

  // A browser form: token field, redirect back to the build page.
  const form = await fx.fetch(`/admin/build/${fx.builds.failed.id}/restart`, {
    method: "POST",
    headers: {
      accept: "text/html",
      "content-type": "application/x-www-form-urlencoded",
    },
    body: new URLSearchParams({ token: TOKEN }).toString(),
  });
  assert.equal(form.status, 303);
  assert.equal(
    form.headers.get("location"),
    `/build/${fx.builds.failed.id}/details`,
  );
  assert.equal((await fx.store.getBuild(fx.builds.failed.id))!.status, -2);

  assert.equal(
    await error(
      await fx.fetch("/admin/build/9999/restart", {
        method: "POST",
        headers: bearer,
      }),
      404,
    ),
    "Build with ID 9999 doesn't exist.",
  );
  await error(
    await fx.fetch("/admin/build/abc/restart", {
      method: "POST",
      headers: bearer,
    }),
    400,
  );
});

Deno.test("POST /admin/evaluation/ID/cancel and /restart report how many builds changed", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const pendingBefore = (await fx.store.queue({ evaluation: 1 }, 1000)).length;
  const cancel = await fx.fetch("/admin/evaluation/1/cancel", {
    method: "POST",
    headers: bearer,
  });
  const canceled = (await cancel.json()) as { builds: number };
  assert.equal(canceled.builds, pendingBefore);
  assert.equal((await fx.store.queue({ evaluation: 1 }, 1000)).length, 0);
  const restart = await fx.fetch("/admin/evaluation/1/restart", {
    method: "POST",
    headers: bearer,
  });
  assert.ok(((await restart.json()) as { builds: number }).builds > 0);
  assert.ok((await fx.store.queue({ evaluation: 1 }, 1000)).length > 0);
  await error(
    await fx.fetch("/admin/evaluation/77/cancel", {
      method: "POST",
      headers: bearer,
    }),
    404,
  );
});

Deno.test("admin actions can be replaced, e.g. by the server's to reach workers", async () => {
  const calls: string[] = [];
  await using fx = await createFixture({
    app: {
      adminToken: TOKEN,
      actions: {
        cancelBuild: (id) => {
          calls.push(`cancel ${id}`);
          return Promise.resolve(true);
        },
        triggerEvaluation: (spec) => {
          calls.push(`evaluate ${spec}`);
          return Promise.resolve();
        },
      },
    },
  });
  const id = fx.builds.started.id;
  await (await fx.fetch(`/admin/build/${id}/cancel`, {
    method: "POST",
    headers: bearer,
  })).body?.cancel();
  const hook = await fx.fetch("/jobset/hello/hook/evaluate", {
    method: "POST",
    headers: bearer,
  });
  assert.deepEqual(await hook.json(), { jobset: "hello" });
  await (await fx.fetch("/admin/specification/hello/evaluate", {
    method: "POST",
    headers: bearer,
  })).body?.cancel();
  assert.deepEqual(calls, [`cancel ${id}`, "evaluate hello", "evaluate hello"]);
  assert.equal(
    await error(
      await fx.fetch("/jobset/nope/hook/evaluate", {
        method: "POST",
        headers: bearer,
      }),
      404,
    ),
    `Jobset "nope" not found.`,
  );
});

Deno.test("the evaluation hook takes a forge's push: its token in the URL, its JSON body unread whatever its size", async () => {
  const calls: string[] = [];
  await using fx = await createFixture({
    app: {
      adminToken: TOKEN,
      actions: {
        triggerEvaluation: (spec) => {
          calls.push(`evaluate ${spec}`);
          return Promise.resolve();
        },
      },
    },
  });
  // A push of many commits: past the admin actions' 64 KiB body limit.
  const push = JSON.stringify({
    ref: "refs/heads/master",
    commits: Array.from({ length: 2000 }, (_, i) => ({
      id: i.toString(16).padStart(40, "0"),
      message: "gnu: Update package.",
    })),
  });
  assert.ok(push.length > 64 * 1024, `${push.length} bytes`);
  const hook = (query: string) =>
    fx.fetch(`/jobset/hello/hook/evaluate${query}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: push,
    });
  const answered = await hook(`?token=${TOKEN}`);
  assert.equal(answered.status, 200);
  assert.deepEqual(await answered.json(), { jobset: "hello" });
  assert.equal(
    await error(await hook("?token=guess"), 403),
    "Cannot run admin action: wrong admin token",
  );
  assert.equal(
    await error(await hook(""), 401),
    "Cannot run admin action: no admin token given",
  );
  assert.deepEqual(calls, ["evaluate hello"]);
});

Deno.test("triggering an evaluation answers what will come of it, and logs it", async () => {
  await using fx = await createFixture({
    app: {
      adminToken: TOKEN,
      actions: {
        triggerEvaluation: (spec) =>
          Promise.resolve(
            spec === "hello"
              ? { triggered: false, note: "the specification is inactive" }
              : undefined,
          ),
      },
    },
  });
  const response = await fx.fetch("/admin/specification/hello/evaluate", {
    method: "POST",
    headers: bearer,
  });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    jobset: "hello",
    triggered: false,
    note: "the specification is inactive",
  });
  assert.ok(
    fx.logLines.some((line) =>
      line.includes("info evaluation not triggered name=hello") &&
      line.includes('note="the specification is inactive"')
    ),
    fx.logLines.join("\n"),
  );
});

Deno.test("triggering an evaluation without an evaluator is a clear 503", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const message = await error(
    await fx.fetch("/jobset/hello/hook/evaluate", {
      method: "POST",
      headers: bearer,
    }),
    503,
  );
  assert.match(message, /no evaluator/);
});

Deno.test("POST /admin/specification/add, /edit and delete manage specifications (JSON)", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const added = await fx.fetch(
    "/admin/specification/add",
    postJson(specJson("grep")),
  );
  assert.deepEqual(await added.json(), { specification: "grep", saved: true });
  const stored = (await fx.store.getSpecification("grep"))!;
  assert.deepEqual(stored.build, {
    type: "packages",
    params: ["hello", "grep"],
  });
  assert.equal(stored.channels[0].branch, "main");
  assert.equal(stored.channels[0].commit, null);
  assert.equal(stored.priority, 2);

  await error(
    await fx.fetch("/admin/specification/add", postJson(specJson("grep"))),
    409,
  );
  // PostgreSQL cannot store a NUL: refused alike on both backends, named.
  const nul = await fx.fetch(
    "/admin/specification/add",
    postJson(specJson("sed", {
      channels: [{ name: "guix", url: "file:///srv/a\0b", branch: "main" }],
    })),
  );
  assert.equal(nul.status, 400);
  assert.match((await nul.json()).error, /channels\[0\]\.url.*a\\u0000b/);
  assert.equal(await fx.store.getSpecification("sed"), null);
  await (await fx.fetch(
    "/admin/specification/edit",
    postJson(specJson("grep", { priority: 7 })),
  )).body?.cancel();
  assert.equal((await fx.store.getSpecification("grep"))!.priority, 7);
  await error(
    await fx.fetch("/admin/specification/edit", postJson(specJson("zzz"))),
    404,
  );

  const deleted = await fx.fetch("/admin/specification/grep/delete", {
    method: "POST",
    headers: bearer,
  });
  assert.deepEqual(await deleted.json(), {
    specification: "grep",
    deleted: true,
  });
  assert.equal(await fx.store.getSpecification("grep"), null);
  await error(
    await fx.fetch("/admin/specifications/delete/grep", {
      method: "POST",
      headers: bearer,
    }),
    404,
  );
});

Deno.test("POST /admin/specification/add accepts Cuirass's form fields", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const form = new URLSearchParams();
  for (
    const [key, value] of [
      ["token", TOKEN],
      ["name", "my-spec"],
      ["build", "channels"],
      ["param-select", "guix"],
      ["param-input", "extra, more"],
      ["channel-name", "guix"],
      ["channel-url", "https://git.example/guix.git"],
      ["channel-branch", "master"],
      ["channel-name", "extra"],
      ["channel-url", "https://git.example/extra.git"],
      ["channel-branch", ""],
      ["channel-name", ""],
      ["channel-url", ""],
      ["channel-branch", ""],
      ["period", "60"],
      ["priority", "0"],
      ["x86_64-linux", "on"],
      ["aarch64-linux", "on"],
    ]
  ) form.append(key, value);
  const response = await fx.fetch("/admin/specification/add", {
    method: "POST",
    headers: {
      accept: "text/html",
      "content-type": "application/x-www-form-urlencoded",
    },
    body: form.toString(),
  });
  assert.equal(response.status, 303);
  assert.equal(response.headers.get("location"), "/jobset/my-spec");
  const spec = (await fx.store.getSpecification("my-spec"))!;
  assert.deepEqual(spec.build, {
    type: "channels",
    params: ["guix", "extra", "more"],
  });
  assert.deepEqual(spec.channels.map((c) => [c.name, c.branch]), [
    ["guix", "master"],
    ["extra", "master"],
  ]);
  assert.deepEqual(spec.systems, ["x86_64-linux", "aarch64-linux"]);
  assert.equal(spec.period, 60);
  assert.equal(spec.priority, 0);
});

Deno.test("a specification form holding a NUL in any field is a 400 naming the field and the escaped value, not a 500", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const fields = (change: Record<string, string>) =>
    new URLSearchParams({
      token: TOKEN,
      name: "nul-form",
      build: "packages",
      "param-input": "hello",
      "channel-name": "guix",
      "channel-url": "https://git.example/guix.git",
      "channel-branch": "main",
      systems: "x86_64-linux",
      ...change,
    }).toString();
  // The store refuses a NUL as a backstop (PostgreSQL cannot keep one);
  // the form must name the field before it gets there.
  const cases: [Record<string, string>, RegExp][] = [
    [{ "channel-branch": "ma\0in" }, /channels\[0\]\.branch.*"ma\\u0000in"/],
    [{ "channel-name": "gu\0ix" }, /channels\[0\]\.name.*"gu\\u0000ix"/],
    [
      { "channel-url": "https://git.example/g\0.git" },
      /channels\[0\]\.url.*"https:\/\/git\.example\/g\\u0000\.git"/,
    ],
    [{ "param-input": "hel\0lo" }, /build\.params\[0\].*"hel\\u0000lo"/],
  ];
  for (
    const path of ["/admin/specification/add", "/admin/specification/edit"]
  ) {
    for (const [change, message] of cases) {
      const response = await fx.fetch(path, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: fields(change),
      });
      assert.match(
        await error(response, 400),
        message,
        `${path} ${JSON.stringify(change)}`,
      );
    }
  }
  assert.equal(await fx.store.getSpecification("nul-form"), null);
});

Deno.test("specFromJson() and specFromForm() reject bad fields with 400 naming the field", () => {
  const good = specJson("ok");
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["no name", { name: "" }, /"name" is not a non-empty string/],
    ["slash in name", { name: "a/b" }, /"name"/],
    ["long name", { name: "a".repeat(101) }, /"name"/],
    ["bad build", { build: "everything" }, /"build"/],
    ["priority 10", { priority: 10 }, /"priority"/],
    ["priority text", { priority: "1" }, /"priority"/],
    ["negative period", { period: -1 }, /"period"/],
    ["no systems", { systems: [] }, /"systems"/],
    ["bad system", { systems: ["x86 64"] }, /"systems"/],
    ["no channels", { channels: [] }, /"channels"/],
    ["channel without url", { channels: [{ name: "g" }] }, /channels\[0\]/],
    ["huge list", { systems: Array(300).fill("x86_64-linux") }, /"systems"/],
  ];
  for (const [label, change, pattern] of cases) {
    assert.throws(
      () => specFromJson({ ...good, ...change }),
      (e: Error & { status?: number }) =>
        e.status === 400 && pattern.test(e.message),
      label,
    );
  }
  assert.throws(() => specFromJson([]), /from JSON: not an object/);
  assert.throws(
    () => specFromForm(new URLSearchParams("name=x&build=hello&period=1e9")),
    /"period"/,
  );
});

Deno.test("the form and JSON refuse what the specification readers refuse, naming the field and value", async () => {
  const formFields = (entries: [string, string][]) => {
    const form = new URLSearchParams();
    const keys = new Set(entries.map(([key]) => key));
    const base: [string, string][] = [
      ["name", "checked"],
      ["build", "hello"],
      ["channel-name", "guix"],
      ["channel-url", "https://git.example/guix.git"],
      ["channel-branch", "main"],
      ["systems", "x86_64-linux"],
    ];
    for (const [key, value] of base) {
      if (!keys.has(key)) form.append(key, value);
    }
    for (const [key, value] of entries) form.append(key, value);
    return form;
  };
  const cases: [string, [string, string][], Record<string, unknown>, RegExp][] =
    [
      [
        "custom module written without parentheses",
        [["build", "custom"], ["param-input", "gnu ci"]],
        { build: { custom: ["gnu ci"] } },
        /"build" has a custom module "gnu ci" that is not a module name/,
      ],
      [
        "branch read as an option",
        [["channel-branch", "-x"]],
        {
          channels: [{ name: "guix", url: "https://g.example/", branch: "-x" }],
        },
        /channels\[0\]: channel "guix" has a branch .*: "-x"/,
      ],
      [
        "URL read as an option",
        [["channel-url", "--upload-pack=touch x"]],
        { channels: [{ name: "guix", url: "--upload-pack=touch x" }] },
        /channels\[0\]: channel "guix" has a URL git cannot be given: "--upload-pack=touch x"/,
      ],
      [
        "channel named twice",
        [
          ["channel-name", "guix"],
          ["channel-url", "https://git.example/a.git"],
          ["channel-name", "guix"],
          ["channel-url", "https://git.example/b.git"],
        ],
        {
          channels: [
            { name: "guix", url: "https://git.example/a.git" },
            { name: "guix", url: "https://git.example/b.git" },
          ],
        },
        /names channel "guix" twice/,
      ],
      [
        "system named twice",
        [["x86_64-linux", "on"], ["systems", "x86_64-linux"]],
        { systems: ["x86_64-linux", "x86_64-linux"] },
        /"systems" names "x86_64-linux" twice/,
      ],
    ];
  const isBad = (pattern: RegExp) => (e: Error & { status?: number }) =>
    e.status === 400 && pattern.test(e.message);
  for (const [label, entries, json, pattern] of cases) {
    assert.throws(
      () => specFromForm(formFields(entries)),
      isBad(pattern),
      label,
    );
    assert.throws(
      () => specFromJson(specJson("checked", json)),
      isBad(pattern),
      `${label} (JSON)`,
    );
  }
  // JSON alone has notifications.
  assert.throws(
    () =>
      specFromJson(specJson("mail", {
        notifications: [{
          type: "email",
          from: "not an address",
          to: "ops@example.org",
          server: "smtp://127.0.0.1",
        }],
      })),
    isBad(/"from" holds "not an address", not an address/),
  );
  // A module written as Guile writes it is kept in that form.
  assert.deepEqual(
    specFromForm(
      formFields([["build", "custom"], ["param-input", "(gnu  ci)"]]),
    )
      .build,
    { type: "custom", params: ["(gnu ci)"] },
  );

  // Through the route: a 400, and nothing saved.
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const body = formFields([["token", TOKEN], ["channel-branch", "-x"]]);
  const response = await fx.fetch("/admin/specification/add", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: body.toString(),
  });
  assert.match(await error(response, 400), /branch .*: "-x"/);
  assert.equal(await fx.store.getSpecification("checked"), null);
});

Deno.test("specFromForm() authenticates Guix's own channel, as the file readers do", () => {
  const form = (url: string) =>
    specFromForm(
      new URLSearchParams({
        name: "g",
        build: "hello",
        "channel-name": "guix",
        "channel-url": url,
        systems: "x86_64-linux",
      }),
    );
  assert.equal(
    form("https://git.guix.gnu.org/guix.git").channels[0].introduction?.commit,
    "9edb3f66fd807b096b48283debdcddccfea34bad",
  );
  assert.equal(
    form("https://git.example/guix.git").channels[0].introduction,
    null,
  );
});

Deno.test("specFromJson() reads like the specifications file reader: introductions, notifications", () => {
  const introduced = specFromJson(specJson("intro", {
    channels: [{
      name: "mine",
      url: "https://git.example/mine.git",
      introduction: {
        commit: "0123456789abcdef0123456789abcdef01234567",
        signer: "bbb02ddf2ceaf6a80d1de643a2a06df2a33a54fa",
      },
    }, { name: "guix", url: "https://git.guix.gnu.org/guix.git" }],
  }));
  assert.deepEqual(
    introduced.channels.map((channel) => channel.introduction?.signer),
    [
      "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA",
      "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA",
    ],
    "an explicit introduction, and Guix's own for the Guix channel",
  );
  assert.throws(
    () => specFromJson(specJson("sms", { notifications: [{ type: "sms" }] })),
    (e: Error & { status?: number }) =>
      e.status === 400 && /unknown entry \{"type":"sms"\}/.test(e.message),
  );
  assert.throws(
    () =>
      specFromJson(specJson("big", {
        channels: [{ name: "g", url: "https://x/" + "a".repeat(600) }],
      })),
    /"channels\[0\]": ".*" is longer than 500 characters/,
  );
});

Deno.test("an admin body over 64 KiB is refused with 413", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const response = await fx.fetch("/admin/specification/add", {
    method: "POST",
    headers: { ...bearer, "content-type": "application/json" },
    body: "x".repeat(70 * 1024),
  });
  await error(response, 413);
});

Deno.test("sameSecret() compares whole secrets", async () => {
  assert.equal(await sameSecret("abc", "abc"), true);
  assert.equal(await sameSecret("abc", "abd"), false);
  assert.equal(await sameSecret("abc", "abcd"), false);
  assert.equal(await sameSecret("", "a"), false);
});

/**
 * The fields a browser posts for the specification form of `page`: inputs
 * with their values, checked checkboxes ("on" unless they carry a value),
 * the selected option of each select.
 */
function formFields(page: string): URLSearchParams {
  const start = page.indexOf('<form class="spec-form"');
  const form = page.slice(start, page.indexOf("</form>", start));
  const attribute = (tag: string, name: string) => {
    const found = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
    return found === null ? null : unescapeHtml(found[1]);
  };
  const fields = new URLSearchParams();
  for (const [tag] of form.matchAll(/<input\b[^>]*>/g)) {
    const name = attribute(tag, "name");
    if (name === null) continue;
    if (attribute(tag, "type") === "checkbox") {
      if (/\schecked\b/.test(tag)) {
        fields.append(name, attribute(tag, "value") ?? "on");
      }
    } else {
      fields.append(name, attribute(tag, "value") ?? "");
    }
  }
  for (
    const [, name, options] of form.matchAll(
      /<select name="([^"]+)">([\s\S]*?)<\/select>/g,
    )
  ) {
    const selected = /<option selected>([^<]*)<\/option>/.exec(options);
    if (selected !== null) fields.append(name, unescapeHtml(selected[1]));
  }
  return fields;
}

function unescapeHtml(text: string): string {
  return text.replace(/&quot;/g, '"').replace(/&#39;/g, "'")
    .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

Deno.test("saving the edit form of a specification unchanged changes nothing: pinned commits, introductions, systems the form does not list, inactivity", async () => {
  await using fx = await createFixture({ app: { adminToken: TOKEN } });
  const spec = {
    name: "pinned",
    build: { type: "packages", params: ["hello"] },
    channels: [{
      name: "guix",
      url: "https://git.example/guix.git",
      branch: "master",
      commit: "0123456789abcdef0123456789abcdef01234567",
      introduction: {
        commit: "9edb3f66fd807b096b48283debdcddccfea34bad",
        signer: "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA",
      },
    }, {
      name: "extra",
      url: "https://git.example/extra.git",
      branch: "main",
      commit: null,
      introduction: {
        commit: "aaaabbbbccccddddeeeeffff0000111122223333",
        signer: "1234 5678 9ABC DEF0 1234  5678 9ABC DEF0 1234 5678",
      },
    }],
    buildOutputs: [],
    notifications: [],
    period: 600,
    priority: 3,
    systems: ["x86_64-linux", "mips64el-linux"],
    isActive: false,
  };
  await fx.store.upsertSpecification(spec);
  const page = await (await fx.fetch("/specification/edit/pinned")).text();
  const fields = formFields(page);
  fields.set("token", TOKEN);
  const saved = await fx.fetch("/admin/specification/edit", {
    method: "POST",
    headers: {
      accept: "text/html",
      "content-type": "application/x-www-form-urlencoded",
    },
    body: fields.toString(),
  });
  assert.equal(saved.status, 303, await saved.text());
  assert.deepEqual(await fx.store.getSpecification("pinned"), spec);

  // A channel given another branch is no longer pinned to its commit.
  fields.set("channel-branch", "next");
  await fx.fetch("/admin/specification/edit", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: fields.toString(),
  });
  const moved = (await fx.store.getSpecification("pinned"))!.channels[0];
  assert.deepEqual([moved.branch, moved.commit], ["next", null]);
});
