// Build products (cuirass.md 5.9) against a real store, real files and
// real GC root links; then served by GET /download/ID (C19).

import assert from "node:assert/strict";
import {
  productPath,
  registerBuildProducts,
} from "../../../lib/server/build_products.ts";
import { GcRoots } from "../../../lib/guix/gc_roots.ts";
import { createLogger } from "../../../lib/log.ts";
import { systemClock } from "../../../lib/clock.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { createWebApp } from "../../../lib/web/app.ts";
import { specification } from "../store/store_contract.ts";
import type { Build } from "../../../lib/store/types.ts";

Deno.test("productPath() joins a relative path and refuses to leave the output", () => {
  const out = "/gnu/store/abc-hello";
  assert.equal(productPath(out, ""), out);
  assert.equal(productPath(out, "share/doc/./x.pdf"), `${out}/share/doc/x.pdf`);
  assert.equal(productPath(out, "/etc/passwd"), null);
  assert.equal(productPath(out, "../def-other/secret"), null);
  assert.equal(productPath(out, "a/../../x"), null);
});

Deno.test("registerBuildProducts() records the matching outputs' files with their sizes and roots them; GET /download/ID serves them", async () => {
  const root = await Deno.makeTempDir({ prefix: "lorica-products-" });
  const storeDir = `${root}/store`;
  const out = `${storeDir}/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12`;
  const doc = `${storeDir}/0123456789abcdfghijklmnpqrsvwxyy-hello-2.12-doc`;
  await Deno.mkdir(`${out}/bin`, { recursive: true });
  await Deno.mkdir(doc, { recursive: true });
  await Deno.writeTextFile(`${out}/bin/hello`, "#!/bin/sh\necho hello\n");
  await Deno.writeTextFile(`${doc}/manual.pdf`, "%PDF-1.4");
  const lines: string[] = [];
  const logger = createLogger({
    timestamps: false,
    sink: (line) => lines.push(line),
  });
  const store = openSqliteStore(`${root}/db.sqlite`);
  try {
    await store.upsertSpecification({
      ...specification("hello"),
      buildOutputs: [
        { job: "^hello\\.", type: "binary", output: "out", path: "bin/hello" },
        { job: "hello", type: "manual", output: "doc", path: "manual.pdf" },
        { job: "hello", type: "absent", output: "out", path: "no/such" },
        { job: "hello", type: "escape", output: "out", path: "../../etc" },
        { job: "(", type: "bad", output: "out", path: "" },
        { job: "^grep", type: "other job", output: "out", path: "" },
      ],
    });
    const evaluation = await store.addEvaluation("hello", [], 1);
    await store.registerBuilds(evaluation, [{
      name: "hello.x86_64-linux",
      derivation: `${storeDir}/0123456789abcdfghijklmnpqrsvwxyw-hello-2.12.drv`,
      system: "x86_64-linux",
      nixName: "hello-2.12",
      outputs: [{ name: "out", path: out }, { name: "doc", path: doc }],
      inputs: [],
      timeout: 0,
      maxSilent: 0,
    }], { priority: 9, now: 1 });
    const build: Build = (await store.queue({}, 1))[0];
    const gcRoots = new GcRoots({
      directory: `${root}/gcroots`,
      storeDir,
      clock: systemClock,
      logger,
    });

    assert.equal(
      await registerBuildProducts(build, { store, logger, gcRoots }),
      2,
    );
    const products = (await store.getBuild(build.id))!.products!;
    assert.deepEqual(products.map((p) => [p.type, p.path, p.fileSize]), [
      ["binary", `${out}/bin/hello`, 21],
      ["manual", `${doc}/manual.pdf`, 8],
    ]);
    assert.deepEqual((await gcRoots.list()).sort(), [out, doc].sort());
    for (const reason of ["no such file", "the path leaves the output"]) {
      assert.ok(
        lines.some((l) =>
          l.startsWith("warn build product skipped") && l.includes(reason)
        ),
        reason,
      );
    }
    assert.ok(lines.some((l) => l.includes("job=(")), "bad pattern logged");

    const app = createWebApp({
      store,
      logCacheDir: `${root}/logs`,
      storeDir,
      clock: systemClock,
      logger,
      workerTimeoutSeconds: 120,
    });
    const get = (path: string) => app(new Request(`http://x${path}`));
    const file = await get(`/download/${products[0].id}`);
    assert.equal(file.status, 200);
    assert.equal(
      file.headers.get("content-disposition"),
      `attachment; filename="hello"`,
    );
    assert.equal(await file.text(), "#!/bin/sh\necho hello\n");
    const json = await (await get(`/build/${build.id}`)).json();
    assert.deepEqual(json.buildproducts[1], {
      id: products[1].id,
      type: "manual",
      path: `${doc}/manual.pdf`,
      "file-size": 8,
    });

    const page = await (await get(`/build/${build.id}/details`)).text();
    assert.ok(
      page.includes(`<a href="/download/${products[1].id}">manual.pdf</a>`),
    );

    const missing = await get("/download/999");
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).error, /ID 999 doesn't exist/);
    assert.equal((await get("/download/x")).status, 400);
    // A product whose file is gone, and one outside the store (a database
    // edited by hand): 404, nothing read.
    // A link in an output to a file outside the store (the database).
    await Deno.symlink(`${root}/db.sqlite`, `${out}/bin/link`);
    await store.addBuildProducts(build.id, [
      { type: "gone", fileSize: 1, path: `${out}/gone` },
      { type: "outside", fileSize: 1, path: `${root}/db.sqlite` },
      { type: "link", fileSize: 1, path: `${out}/bin/link` },
    ]);
    const [, , gone, outside, link] = (await store.getBuild(build.id))!
      .products!;
    for (const product of [gone, outside, link]) {
      const response = await get(`/download/${product.id}`);
      assert.equal(response.status, 404);
      await response.body?.cancel();
    }
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});
