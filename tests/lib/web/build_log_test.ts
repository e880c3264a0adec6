import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import {
  cleanLogText,
  logFilePath,
  readLogTail,
} from "../../../lib/web/build_log.ts";

const HASH = "0123456789abcdfghijklmnpqrsvwxyz";

async function withLog(
  bytes: Uint8Array,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lorica-log-" });
  try {
    const path = `${dir}/${HASH}.log.gz`;
    await Deno.writeFile(path, bytes);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("logFilePath() names the file after the derivation's hash only", () => {
  assert.equal(
    logFilePath("/var/log/lorica/", `/gnu/store/${HASH}-hello-2.12.drv`),
    `/var/log/lorica/${HASH}.log.gz`,
  );
  for (
    const derivation of [
      "",
      "/etc/passwd",
      `/gnu/store/${HASH}`,
      `/gnu/store/${HASH}-x.drv/../../etc`,
      `/gnu/store/../${HASH.slice(3)}-x.drv`,
      `/gnu/store/${HASH.toUpperCase()}-x.drv`,
    ]
  ) {
    assert.equal(logFilePath("/logs", derivation), null, derivation);
  }
});

Deno.test("readLogTail() returns a short log whole, invalid UTF-8 replaced (C10)", async () => {
  const bytes = new Uint8Array([
    0x6f,
    0x6b,
    0x0a,
    0xfc,
    0xff,
    0xc3,
    0x28,
    0x0a,
  ]);
  await withLog(gzipSync(bytes), async (path) => {
    const tail = await readLogTail(path);
    assert.deepEqual(tail, {
      text: "ok\n\ufffd\ufffd\ufffd(\n",
      totalBytes: 8,
      truncated: false,
      scanLimitReached: false,
      incomplete: false,
    });
  });
});

Deno.test("readLogTail() keeps only the last bytes, from a line start", async () => {
  const lines = Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join("");
  await withLog(gzipSync(lines), async (path) => {
    const tail = (await readLogTail(path, { tailBytes: 1000 }))!;
    assert.equal(tail.truncated, true);
    assert.equal(tail.totalBytes, lines.length);
    assert.ok(tail.text.length <= 1000);
    assert.ok(tail.text.startsWith("line "));
    assert.ok(tail.text.endsWith("line 4999\n"));
    assert.ok(lines.endsWith(tail.text));
  });
});

Deno.test("readLogTail() stops at the scan limit against gzip bombs", async () => {
  const bomb = gzipSync(new Uint8Array(64 * 1024 * 1024));
  await withLog(bomb, async (path) => {
    const tail = (await readLogTail(path, {
      tailBytes: 100,
      maxScanBytes: 1024 * 1024,
    }))!;
    assert.equal(tail.scanLimitReached, true);
    // Inflation stops within one input chunk's burst of the limit.
    assert.ok(tail.totalBytes < 8 * 1024 * 1024, String(tail.totalBytes));
    assert.ok(tail.text.length <= 100);
  });
});

Deno.test("readLogTail() shows what a cut-off gzip file holds", async () => {
  const text = "first line\n".repeat(2000);
  const gz = gzipSync(text);
  await withLog(gz.subarray(0, gz.length - 10), async (path) => {
    const tail = (await readLogTail(path))!;
    assert.equal(tail.incomplete, true);
    assert.ok(text.startsWith(tail.text.slice(0, 11)));
  });
  await withLog(new TextEncoder().encode("not gzip at all"), async (path) => {
    const tail = (await readLogTail(path))!;
    assert.equal(tail.incomplete, true);
    assert.equal(tail.text, "");
  });
});

Deno.test("readLogTail() returns null for a missing file", async () => {
  assert.equal(await readLogTail("/nonexistent/lorica/x.log.gz"), null);
});

Deno.test("cleanLogText() drops colour codes and shows control characters", () => {
  assert.equal(
    cleanLogText("\x1b[31mred\x1b[0m\r\nbell\x07 nul\x00 tab\tcr\r"),
    "red\nbell\u2407 nul\u2400 tab\tcr\r",
  );
});
