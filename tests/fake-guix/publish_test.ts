// The fake guix's `guix publish` and substitution between two daemons that
// share one store directory but keep separate validity registries.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { encodeNixBase32 } from "../../lib/guix/base32.ts";
import { parseDerivation } from "../../lib/guix/drv.ts";
import { parseNarinfo } from "../../lib/guix/narinfo.ts";
import { verifyNarinfoText } from "../../lib/guix/narinfo_signature.ts";
import { parsePublicKey } from "../../lib/guix/signing_key.ts";
import { readSexp } from "../../lib/sexp/read.ts";
import {
  type DaemonEnv,
  evaluate,
  guix,
  makeDaemon,
  makeRoot,
  startPublish,
  writeChannels,
  writeScenario,
} from "./test_env.ts";

const SCENARIO = {
  packages: [
    { name: "gmp", version: "6.3.0", behaviour: { seconds: 0.1, logLines: 2 } },
    {
      name: "hello",
      version: "2.12",
      inputs: ["gmp"],
      behaviour: { seconds: 0.1, logLines: 3, outputBytes: 3000 },
    },
  ],
};

/** A server daemon with a key pair and evaluated jobs, plus a worker. */
async function setUp(authorizeWorker: boolean) {
  const root = await makeRoot();
  const scenario = await writeScenario(root, SCENARIO);
  const server = await makeDaemon(root, "server", {
    FAKE_GUIX_SCENARIO: scenario,
  });
  const worker = await makeDaemon(root, "worker");
  for (const daemon of [server, worker]) {
    const keys = await guix(daemon, ["archive", "--generate-key"]);
    assert.equal(keys.code, 0, keys.stderr);
  }
  await authorize(worker, server);
  if (authorizeWorker) await authorize(server, worker);

  const run = await evaluate(
    server,
    await writeChannels(root),
    "all",
    "x86_64-linux",
  );
  assert.equal(run.code, 0, run.stderr);
  const drvs = run.stdout.trimEnd().split("\n").slice(0, -1).map((line) =>
    (readSexp(line) as [unknown, unknown, [unknown, string]])[2][1]
  );
  return { root, server, worker, drvs };
}

/** Adds `signer`'s public key to `daemon`'s ACL. */
async function authorize(daemon: DaemonEnv, signer: DaemonEnv) {
  const key = await Deno.readTextFile(`${signer.configDir}/signing-key.pub`);
  const run = await guix(daemon, ["archive", "--authorize"], { stdin: key });
  assert.equal(run.code, 0, run.stderr);
}

Deno.test("guix publish serves cache info, signed narinfos and matching NARs", async () => {
  const { root, server, drvs } = await setUp(true);
  const publish = await startPublish(server);
  try {
    const info = await fetch(`${publish.url}/nix-cache-info`);
    assert.equal(
      await info.text(),
      `StoreDir: ${server.storeDir}\nWantMassQuery: 0\nPriority: 100\n`,
    );

    const drv = drvs[1];
    const hash = drv.slice(server.storeDir.length + 1).slice(0, 32);
    const response = await fetch(`${publish.url}/${hash}.narinfo`);
    assert.equal(response.status, 200);
    const text = await response.text();
    const key = parsePublicKey(
      await Deno.readTextFile(`${server.configDir}/signing-key.pub`),
    );
    assert.equal(verifyNarinfoText(text, [key]).ok, true);
    const narinfo = parseNarinfo(text, { storeDir: server.storeDir });
    assert.equal(narinfo.storePath, drv);
    assert.equal(narinfo.deriver, null);
    assert.equal(narinfo.references.length, 2);
    assert.equal(narinfo.urls[0].compression, "none");

    const nar = await fetch(new URL(narinfo.urls[0].url, publish.url + "/"));
    const bytes = new Uint8Array(await nar.arrayBuffer());
    const digest = createHash("sha256").update(bytes).digest();
    assert.equal(bytes.length, narinfo.narSize);
    assert.equal(`sha256:${encodeNixBase32(digest)}`, narinfo.narHash);

    const head = await fetch(`${publish.url}/${hash}.narinfo`, {
      method: "HEAD",
    });
    await head.body?.cancel();
    assert.equal(head.status, 404);
    const missing = await fetch(`${publish.url}/${"0".repeat(32)}.narinfo`);
    assert.equal(missing.status, 404);
    assert.equal(
      await missing.text(),
      `Resource not found: /${"0".repeat(32)}.narinfo`,
    );
  } finally {
    await publish.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a worker builds from substitutes and the server fetches its outputs back", async () => {
  const { root, server, worker, drvs } = await setUp(true);
  const serverPublish = await startPublish(server);
  let workerPublish;
  try {
    const drv = drvs[1];
    const outputs = parseDerivation(await Deno.readTextFile(drv)).outputs;
    // The shared store holds the drv, but the worker must substitute it.
    const before = await guix(worker, ["gc", "--references", drv]);
    assert.equal(before.code, 1);

    const built = await guix(worker, [
      "build",
      `--substitute-urls=${serverPublish.url}`,
      drv,
    ]);
    assert.equal(built.code, 0, built.stderr);
    assert.equal(built.stdout, `${outputs[0].path}\n`);
    assert.ok(built.stderr.includes(`substituting ${drv}...`));
    assert.ok(built.stderr.includes(`building ${drv}...`));

    // The server has not built anything: the output is not valid there.
    const notYet = await guix(server, ["gc", "--references", outputs[0].path]);
    assert.equal(notYet.code, 1);

    // Default compression (gzip), as the stand-in's substituter must inflate.
    workerPublish = await startPublish(worker, []);
    const fetched = await guix(server, [
      "build",
      "--max-jobs=0",
      "--no-offload",
      `--substitute-urls=${workerPublish.url}`,
      drv,
    ]);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.equal(fetched.stdout, `${outputs[0].path}\n`);
    const derivers = await guix(server, ["gc", "--derivers", outputs[0].path]);
    assert.equal(derivers.stdout, `${drv}\n`);
  } finally {
    await workerPublish?.stop();
    await serverPublish.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("outputs signed by an unauthorized key are not substituted", async () => {
  const { root, server, worker, drvs } = await setUp(false);
  const serverPublish = await startPublish(server);
  let workerPublish;
  try {
    const drv = drvs[0];
    const built = await guix(worker, [
      "build",
      `--substitute-urls=${serverPublish.url}`,
      drv,
    ]);
    assert.equal(built.code, 0, built.stderr);

    workerPublish = await startPublish(worker);
    const fetched = await guix(server, [
      "build",
      "--max-jobs=0",
      `--substitute-urls=${workerPublish.url}`,
      drv,
    ]);
    assert.equal(fetched.code, 1);
    assert.equal(fetched.stdout, "");
    assert.ok(fetched.stderr.endsWith(
      "guix build: error: unable to start any build; either increase `--max-jobs' or enable distributed builds\n",
    ));
  } finally {
    await workerPublish?.stop();
    await serverPublish.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("guix archive refuses a second key pair and a bad public key", async () => {
  const root = await makeRoot();
  try {
    const daemon = await makeDaemon(root, "server");
    assert.equal((await guix(daemon, ["archive", "--generate-key"])).code, 0);
    const again = await guix(daemon, ["archive", "--generate-key"]);
    assert.deepEqual([again.code, again.stderr], [
      1,
      `guix archive: error: key pair exists under '${daemon.configDir}'; remove it first\n`,
    ]);
    const bad = await guix(daemon, ["archive", "--authorize"], {
      stdin: "(not-a-key)",
    });
    assert.deepEqual([bad.code, bad.stderr], [
      1,
      "guix archive: error: s-expression does not denote a public key\n",
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
