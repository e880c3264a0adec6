// Tests for ZMTP frame encoding and the incremental decoder.

import assert from "node:assert/strict";
import {
  encodeCommandFrame,
  encodeMessage,
  type Frame,
  FrameDecoder,
  ZmtpFrameSizeError,
  ZmtpSyntaxError,
} from "../../../lib/zmtp/frame.ts";

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

function filled(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

Deno.test("encodeMessage() uses short sizes up to 255 and long sizes above", () => {
  const cases: [number, number[]][] = [
    [0, [0x00, 0x00]],
    [255, [0x00, 0xff]],
    [256, [0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x00]],
  ];
  for (const [size, header] of cases) {
    const wire = encodeMessage([new Uint8Array(size)]);
    assert.deepEqual(
      [...wire.subarray(0, header.length)],
      header,
      `size ${size}`,
    );
    assert.equal(wire.length, header.length + size);
  }
});

Deno.test("encodeMessage() sets MORE on every frame but the last", () => {
  const wire = encodeMessage([bytes(), bytes(0x61), bytes(0x62, 0x63)]);
  assert.deepEqual([...wire], [
    0x01,
    0x00,
    0x01,
    0x01,
    0x61,
    0x00,
    0x02,
    0x62,
    0x63,
  ]);
});

Deno.test("encodeMessage() rejects a message without frames", () => {
  assert.throws(() => encodeMessage([]), TypeError);
});

Deno.test("encodeCommandFrame() sets the COMMAND flag", () => {
  assert.deepEqual([...encodeCommandFrame(bytes(1, 2))], [0x04, 0x02, 1, 2]);
  const long = encodeCommandFrame(new Uint8Array(300));
  assert.equal(long[0], 0x06);
});

Deno.test("FrameDecoder decodes the same frames whether fed whole or byte by byte", () => {
  const frames = [bytes(), filled(255, 1), filled(256, 2), filled(70_000, 3)];
  const wire = new Uint8Array([
    ...encodeMessage(frames),
    ...encodeCommandFrame(bytes(4, 0x50, 0x49, 0x4e, 0x47, 0, 1)),
    ...encodeMessage([bytes()]),
  ]);
  for (const step of [wire.length, 1, 7, 4096]) {
    const decoder = new FrameDecoder();
    const out: Frame[] = [];
    for (let at = 0; at < wire.length; at += step) {
      out.push(...decoder.push(wire.subarray(at, at + step)));
    }
    assert.equal(out.length, 6, `step ${step}`);
    frames.forEach((body, i) => {
      assert.deepEqual(out[i].body, body, `step ${step} frame ${i}`);
      assert.equal(out[i].more, i < frames.length - 1);
      assert.equal(out[i].command, false);
    });
    assert.equal(out[4].command, true);
    assert.deepEqual(out[5], { body: bytes(), more: false, command: false });
    assert.equal(decoder.offset, wire.length);
  }
});

Deno.test("FrameDecoder copies bodies so the caller may reuse its read buffer", () => {
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(encodeMessage([bytes(1, 2, 3)]));
  const [frame] = decoder.push(buffer);
  buffer.fill(0xee);
  assert.deepEqual(frame.body, bytes(1, 2, 3));
  assert.notEqual(frame.body.buffer, buffer.buffer);
});

Deno.test("FrameDecoder rejects frames larger than its limit before reading them", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 1000 });
  const header = bytes(0x02, 0, 0, 0, 0, 0, 0, 0x03, 0xe9); // 1001 bytes
  assert.throws(
    () => decoder.push(header),
    (error) => error instanceof ZmtpFrameSizeError && error.size === 1001n,
  );
  // Sizes past the safe integers are kept exactly, not clamped.
  const huge = new FrameDecoder();
  assert.throws(
    () =>
      huge.push(bytes(0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)),
    (error) =>
      error instanceof ZmtpFrameSizeError && error.size === 2n ** 64n - 1n &&
      error.message.includes(" size 18446744073709551615 "),
  );
});

Deno.test("FrameDecoder refuses a frame taking its message past maxMessageBytes from the header alone", () => {
  const decoder = new FrameDecoder({
    maxFrameBytes: 1000,
    maxMessageBytes: 1000,
  });
  // 600 + 300 fit; a ping in between does not count; the next message
  // starts from zero again.
  const fits = new Uint8Array([
    ...encodeMessage([filled(600, 1), filled(300, 2)]),
    ...encodeCommandFrame(filled(200, 3)),
    ...encodeMessage([filled(900, 4)]),
  ]);
  assert.equal(decoder.push(fits).length, 4);
  // 600 with MORE, then a header announcing 600 more: refused before any
  // byte of that body arrives.
  const first = encodeMessage([filled(600, 5), bytes()]).subarray(0, 9 + 600);
  assert.equal(decoder.push(first).length, 1);
  assert.throws(
    () => decoder.push(bytes(0x02, 0, 0, 0, 0, 0, 0, 0x02, 0x58)),
    (error) =>
      error instanceof ZmtpFrameSizeError && error.unit === "message" &&
      error.size === 1200n && error.maxBytes === 1000,
  );
});

Deno.test("FrameDecoder limits command frames separately", () => {
  const decoder = new FrameDecoder({ maxCommandBytes: 10 });
  assert.throws(() => decoder.push(bytes(0x04, 11)), ZmtpFrameSizeError);
  assert.equal(
    new FrameDecoder({ maxCommandBytes: 10 }).push(bytes(0x00, 11)).length,
    0,
  );
});

Deno.test("FrameDecoder rejects reserved flag bits and commands with MORE", () => {
  const cases: [number, string][] = [
    [0x08, "bad-flags"],
    [0x80, "bad-flags"],
    [0x05, "command-with-more"],
  ];
  for (const [flags, code] of cases) {
    const decoder = new FrameDecoder();
    assert.equal(decoder.push(bytes(0x00, 0x00, flags, 0x00)).length, 1);
    assert.throws(
      () => decoder.check(),
      (error) =>
        error instanceof ZmtpSyntaxError && error.code === code &&
        /offset 2/.test(error.message),
    );
  }
});

Deno.test("FrameDecoder returns the frames before a bad one and reports it next", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 10 });
  const wire = new Uint8Array([...encodeMessage([bytes(1)]), 0x00, 11]);
  assert.deepEqual(decoder.push(wire), [{
    body: bytes(1),
    more: false,
    command: false,
  }]);
  assert.throws(() => decoder.check(), ZmtpFrameSizeError);
  assert.throws(() => decoder.push(bytes(0)), ZmtpFrameSizeError);
});
