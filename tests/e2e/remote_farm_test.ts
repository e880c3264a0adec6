// The main job end to end: a real server and two real workers (separate
// processes, the fake guix underneath) build the demo specification.

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { startFarm } from "../../demo/farm.ts";
import { compareOutcome, readProgress } from "../../demo/report.ts";
import { C10_LOG, includesBytes } from "../fixtures/c10_log.ts";

const DEMO = fromFileUrl(new URL("../../demo", import.meta.url));

Deno.test({
  name: "a server and two workers build the demo specification in remote mode",
  async fn(t) {
    const expected: Record<string, string> = JSON.parse(
      await Deno.readTextFile(`${DEMO}/expected.json`),
    );
    const farm = await startFarm({
      specFile: `${DEMO}/demo-spec.scm`,
      scenarioFile: `${DEMO}/scenario.json`,
      workers: [
        { systems: ["x86_64-linux"], sessions: 2 },
        { systems: ["i686-linux"], sessions: 2 },
      ],
      webPort: 0,
      requestPeriod: 1,
    });
    try {
      const total = Object.keys(expected).length;
      let progress = await readProgress(farm.webUrl);
      for (let i = 0; i < 300; i++) {
        if (
          progress.pending.length === 0 && progress.finished.length >= total
        ) {
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 1000));
        progress = await readProgress(farm.webUrl);
      }
      const builds = progress.finished;

      await t.step(
        "every job ends with the status the scenario implies",
        () => {
          assert.deepEqual(compareOutcome(builds, expected), []);
        },
      );

      await t.step("latestbuilds answers Cuirass's build objects", async () => {
        const response = await fetch(`${farm.webUrl}/api/latestbuilds?nr=5`);
        assert.equal(response.status, 200);
        const five = await response.json();
        assert.equal(five.length, 5);
        assert.deepEqual(Object.keys(five[0]), [
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
        ]);
      });

      const succeeded = builds.filter((b) => b.buildstatus === 0);
      const failed = builds.filter((b) => b.buildstatus === 1);
      assert.ok(succeeded.length > 0 && failed.length === 1);

      await t.step(
        "the outputs of succeeded builds are in the server's store",
        async () => {
          for (const build of succeeded) {
            const details =
              await (await fetch(`${farm.webUrl}/build/${build.id}`)).json();
            for (
              const { path } of Object.values(details.buildoutputs) as {
                path: string;
              }[]
            ) {
              const check = await new Deno.Command("guix", {
                args: ["gc", "--references", path],
                env: farm.guixEnv("server"),
                stdout: "null",
                stderr: "piped",
              }).output();
              assert.ok(
                check.success,
                `${path} not valid on the server: ${
                  new TextDecoder().decode(check.stderr)
                }`,
              );
            }
          }
        },
      );

      await t.step(
        "the server kept each build's log, failed ones included",
        async () => {
          for (const build of [succeeded[0], failed[0]]) {
            const response = await fetch(
              `${farm.webUrl}/build/${build.id}/log/raw`,
            );
            assert.equal(response.status, 200);
            assert.equal(response.headers.get("content-encoding"), "gzip");
            const text = await response.text(); // fetch inflates it.
            assert.ok(text.length > 0, `empty log for ${build.job}`);
          }
        },
      );

      await t.step(
        "the workers asked the server to acknowledge each log, and it did",
        async () => {
          const received = (await Deno.readTextFile(farm.logFile("server")))
            .split("\n").filter((line) => line.includes("log received"));
          assert.ok(received.length > 0);
          for (const line of received) {
            assert.match(line, /acknowledged=true/);
          }
        },
      );

      await t.step(
        "C10: a build whose log is not UTF-8 succeeds; the log port kept its bytes",
        async () => {
          const build = builds.find((b) =>
            b.job === "libunistring.x86_64-linux"
          );
          assert.equal(build?.buildstatus, 0);
          const response = await fetch(
            `${farm.webUrl}/build/${build!.id}/log/raw`,
          );
          const log = new Uint8Array(await response.arrayBuffer());
          assert.ok(includesBytes(log, C10_LOG), "C10 bytes changed");
          const page = await fetch(`${farm.webUrl}/build/${build!.id}/details`);
          assert.equal(page.status, 200);
          assert.ok((await page.text()).includes("\uFFFD"));
        },
      );

      await t.step(
        "the specification's build output is offered for download once fetched",
        async () => {
          const build = builds.find((b) =>
            b.job === "libunistring.x86_64-linux"
          );
          const details =
            await (await fetch(`${farm.webUrl}/build/${build!.id}`)).json();
          assert.equal(details.buildproducts.length, 1);
          const [product] = details.buildproducts;
          assert.equal(product.type, "data");
          assert.ok(product.path.endsWith("/share/libunistring-1.3/data"));
          const file = await fetch(`${farm.webUrl}/download/${product.id}`);
          assert.equal(file.status, 200);
          const bytes = new Uint8Array(await file.arrayBuffer());
          assert.equal(bytes.length, product["file-size"]);
          assert.ok(bytes.length > 0);
        },
      );
    } finally {
      await farm.stop();
      await Deno.remove(farm.root, { recursive: true }).catch(() => {});
    }
  },
});
