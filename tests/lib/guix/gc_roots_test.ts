import assert from "node:assert/strict";
import type { Clock } from "../../../lib/clock.ts";
import { systemClock } from "../../../lib/clock.ts";
import { silentLogger } from "../../../lib/log.ts";
import {
  daemonRootDirectories,
  defaultGcRootDirectory,
  GcRoots,
  guixStateDirectory,
  networkDaemon,
  parseDuration,
  underDaemonRoots,
} from "../../../lib/guix/gc_roots.ts";

const STORE = "/gnu/store";
const DRV = `${STORE}/i3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-hello-2.12.drv`;
const PENDING = `${STORE}/a3b2mc8ssfzd4ki0kgqm2ccx2rz4m8qr-queued-1.drv`;
const OUT = `${STORE}/k1fqzbrb4nnlzm1ng6rmkbhkqm8w6z8i-hello-2.12`;

function later(seconds: number): Clock {
  return { ...systemClock, now: () => Date.now() + seconds * 1000 };
}

Deno.test("parseDuration() reads Guix durations, with m for months, and refuses a bare number as Guix does", () => {
  const cases: [string, number][] = [
    ["30d", 30 * 86400],
    ["12h", 43200],
    ["6m", 6 * 30 * 86400],
    ["90s", 90],
    ["2w", 1209600],
  ];
  for (const [text, seconds] of cases) {
    assert.equal(parseDuration(text), seconds);
  }
  // A bare number is no duration, as in Guix: "30" meant as days must
  // not expire roots after 30 seconds.
  for (const bad of ["", "1y", "-1d", "3.5h", "d", "42", "30"]) {
    assert.throws(() => parseDuration(bad), RangeError);
  }
});

Deno.test("defaultGcRootDirectory() is under the daemon's per-user roots", () => {
  const env = new Map([["USER", "ci"]]);
  assert.equal(
    defaultGcRootDirectory({ get: (k) => env.get(k) }),
    "/var/guix/gcroots/profiles/per-user/ci/lorica",
  );
});

Deno.test("GcRoots registers, refreshes and expires roots, keeping pending .drv", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-roots-" });
  try {
    const roots = new GcRoots({
      directory: `${dir}/roots`,
      storeDir: STORE,
      clock: systemClock,
      logger: silentLogger,
    });
    assert.equal(await roots.register([DRV, PENDING, OUT, "/etc/passwd"]), 3);
    assert.deepEqual(await roots.list(), [PENDING, DRV, OUT].sort());
    assert.equal(await Deno.readLink(`${dir}/roots/${OUT.slice(11)}`), OUT);
    // Re-registering replaces the link (fresh mtime), not a second entry.
    await roots.register([OUT]);
    assert.equal((await roots.list()).length, 3);

    // Nothing is old yet.
    const keep = (drv: string) => Promise.resolve(drv === PENDING);
    const now = new GcRoots({
      directory: `${dir}/roots`,
      storeDir: STORE,
      clock: systemClock,
      logger: silentLogger,
    });
    assert.deepEqual(
      await now.expire({ ttlSeconds: 3600, keepDerivation: keep }),
      {
        removed: 0,
        kept: 0,
      },
    );
    // Two hours on, with a one-hour TTL: only the pending .drv stays.
    const old = new GcRoots({
      directory: `${dir}/roots`,
      storeDir: STORE,
      clock: later(7200),
      logger: silentLogger,
    });
    assert.deepEqual(
      await old.expire({ ttlSeconds: 3600, keepDerivation: keep }),
      {
        removed: 2,
        kept: 1,
      },
    );
    assert.deepEqual(await roots.list(), [PENDING]);
    await roots.unregister([PENDING]);
    assert.deepEqual(await roots.list(), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("guixStateDirectory() says where the state directory it assumes comes from: GUIX_STATE_DIRECTORY, or the default", () => {
  assert.deepEqual(
    guixStateDirectory(new Map([["GUIX_STATE_DIRECTORY", "/srv/guix"]])),
    { path: "/srv/guix", source: "GUIX_STATE_DIRECTORY" },
  );
  assert.deepEqual(guixStateDirectory(new Map()), {
    path: "/var/guix",
    source: "default",
  });
});

Deno.test("networkDaemon() names a daemon GUIX_DAEMON_SOCKET reaches over the network, without its user or password, and nothing for a socket file", () => {
  const daemonOf = (socket?: string) =>
    networkDaemon(
      new Map(socket === undefined ? [] : [["GUIX_DAEMON_SOCKET", socket]]),
    );
  assert.equal(daemonOf("guix://127.0.0.1:44146"), "guix://127.0.0.1:44146");
  assert.equal(daemonOf("GUIX://[::1]:44146"), "guix://[::1]:44146");
  assert.equal(
    daemonOf("ssh://builder:secret@192.0.2.7:2222"),
    "ssh://192.0.2.7:2222",
  );
  for (
    const local of [
      undefined,
      "",
      "/var/guix/daemon-socket/socket",
      "file:///var/guix/daemon-socket/socket",
      "daemon-socket",
    ]
  ) {
    assert.equal(daemonOf(local), undefined, String(local));
  }
});

Deno.test("underDaemonRoots() takes a directory within either tree the daemon walks for roots (gcroots, profiles), as written, and nothing beside them", () => {
  const roots = daemonRootDirectories(
    new Map([["GUIX_STATE_DIRECTORY", "/var/guix"]]),
  );
  assert.deepEqual(roots, ["/var/guix/gcroots", "/var/guix/profiles"]);
  assert.deepEqual(daemonRootDirectories(new Map()), roots);
  for (
    const inside of [
      "/var/guix/gcroots/profiles/per-user/cuirass/lorica",
      "/var/guix/gcroots/",
      "/var/guix//gcroots/./lorica",
      // What gcroots/profiles links to: the daemon walks it in its own
      // right (guix.md 7.3).
      "/var/guix/profiles/per-user/cuirass/lorica",
      "/var/guix/gcroots/../profiles/lorica",
    ]
  ) assert.ok(underDaemonRoots(inside, roots), inside);
  for (
    const outside of [
      "/var/lib/lorica/gcroots",
      "/var/guix/gcroots-old/lorica",
      "/var/guix/profiles-old/lorica",
      "/var/guix/temproots/lorica",
    ]
  ) assert.ok(!underDaemonRoots(outside, roots), outside);
});
