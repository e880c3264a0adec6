// The loop that takes queued notifications from the store and delivers them.

import { type Clock, epochSeconds } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { QueuedNotification } from "../store/types.ts";
import { notificationText } from "./notification_text.ts";
import { sendEmail } from "./send_email.ts";
import { type MastodonAccount, postMastodonStatus } from "./mastodon.ts";

/** Where notifications come from: the store's queue. */
export interface NotificationSource {
  /** Takes notifications; they stay queued, claimed at `now` (seconds). */
  popNotifications(limit: number, now: number): Promise<QueuedNotification[]>;
  /** Takes back undelivered notifications at shutdown; returns how many. */
  returnNotifications?(items: QueuedNotification[]): Promise<number>;
  /** Removes notifications sent or given up from the queue. */
  finishNotifications?(ids: number[]): Promise<void>;
}

/** What became of one delivery attempt. */
export interface NotificationOutcome {
  id: number;
  build: number;
  sink: string;
  outcome: "sent" | "retry" | "dropped";
  attempts: number;
  error?: Error;
}

export interface NotificationSenderOptions {
  source: NotificationSource;
  clock: Clock;
  logger: Logger;
  /** Public address of the web interface, for the links ("" = relative). */
  baseUrl: string;
  /** The account Mastodon sinks post from; without it they are dropped. */
  mastodon?: MastodonAccount;
  /** Pause between two looks at the queue; default 60 s, as Cuirass. */
  intervalMs?: number;
  /** Notifications taken from the queue per look; default 10. */
  batchSize?: number;
  /** Attempts per notification before it is dropped; default 5. */
  maxAttempts?: number;
  /** Delay before the first retry, doubled for each next one; default 60 s. */
  retryDelayMs?: number;
  /** EHLO name and Message-ID domain; default "localhost". */
  hostname?: string;
  /** Extra trusted certificates (PEM) for SMTP over TLS. */
  caCerts?: string[];
  /** Deadline of one delivery; default 30 s. */
  timeoutMs?: number;
  /** Called after every attempt (for metrics and tests). */
  onOutcome?: (outcome: NotificationOutcome) => void;
}

export interface NotificationSender {
  /**
   * Stops looking at the queue, lets a delivery under way finish (bounded by
   * its timeout) and gives the notifications it did not deliver (pending
   * retries, the rest of the batch) back to the queue, for the next run.
   */
  stop(): Promise<void>;
}

/** A notification sink that cannot be used (unknown type, missing field). */
export class NotificationSinkError extends Error {
  readonly transient = false;
  constructor(message: string, readonly sinkType: string) {
    super(message);
    this.name = "NotificationSinkError";
  }
}

const MAX_PENDING_RETRIES = 1000;

interface Pending {
  notification: QueuedNotification;
  attempts: number;
  /** On the monotonic clock: a step of the wall clock moves no retry. */
  dueAt: number;
}

/**
 * Starts delivering queued notifications: email sinks through SMTP or
 * sendmail, Mastodon sinks through the configured account. Transient
 * failures are retried in memory with a doubling delay; nothing a sink does
 * stops the loop.
 */
export function startNotificationSender(
  options: NotificationSenderOptions,
): NotificationSender {
  const {
    source,
    clock,
    logger,
    baseUrl,
    mastodon,
    intervalMs = 60_000,
    batchSize = 10,
    maxAttempts = 5,
    retryDelayMs = 60_000,
    hostname = "localhost",
    caCerts,
    timeoutMs = 30_000,
    onOutcome,
  } = options;
  const stopping = new AbortController();
  let retries: Pending[] = [];
  /** Taken from the queue but not tried before the stop. */
  const unattempted: QueuedNotification[] = [];

  async function loop() {
    while (!stopping.signal.aborted) {
      const now = clock.monotonic();
      const due = retries.filter((p) => p.dueAt <= now);
      retries = retries.filter((p) => p.dueAt > now);
      for (const pending of due) {
        // Kept for giving back at the stop below.
        if (stopping.signal.aborted) retries.push(pending);
        else await attempt(pending);
      }
      let fresh: QueuedNotification[] = [];
      if (!stopping.signal.aborted) {
        try {
          fresh = await source.popNotifications(
            batchSize,
            epochSeconds(clock),
          );
        } catch (error) {
          logger.error("notification queue unreadable", { error });
        }
      }
      for (const [index, notification] of fresh.entries()) {
        if (stopping.signal.aborted) {
          unattempted.push(...fresh.slice(index));
          break;
        }
        await attempt({ notification, attempts: 0, dueAt: 0 });
      }
      try {
        await clock.sleep(intervalMs, stopping.signal);
      } catch {
        break;
      }
    }
    await giveBack([
      ...retries.map((pending) => pending.notification),
      ...unattempted,
    ]);
    retries = [];
  }

  /** Returns undelivered notifications to the store, or logs their loss. */
  async function giveBack(items: QueuedNotification[]) {
    if (items.length === 0) return;
    let returned = 0;
    try {
      returned = await source.returnNotifications?.(items) ?? 0;
      logger.info("notifications returned to the queue", {
        count: returned,
      });
    } catch (error) {
      logger.error("notification queue unwritable", { error });
    }
    if (returned === items.length) return;
    // Without a store to take them back, or when it failed: name each one.
    // (A store skips only those whose build is gone.)
    if (returned > 0) return;
    for (const notification of items) {
      logger.warn("notification dropped at shutdown", {
        id: notification.id,
        build: notification.build.id,
      });
    }
  }

  async function attempt(pending: Pending) {
    const { notification } = pending;
    const sinkType = String(notification.sink?.type ?? "");
    const fields = {
      id: notification.id,
      build: notification.build.id,
      sink: sinkType,
    };
    pending.attempts += 1;
    try {
      await deliver(notification);
      logger.info("notification sent", {
        ...fields,
        attempts: pending.attempts,
      });
      await finish(notification);
      onOutcome?.({ ...fields, outcome: "sent", attempts: pending.attempts });
    } catch (caught) {
      const error = caught instanceof Error
        ? caught
        : new Error(String(caught));
      const transient = (error as { transient?: unknown }).transient === true;
      if (transient && pending.attempts < maxAttempts) {
        pending.dueAt = clock.monotonic() +
          retryDelayMs * 2 ** (pending.attempts - 1);
        retries.push(pending);
        if (retries.length > MAX_PENDING_RETRIES) {
          const dropped = retries.shift()!;
          logger.error("notification dropped", {
            id: dropped.notification.id,
            reason: "too many retries pending",
          });
          await finish(dropped.notification);
        }
        logger.warn("notification failed, will retry", {
          ...fields,
          attempts: pending.attempts,
          error,
        });
        onOutcome?.({
          ...fields,
          outcome: "retry",
          attempts: pending.attempts,
          error,
        });
      } else {
        logger.error("notification dropped", {
          ...fields,
          attempts: pending.attempts,
          error,
        });
        await finish(notification);
        onOutcome?.({
          ...fields,
          outcome: "dropped",
          attempts: pending.attempts,
          error,
        });
      }
    }
  }

  /**
   * Takes a notification sent or given up out of the queue. When that
   * fails (the database down), its claim runs out and it is sent again:
   * twice rather than never.
   */
  async function finish(notification: QueuedNotification) {
    try {
      await source.finishNotifications?.([notification.id]);
    } catch (error) {
      logger.error("notification not taken out of the queue", {
        id: notification.id,
        build: notification.build.id,
        error,
      });
    }
  }

  async function deliver(notification: QueuedNotification) {
    const sink = notification.sink ?? {};
    const text = notificationText(notification.build, baseUrl);
    switch (sink.type) {
      case "email": {
        for (const field of ["from", "to", "server"] as const) {
          if (typeof sink[field] !== "string" || sink[field] === "") {
            throw new NotificationSinkError(
              `Cannot send email notification: field ${
                JSON.stringify(field)
              } is missing`,
              "email",
            );
          }
        }
        await sendEmail(
          { from: sink.from, to: sink.to, server: sink.server },
          text,
          { now: clock.now(), hostname, caCerts, timeoutMs },
        );
        return;
      }
      case "mastodon":
        if (mastodon === undefined) {
          throw new NotificationSinkError(
            "Cannot post Mastodon notification: no Mastodon account is configured",
            "mastodon",
          );
        }
        await postMastodonStatus(mastodon, text.status, {
          idempotencyKey: `lorica-notification-${notification.id}`,
          timeoutMs,
        });
        return;
      default:
        throw new NotificationSinkError(
          `Cannot send notification: unknown sink type ${
            JSON.stringify(String(sink.type).slice(0, 50))
          }`,
          String(sink.type),
        );
    }
  }

  const done = loop().catch((error) => {
    logger.error("notification sender stopped", { error });
  });
  logger.info("notification sender started", {
    interval_ms: intervalMs,
    mastodon: mastodon?.name ?? (mastodon ? mastodon.instanceUrl : undefined),
  });
  return {
    async stop() {
      stopping.abort();
      await done;
    },
  };
}
