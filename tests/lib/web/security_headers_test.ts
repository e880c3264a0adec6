import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createFixture, writeLog } from "./_fixture.ts";
import { CONTENT_SECURITY_POLICY } from "../../../lib/web/security_headers.ts";

/** Every kind of answer: pages, JSON, logs, SVG, RSS, errors, redirects. */
function paths(builds: Record<string, { id: number }>): string[] {
  return [
    "/",
    "/workers",
    `/build/${builds.started.id}/details`,
    `/build/${builds.succeeded.id}`,
    `/build/${builds.succeeded.id}/log/raw`,
    `/build/${builds.succeeded.id}/log`,
    "/api/latestbuilds?nr=5",
    "/api/latestbuilds?nr=0",
    "/jobset/hello/badge.svg",
    "/events/rss/",
    "/metrics",
    "/favicon.ico",
    "/no/such/page",
    "/build/%3Cscript%3E",
  ];
}

Deno.test("every response forbids sniffing and framing and carries the page policy", async () => {
  await using fx = await createFixture({ app: { adminToken: "t" } });
  for (const path of paths(fx.builds)) {
    for (const accept of ["text/html", "application/json"]) {
      const response = await fx.fetch(path, { headers: { accept } });
      await response.body?.cancel();
      const { headers } = response;
      const where = `${path} (${accept}, ${response.status})`;
      assert.equal(headers.get("x-content-type-options"), "nosniff", where);
      assert.equal(headers.get("x-frame-options"), "DENY", where);
      assert.equal(
        headers.get("content-security-policy"),
        CONTENT_SECURITY_POLICY,
        where,
      );
    }
  }
  // A refused admin action and a wrong method, as a browser form sends them.
  for (
    const [path, method] of [
      [`/admin/build/${fx.builds.started.id}/cancel`, "POST"],
      ["/admin/build/1/cancel", "GET"],
    ]
  ) {
    const response = await fx.fetch(path, {
      method,
      headers: {
        accept: "text/html",
        "content-type": "application/x-www-form-urlencoded",
      },
      body: method === "POST" ? "token=wrong" : undefined,
    });
    await response.body?.cancel();
    assert.ok(response.status >= 400, `${path}: ${response.status}`);
    assert.equal(response.headers.get("x-frame-options"), "DENY", path);
    assert.match(
      response.headers.get("content-security-policy") ?? "",
      /frame-ancestors 'none'/,
    );
  }
});

Deno.test("the page policy admits exactly the scripts the pages embed", async () => {
  await using fx = await createFixture();
  await writeLog(
    fx.logDir,
    fx.builds.started.derivation,
    new TextEncoder().encode("building\n"),
  );
  const policy = CONTENT_SECURITY_POLICY.split("; ");
  const scriptSrc = policy.find((d) => d.startsWith("script-src "))!;
  assert.doesNotMatch(scriptSrc, /'unsafe-inline'|'self'|\*/);
  for (
    const path of ["/workers", `/build/${fx.builds.started.id}/details`]
  ) {
    const page = await (await fx.fetch(path)).text();
    const scripts = [...page.matchAll(/<script>([\s\S]*?)<\/script>/g)];
    assert.equal(scripts.length, 1, path);
    const hash = createHash("sha256").update(scripts[0][1], "utf8")
      .digest("base64");
    assert.ok(scriptSrc.includes(`'sha256-${hash}'`), path);
  }
});
