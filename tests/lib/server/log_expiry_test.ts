import assert from "node:assert/strict";
import { expireLogs } from "../../../lib/server/log_expiry.ts";
import { silentLogger } from "../../../lib/log.ts";
import type { Clock } from "../../../lib/clock.ts";

const HASH_OLD = "0".repeat(32);
const HASH_NEW = "1".repeat(32);

Deno.test("expireLogs() removes only build logs older than the limit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const day = 86400;
    const now = Date.parse("2026-12-04T00:00:00Z");
    const clock: Clock = {
      now: () => now,
      monotonic: () => 0,
      sleep: () => Promise.resolve(),
    };
    for (
      const name of [`${HASH_OLD}.log.gz`, `${HASH_NEW}.log.gz`, "notes.txt"]
    ) {
      await Deno.writeTextFile(`${dir}/${name}`, "x");
    }
    const old = new Date(now - 200 * day * 1000);
    await Deno.utime(`${dir}/${HASH_OLD}.log.gz`, old, old);
    await Deno.utime(`${dir}/notes.txt`, old, old);
    const fresh = new Date(now - day * 1000);
    await Deno.utime(`${dir}/${HASH_NEW}.log.gz`, fresh, fresh);

    const removed = await expireLogs({
      cacheDir: dir,
      maxAgeSeconds: 180 * day,
      clock,
      logger: silentLogger,
    });
    assert.equal(removed, 1);
    const left = [];
    for await (const entry of Deno.readDir(dir)) left.push(entry.name);
    assert.deepEqual(left.sort(), [`${HASH_NEW}.log.gz`, "notes.txt"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("expireLogs() removes the upload files a crashed receiver left, once no upload can write them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const now = Date.parse("2026-12-04T00:00:00Z");
    const clock: Clock = {
      now: () => now,
      monotonic: () => 0,
      sleep: () => Promise.resolve(),
    };
    const left = `${HASH_OLD}.log.gz.0123456789abcdef.part`;
    const live = `${HASH_NEW}.log.gz.fedcba9876543210.part`;
    for (const name of [left, live, `${HASH_NEW}.log.gz`]) {
      await Deno.writeTextFile(`${dir}/${name}`, "x");
    }
    const threeHours = new Date(now - 3 * 3600 * 1000);
    await Deno.utime(`${dir}/${left}`, threeHours, threeHours);
    const aMinute = new Date(now - 60 * 1000);
    await Deno.utime(`${dir}/${live}`, aMinute, aMinute);
    await Deno.utime(`${dir}/${HASH_NEW}.log.gz`, threeHours, threeHours);

    const removed = await expireLogs({
      cacheDir: dir,
      maxAgeSeconds: 180 * 86400,
      clock,
      logger: silentLogger,
    });
    assert.equal(removed, 1);
    const kept = [];
    for await (const entry of Deno.readDir(dir)) kept.push(entry.name);
    assert.deepEqual(kept.sort(), [`${HASH_NEW}.log.gz`, live].sort());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
