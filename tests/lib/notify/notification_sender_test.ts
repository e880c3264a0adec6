import assert from "node:assert/strict";
import { quietPort } from "../../_ports.ts";
import {
  type NotificationOutcome,
  startNotificationSender,
} from "../../../lib/notify/notification_sender.ts";
import { createLogger } from "../../../lib/log.ts";
import { systemClock } from "../../../lib/clock.ts";
import {
  BuildStatus,
  type QueuedNotification,
  Weather,
} from "../../../lib/store/types.ts";
import { openSqliteStore } from "../../../lib/store/sqlite.ts";
import { drv, job, specification } from "../store/store_contract.ts";
import { sampleBuild } from "./sample_build.ts";
import { startFakeMastodon } from "./fake_mastodon.ts";
import { aiosmtpdAvailable, startSmtpCapture } from "./smtp_capture.ts";

/** The store's queue: popNotifications takes from the front. */
function queue(items: QueuedNotification[]) {
  return {
    pops: 0,
    popNotifications(limit: number) {
      this.pops++;
      return Promise.resolve(items.splice(0, limit));
    },
  };
}

function collect() {
  const lines: string[] = [];
  const outcomes: NotificationOutcome[] = [];
  const settled = (count: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        const final = outcomes.filter((o) => o.outcome !== "retry").length;
        if (final >= count) {
          clearInterval(timer);
          clearTimeout(deadline);
          resolve();
        }
      }, 10);
      const deadline = setTimeout(() => {
        clearInterval(timer);
        reject(
          new Error(
            `only ${JSON.stringify(outcomes)}; log: ${lines.join("\n")}`,
          ),
        );
      }, 20_000);
    });
  return {
    lines,
    outcomes,
    settled,
    logger: createLogger({
      sink: (line) => lines.push(line),
      timestamps: false,
    }),
  };
}

Deno.test({
  name:
    "startNotificationSender() mails through aiosmtpd and posts to Mastodon",
  ignore: !aiosmtpdAvailable, // needs Debian's python3-aiosmtpd
  async fn() {
    await using smtp = await startSmtpCapture();
    await using mastodon = startFakeMastodon();
    const fixed = sampleBuild({
      id: 5,
      status: 0,
      weather: Weather.newSuccess,
    });
    const broken = sampleBuild({ id: 6, jobName: "gzip.i686-linux" });
    const source = queue([
      {
        id: 1,
        sink: {
          type: "email",
          from: "Lorica CI <ci@farm.test>",
          to: "dev@example.test",
          server: `smtp://127.0.0.1:${smtp.port}`,
        },
        build: fixed,
      },
      { id: 2, sink: { type: "mastodon" }, build: broken },
    ]);
    const log = collect();
    const sender = startNotificationSender({
      source,
      clock: systemClock,
      logger: log.logger,
      baseUrl: "https://ci.farm.test",
      mastodon: { instanceUrl: mastodon.url, token: "tok", name: "farm" },
      intervalMs: 20,
      hostname: "farm.test",
      onOutcome: (o) => log.outcomes.push(o),
    });
    await log.settled(2);
    await sender.stop();

    assert.deepEqual(
      log.outcomes.map((o) => [o.id, o.outcome]),
      [[1, "sent"], [2, "sent"]],
    );
    const [mail] = await smtp.messages(1);
    assert.equal(mail.mail_from, "ci@farm.test");
    assert.deepEqual(mail.rcpt_tos, ["dev@example.test"]);
    assert.match(
      mail.content,
      /^Subject: Build hello\.x86_64-linux on demo is fixed\.\r$/m,
    );
    assert.match(mail.content, /^From: Lorica CI <ci@farm\.test>\r$/m);
    assert.match(
      mail.content,
      /^Message-ID: <[0-9a-f]+\.[0-9a-f]+@farm\.test>\r$/m,
    );
    assert.ok(mail.content.includes("https://ci.farm.test/build/5/details"));

    assert.equal(mastodon.seen.length, 1);
    assert.equal(mastodon.seen[0].authorization, "Bearer tok");
    assert.equal(mastodon.seen[0].idempotencyKey, "lorica-notification-2");
    assert.match(mastodon.seen[0].form.status, /gzip\.i686-linux/);
    assert.match(
      mastodon.seen[0].form.status,
      /https:\/\/ci\.farm\.test\/build\/6\/details/,
    );
    assert.ok(!log.lines.join("\n").includes('tok"'));
  },
});

Deno.test("startNotificationSender() retries transient failures with the same idempotency key", async () => {
  await using mastodon = startFakeMastodon([503, 502]);
  const log = collect();
  const sender = startNotificationSender({
    source: queue([{
      id: 9,
      sink: { type: "mastodon" },
      build: sampleBuild(),
    }]),
    clock: systemClock,
    logger: log.logger,
    baseUrl: "",
    mastodon: { instanceUrl: mastodon.url, token: "tok" },
    intervalMs: 10,
    retryDelayMs: 10,
    onOutcome: (o) => log.outcomes.push(o),
  });
  await log.settled(1);
  await sender.stop();
  assert.deepEqual(log.outcomes.map((o) => o.outcome), [
    "retry",
    "retry",
    "sent",
  ]);
  assert.deepEqual(
    mastodon.seen.map((s) => s.idempotencyKey),
    Array(3).fill("lorica-notification-9"),
  );
});

Deno.test("startNotificationSender() retries after the delay that passed: a step of the wall clock back an hour does not hold the retry back", async () => {
  await using mastodon = startFakeMastodon([503]);
  const log = collect();
  let offset = 0;
  const sender = startNotificationSender({
    source: queue([{
      id: 7,
      sink: { type: "mastodon" },
      build: sampleBuild(),
    }]),
    clock: { ...systemClock, now: () => Date.now() + offset },
    logger: log.logger,
    baseUrl: "",
    mastodon: { instanceUrl: mastodon.url, token: "tok" },
    intervalMs: 10,
    retryDelayMs: 100,
    onOutcome: (o) => {
      log.outcomes.push(o);
      // NTP steps the wall clock back as the retry is planned.
      if (o.outcome === "retry") offset = -3_600_000;
    },
  });
  await log.settled(1);
  await sender.stop();
  assert.deepEqual(log.outcomes.map((o) => o.outcome), ["retry", "sent"]);
});

Deno.test("startNotificationSender() survives bad sinks and a failing queue", async () => {
  const dead = quietPort();
  const log = collect();
  const items: QueuedNotification[] = [
    { id: 1, sink: { type: "pager" }, build: sampleBuild() },
    { id: 2, sink: { type: "mastodon" }, build: sampleBuild() },
    { id: 3, sink: { type: "email", from: "a@b.test" }, build: sampleBuild() },
    {
      id: 4,
      sink: {
        type: "email",
        from: "a@b.test",
        to: "c@d.test",
        server: "gopher://x",
      },
      build: sampleBuild(),
    },
    {
      id: 5,
      sink: {
        type: "email",
        from: "a@b.test",
        to: "c@d.test",
        server: `smtp://127.0.0.1:${dead}`,
      },
      build: sampleBuild(),
    },
  ];
  let failures = 1;
  const source = {
    popNotifications(limit: number) {
      if (failures-- > 0) {
        return Promise.reject(new Error("database is locked"));
      }
      return Promise.resolve(items.splice(0, limit));
    },
  };
  const sender = startNotificationSender({
    source,
    clock: systemClock,
    logger: log.logger,
    baseUrl: "",
    intervalMs: 10,
    retryDelayMs: 5,
    maxAttempts: 2,
    onOutcome: (o) => log.outcomes.push(o),
  });
  await log.settled(5);
  await sender.stop();
  const final = log.outcomes.filter((o) => o.outcome !== "retry");
  assert.deepEqual(
    final.map((o) => [o.id, o.outcome]).sort(),
    [[1, "dropped"], [2, "dropped"], [3, "dropped"], [4, "dropped"], [
      5,
      "dropped",
    ]],
  );
  assert.equal(final.find((o) => o.id === 5)!.attempts, 2);
  assert.match(log.lines.join("\n"), /notification queue unreadable/);
  assert.match(log.lines.join("\n"), /no Mastodon account is configured/);
});

Deno.test("startNotificationSender() stops while sleeping and drops pending retries", async () => {
  await using mastodon = startFakeMastodon([503]);
  const log = collect();
  const source = queue([{
    id: 3,
    sink: { type: "mastodon" },
    build: sampleBuild(),
  }]);
  const sender = startNotificationSender({
    source,
    clock: systemClock,
    logger: log.logger,
    baseUrl: "",
    mastodon: { instanceUrl: mastodon.url, token: "tok" },
    intervalMs: 3_600_000,
    retryDelayMs: 3_600_000,
    onOutcome: (o) => log.outcomes.push(o),
  });
  while (log.outcomes.length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await sender.stop();
  assert.equal(source.pops, 1);
  assert.match(log.lines.join("\n"), /notification dropped at shutdown id=3/);
});

Deno.test("startNotificationSender() gives undelivered notifications back at a stop, and the next run sends each once", async () => {
  await using mastodon = startFakeMastodon([503]);
  const items: QueuedNotification[] = [1, 2, 3].map((id) => ({
    id,
    sink: { type: "mastodon" },
    build: sampleBuild({ id }),
  }));
  // The store's queue, taking back what is returned under the same ids.
  const source = {
    popNotifications: (limit: number) =>
      Promise.resolve(items.splice(0, limit)),
    returnNotifications(back: QueuedNotification[]) {
      items.push(...back);
      items.sort((a, b) => a.id - b.id);
      return Promise.resolve(back.length);
    },
  };
  const start = (onOutcome: (o: NotificationOutcome) => void) =>
    startNotificationSender({
      source,
      clock: systemClock,
      logger: collect().logger,
      baseUrl: "",
      mastodon: { instanceUrl: mastodon.url, token: "tok" },
      intervalMs: 10,
      retryDelayMs: 3_600_000,
      onOutcome,
    });
  // The server stops right after the first attempt (refused with 503) of
  // the batch; 2 and 3 were taken from the queue but not tried.
  let stopped: Promise<void> | null = null;
  const first = start(() => stopped ??= first.stop());
  while (stopped === null) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await stopped;
  assert.deepEqual(items.map((n) => n.id), [1, 2, 3]);

  const second = collect();
  const again = start((o) => second.outcomes.push(o));
  await second.settled(3);
  await again.stop();
  assert.deepEqual(
    second.outcomes.map((o) => [o.id, o.outcome]),
    [[1, "sent"], [2, "sent"], [3, "sent"]],
  );
  assert.deepEqual(mastodon.seen.map((s) => s.idempotencyKey), [
    "lorica-notification-1",
    "lorica-notification-1",
    "lorica-notification-2",
    "lorica-notification-3",
  ]);
});

Deno.test("startNotificationSender() hands sendmail:// sinks to the sendmail program", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const program = `${dir}/sendmail`;
    await Deno.writeTextFile(
      program,
      `#!/bin/sh\nprintf '%s\\n' "$@" > "${dir}/args"\ncat > "${dir}/message"\n`,
    );
    await Deno.chmod(program, 0o755);
    const log = collect();
    const sender = startNotificationSender({
      source: queue([{
        id: 1,
        sink: {
          type: "email",
          from: "ci@farm.test",
          to: "a@x.test, B <b@y.test>",
          server: `sendmail://${program}`,
        },
        build: sampleBuild(),
      }]),
      clock: systemClock,
      logger: log.logger,
      baseUrl: "http://ci.test",
      intervalMs: 10,
      onOutcome: (o) => log.outcomes.push(o),
    });
    await log.settled(1);
    await sender.stop();
    assert.equal(log.outcomes[0].outcome, "sent");
    assert.equal(
      await Deno.readTextFile(`${dir}/args`),
      "-i\n-f\nci@farm.test\n--\na@x.test\nb@y.test\n",
    );
    const message = await Deno.readTextFile(`${dir}/message`);
    assert.match(message, /^To: a@x\.test, B <b@y\.test>$/m);
    assert.match(
      message,
      /^Subject: Build hello\.x86_64-linux on demo is broken\.$/m,
    );
    assert.match(message, /http:\/\/ci\.test\/build\/42\/details/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startNotificationSender() on a real queue: a sender that dies with a notification loses it not, and one sent leaves the queue", async () => {
  await using mastodon = startFakeMastodon([503]);
  const dir = await Deno.makeTempDir({ prefix: "lorica-notify-" });
  const store = openSqliteStore(`${dir}/db.sqlite`, {});
  try {
    await store.upsertSpecification({
      ...specification("guix"),
      notifications: [{ type: "mastodon" }],
    });
    for (const [index, final] of [1, 0].entries()) {
      const id = await store.addEvaluation("guix", [], index);
      await store.registerBuilds(id, [job("hello", { drv: `n${index}` })], {
        priority: 9,
        now: index,
      });
      await store.completeBuild(drv(`n${index}`), final as BuildStatus, {
        now: 10 + index,
      });
    }
    // The first sender takes the notification, is refused (503), and dies
    // before its retry: nothing is given back (as after a SIGKILL).
    let now = 1_000_000_000_000;
    const clock = { ...systemClock, now: () => now };
    const start = (onOutcome: (o: NotificationOutcome) => void) =>
      startNotificationSender({
        source: {
          popNotifications: (limit, at) => store.popNotifications(limit, at),
          finishNotifications: (ids) => store.finishNotifications(ids),
        },
        clock,
        logger: collect().logger,
        baseUrl: "",
        mastodon: { instanceUrl: mastodon.url, token: "tok" },
        intervalMs: 10,
        retryDelayMs: 3_600_000,
        onOutcome,
      });
    const first = collect();
    const dying = start((o) => first.outcomes.push(o));
    while (first.outcomes.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await dying.stop();
    assert.deepEqual(first.outcomes.map((o) => o.outcome), ["retry"]);
    // Still claimed: a second sender takes it once the claim is an hour old.
    now += 3_600_000;
    const second = collect();
    const again = start((o) => second.outcomes.push(o));
    await second.settled(1);
    await again.stop();
    assert.deepEqual(second.outcomes.map((o) => o.outcome), ["sent"]);
    assert.deepEqual(
      await store.popNotifications(10, now / 1000 + 10_000),
      [],
      "a notification sent is out of the queue",
    );
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
