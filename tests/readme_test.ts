// README.md against the tree it describes: its layout names every part of
// lib/, and its endpoint list the routes an operator asks first.

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const README = await Deno.readTextFile(new URL("README.md", ROOT));

Deno.test("README's layout names every directory of lib/", async () => {
  const layout = README.split("## Layout")[1] ?? "";
  for await (const entry of Deno.readDir(new URL("lib/", ROOT))) {
    if (!entry.isDirectory) continue;
    assert.match(
      layout,
      new RegExp(`\\blib/${entry.name}\\b`),
      `lib/${entry.name} is missing from README's layout`,
    );
  }
});

Deno.test("README lists the queue's explanations, as JSON and as a page", () => {
  for (const route of ["`/api/queue/reasons?nr=N`", "`/status`"]) {
    assert.ok(README.includes(route), `${route} is missing from README`);
  }
});

Deno.test("README links the web API reference where it lists the routes", () => {
  const api = README.split("### The JSON API")[1]?.split("\n## ")[0] ?? "";
  assert.ok(
    api.includes("[docs/web-api.md](docs/web-api.md)"),
    "README's JSON API section does not link docs/web-api.md",
  );
});

Deno.test("README says the lorica-* commands are compiled, and how to run them from a checkout", () => {
  const usage = README.split("## Usage")[1]?.split("```")[0] ?? "";
  assert.match(usage, /`deno task compile`/);
  assert.match(usage, /`deno run -A server\.ts`/);
});
