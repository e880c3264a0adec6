import assert from "node:assert/strict";
import { crc32, gunzipSync, gzipSync } from "node:zlib";
import { gunzipAllMembers, GzipDamageError } from "../../lib/gunzip_members.ts";

/** What the stream gives for `bytes` fed `chunkSize` bytes at a time. */
async function gunzip(
  bytes: Uint8Array,
  chunkSize = 4096,
): Promise<{ text: Uint8Array; damage: unknown }> {
  let at = 0;
  const input = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + chunkSize));
      at += chunkSize;
    },
  }, { highWaterMark: 0 });
  const pieces: Uint8Array[] = [];
  let damage: unknown = null;
  const reader = gunzipAllMembers(input).getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      pieces.push(value);
    }
  } catch (error) {
    damage = error;
  }
  return { text: join(...pieces), damage };
}

function join(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const encode = (text: string) => new TextEncoder().encode(text);

/** Text that gzip shrinks only so much: it spans several input chunks. */
function noisyText(lines: number): Uint8Array {
  let seed = 7;
  let text = "";
  for (let i = 0; i < lines; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    text += `line ${i} ${seed.toString(36)}\n`;
  }
  return encode(text);
}

/** A gzip member with a header of every optional field (RFC 1952). */
function memberWithAllFields(text: Uint8Array): Uint8Array {
  const plain = new Uint8Array(gzipSync(text));
  const header = join(
    plain.subarray(0, 3),
    // FHCRC, FEXTRA, FNAME, FCOMMENT
    Uint8Array.of(0x02 | 0x04 | 0x08 | 0x10),
    plain.subarray(4, 10),
    Uint8Array.of(4, 0, 0x41, 0x42, 2, 0), // XLEN 4, subfield "AB"
    encode("build.log\0a comment\0"),
  );
  const headerCrc = crc32(header) & 0xffff;
  return join(
    header,
    Uint8Array.of(headerCrc & 0xff, headerCrc >> 8),
    plain.subarray(10),
  );
}

Deno.test("gunzipAllMembers() inflates every member, whatever its header holds, however the input is cut", async () => {
  const first = noisyText(2000);
  const second = encode("phase `build' succeeded\n".repeat(300));
  const bytes = join(
    new Uint8Array(gzipSync(first)),
    memberWithAllFields(second),
  );
  // zlib's own gunzip, the reference, reads the same.
  assert.deepEqual(new Uint8Array(gunzipSync(bytes)), join(first, second));
  for (const chunkSize of [1, 7, 4096, bytes.length]) {
    const { text, damage } = await gunzip(bytes, chunkSize);
    assert.equal(damage, null, `chunks of ${chunkSize}`);
    assert.deepEqual(text, join(first, second), `chunks of ${chunkSize}`);
  }
});

Deno.test("gunzipAllMembers() gives all it decoded before garbage after the last member, then the damage and where it is", async () => {
  const first = noisyText(500);
  const last = noisyText(2500);
  const compressed = join(
    new Uint8Array(gzipSync(first)),
    new Uint8Array(gzipSync(last)),
  );
  assert.ok(compressed.length > 3 * 4096, String(compressed.length));
  for (const junk of ["garbage", "\x1f\x00xx", "\x1f\x8b\x09xx", "\x01"]) {
    for (const chunkSize of [5, 4096]) {
      const { text, damage } = await gunzip(
        join(compressed, encode(junk)),
        chunkSize,
      );
      const what = `${JSON.stringify(junk)} in chunks of ${chunkSize}`;
      assert.deepEqual(text, join(first, last), what);
      assert.ok(damage instanceof GzipDamageError, what);
      assert.equal(damage.offset, compressed.length, what);
      assert.match(
        damage.message,
        new RegExp(
          `^Cannot read gzip member 3 at byte ${compressed.length}: .* is not the start of a gzip member$`,
        ),
        what,
      );
    }
  }
});

Deno.test("gunzipAllMembers() ends at zero padding after a member, as zlib does", async () => {
  const text = noisyText(300);
  const bytes = join(new Uint8Array(gzipSync(text)), new Uint8Array(512));
  assert.deepEqual(new Uint8Array(gunzipSync(bytes)), text);
  assert.deepEqual(await gunzip(bytes), { text, damage: null });
});

Deno.test("gunzipAllMembers() reports a member cut off, a failed check and empty input as damage, after what decoded", async () => {
  const text = noisyText(3000);
  const whole = new Uint8Array(gzipSync(text));

  const cut = await gunzip(whole.subarray(0, whole.length - 20));
  assert.ok(cut.damage instanceof GzipDamageError);
  assert.match(cut.damage.message, /before the member does$/);
  assert.ok(cut.text.length > text.length / 2, String(cut.text.length));
  assert.deepEqual(cut.text, text.subarray(0, cut.text.length));

  const badCrc = whole.slice();
  badCrc[badCrc.length - 8] ^= 0xff;
  const checked = await gunzip(badCrc);
  assert.deepEqual(checked.text, text);
  assert.ok(checked.damage instanceof GzipDamageError);
  assert.match(checked.damage.message, /its trailer says CRC \d+ and size/);

  const empty = await gunzip(new Uint8Array(0));
  assert.deepEqual(empty.text, new Uint8Array(0));
  assert.ok(empty.damage instanceof GzipDamageError);
  assert.equal(empty.damage.message, "Cannot read gzip data: it is empty");
});
