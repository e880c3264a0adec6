import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import {
  cleanLogText,
  inflatedStream,
  logFilePath,
  openRegularFile,
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

const GZIP = "/usr/bin/gzip";
const noGzip = (() => {
  try {
    return !Deno.statSync(GZIP).isFile;
  } catch {
    return true;
  }
})();
/** Options of the tests that need gzip(1): skipped where it is missing. */
const needsGzip = { ignore: noGzip };

/** What gzip(1) makes of `text`: one gzip member. */
async function gzipMember(text: string | Uint8Array): Promise<Uint8Array> {
  const child = new Deno.Command(GZIP, {
    args: ["-c", "-n"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(
    typeof text === "string" ? new TextEncoder().encode(text) : text,
  );
  await writer.close();
  const { code, stdout } = await child.output();
  assert.equal(code, 0, "gzip -c failed");
  return stdout;
}

/** The bytes `cat a.gz b.gz ...` writes. */
function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
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

Deno.test({
  name: "readLogTail() reads every member of a log gzipped in parts",
  ...needsGzip,
  async fn() {
    const first = "phase `unpack' started\n".repeat(500);
    const second = "phase `build' succeeded\n".repeat(500);
    const gz = cat(await gzipMember(first), await gzipMember(second));
    await withLog(gz, async (path) => {
      assert.deepEqual(await readLogTail(path), {
        text: first + second,
        totalBytes: first.length + second.length,
        truncated: false,
        scanLimitReached: false,
        incomplete: false,
      });
      const tail = (await readLogTail(path, { tailBytes: 100 }))!;
      assert.ok(tail.text.endsWith("phase `build' succeeded\n"), tail.text);
    });
  },
});

Deno.test({
  name: "readLogTail() shows a log whose last member is still being written",
  ...needsGzip,
  async fn() {
    const first = "first part\n".repeat(1000);
    const second = new TextEncoder().encode(
      Array.from({ length: 5000 }, (_, i) => `second ${i}\n`).join(""),
    );
    const secondGz = await gzipMember(second);
    const gz = cat(
      await gzipMember(first),
      secondGz.subarray(0, secondGz.length - 20),
    );
    await withLog(gz, async (path) => {
      const tail = (await readLogTail(path, { tailBytes: 1024 * 1024 }))!;
      assert.equal(tail.incomplete, true);
      assert.ok(tail.text.startsWith(first), "the first member whole");
      const rest = tail.text.slice(first.length);
      assert.ok(rest.length > 0, "some text of the member being written");
      assert.equal(
        rest,
        new TextDecoder().decode(second.subarray(0, rest.length)),
      );
    });
  },
});

Deno.test({
  name: "readLogTail() stops at the scan limit on a bomb in a later member",
  ...needsGzip,
  async fn() {
    const gz = cat(
      await gzipMember("harmless start\n"),
      await gzipMember(new Uint8Array(64 * 1024 * 1024)),
    );
    await withLog(gz, async (path) => {
      const tail = (await readLogTail(path, {
        tailBytes: 100,
        maxScanBytes: 1024 * 1024,
      }))!;
      assert.equal(tail.scanLimitReached, true);
      assert.ok(tail.totalBytes < 8 * 1024 * 1024, String(tail.totalBytes));
    });
  },
});

Deno.test({
  name: "inflatedStream() inflates every member, and a cut one up to its end",
  ...needsGzip,
  async fn() {
    const first = "first part\n".repeat(3000);
    const second = "second part\n".repeat(3000);
    const secondGz = await gzipMember(second);
    const whole = cat(await gzipMember(first), secondGz);
    const cut = cat(await gzipMember(first), secondGz.subarray(0, 40));
    for (const [gz, check] of [[whole, "whole"], [cut, "cut"]] as const) {
      await withLog(gz, async (path) => {
        const opened = (await openRegularFile(path))!;
        const text = await new Response(
          inflatedStream(opened.file, opened.size),
        ).text();
        if (check === "whole") assert.equal(text, first + second);
        else {
          assert.ok(text.startsWith(first), "the first member whole");
          assert.ok((first + second).startsWith(text), text.slice(-40));
        }
      });
    }
  },
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
