// A dispatcher turn: every message already waiting, handled in one store
// batch so that they share one commit (group commit), and their replies
// sent only after it. A worker is never promised what is not yet on disk.
//
// The batch is optimistic first (no savepoint per write: on PostgreSQL a
// third of the round trips). Should a write fail, nothing of that attempt
// is kept and the turn runs again with a savepoint per write, so that the
// failing message alone loses its write. A batch the database rolled back
// for a conflict with another transaction (a deadlock it broke, a
// serialization failure) is no fault of any message: the turn is served
// again whole, a few times, before any such replay. What the handlers
// gather for the turn's end (see TurnHandlers.finish) is one write per
// kind: all the work requests of a turn share the fate of their one query.

import type { Message } from "../protocol/messages.ts";
import type { RouterMessage, RouterSocket } from "../zmtp/router.ts";
import type { HoldingLogger, Logger } from "../log.ts";
import { type Store, StoreError } from "../store/types.ts";
import { routingKey } from "./worker_links.ts";
import { isDatabaseUnavailable } from "../store/unavailable.ts";
import { isTransactionConflict } from "../store/conflict.ts";

/**
 * Most messages in one turn: one commit for all of them, but each reply
 * waits for the whole turn.
 */
export const MAX_TURN_MESSAGES = 256;

/**
 * Times a turn is served again whole after its batch was rolled back for a
 * conflict (see isTransactionConflict), before its writes are replayed
 * one savepoint each, where a write failing again is lost.
 */
export const MAX_TURN_CONFLICT_RETRIES = 3;

/** A reply held until the turn's writes are committed. */
export interface PendingReply {
  routingId: Uint8Array;
  message: Message;
  onDelivered?: () => void;
  /** Undoes what the reply would have promised (on the store itself). */
  onUndelivered?: () => Promise<unknown>;
  /** Not sent with the turn: its handler answers it later, if at all. */
  withheld?: boolean;
}

/** What handling one message may use during a turn. */
export interface Turn {
  /** The turn's batch: its writes commit together at the end. */
  store: Store;
  reply(reply: PendingReply): void;
  /**
   * Runs `action` once the turn's writes are committed, before its replies
   * go out; never for an attempt that is rolled back.
   */
  afterCommit(action: () => void): void;
}

/**
 * Waits for a message, then takes every other one already waiting, up to
 * {@link MAX_TURN_MESSAGES}.
 * @throws what `router.receive` throws (closed socket, aborted signal)
 */
export async function nextTurn(
  router: RouterSocket,
  signal: AbortSignal,
): Promise<RouterMessage[]> {
  const messages = [await router.receive(signal)];
  while (messages.length < MAX_TURN_MESSAGES) {
    const next = router.tryReceive();
    if (next === undefined) break;
    messages.push(next);
  }
  return messages;
}

/** What a turn needs of a message: where it came from, for the log. */
export type TurnMessage = Pick<RouterMessage, "routingId" | "peerAddress">;

export interface TurnHandlers<M extends TurnMessage = RouterMessage> {
  store: Store;
  logger: Logger;
  /** Handles one message; what it throws is logged and the turn goes on. */
  handle(message: M, turn: Turn): Promise<void>;
  /** Sends a reply at once; false when the peer is gone. */
  send(routingId: Uint8Array, message: Message): Promise<boolean>;
  /**
   * Forgets what handling learnt during an attempt whose writes were
   * rolled back (caches describing them).
   */
  rolledBack(): void;
  /**
   * Called once every message of the turn was handled, in the turn's batch:
   * does what the handlers gathered to do at once (one query for all the
   * work requests rather than one each). What it throws is logged.
   */
  finish?(turn: Turn): Promise<void>;
  /**
   * The logger the handlers write to, if it can hold lines: they are
   * written once their attempt commits, dropped if it does not.
   */
  handlerLog?: HoldingLogger;
}

/**
 * A message whose handling threw (or the turn's finish, without message),
 * logged once its attempt is kept.
 */
interface Failure {
  message?: TurnMessage;
  error: unknown;
}

/** A turn whose batch could not be committed, and why. */
export interface TurnNotCommitted {
  error: unknown;
}

/**
 * Handles `messages` in one batch, then sends their replies. Returns true
 * once committed, else what made the batch fail: then nothing of the turn
 * was recorded and no reply went out, so the same messages may be served
 * again.
 */
export async function serveTurn<M extends TurnMessage>(
  messages: M[],
  handlers: TurnHandlers<M>,
): Promise<true | TurnNotCommitted> {
  const { logger } = handlers;
  let optimistic = true;
  let conflicts = 0;
  let attempt = await attemptTurn(messages, handlers, optimistic);
  while ("error" in attempt) {
    const { error } = attempt;
    if (isTransactionConflict(error) && conflicts < MAX_TURN_CONFLICT_RETRIES) {
      // Served again whole, as it was (optimistic or not): the database
      // undid all of it, and the conflict is likely gone.
      conflicts++;
      handlers.rolledBack();
      logger.warn("turn retried", {
        messages: messages.length,
        retry: conflicts,
        reason: error,
      });
    } else if (
      optimistic && error instanceof StoreError &&
      error.code === "batch-aborted"
    ) {
      optimistic = false;
      handlers.rolledBack();
      logger.info("turn replayed", {
        messages: messages.length,
        reason: error.cause ?? error,
      });
    } else {
      break;
    }
    attempt = await attemptTurn(messages, handlers, optimistic);
  }
  if ("error" in attempt) {
    handlers.rolledBack();
    logger.error("turn not committed", {
      messages: messages.length,
      error: attempt.error,
    });
    return { error: attempt.error };
  }
  for (const action of attempt.committed) {
    try {
      action();
    } catch (error) {
      logger.error("after-commit action failed", { error });
    }
  }
  for (const reply of attempt.replies) {
    if (!reply.withheld) deliver(reply, handlers);
  }
  return true;
}

/**
 * Sends `reply` and acts on its fate once its write settles, without the
 * turn waiting for it: a peer that stops reading its socket would otherwise
 * hold every other worker's replies for its whole send timeout. Replies to
 * one peer still go out in order (its connection queues them as `send` is
 * called); the undoing runs on the store itself, as it may beside a turn.
 */
function deliver<M extends TurnMessage>(
  reply: PendingReply,
  handlers: TurnHandlers<M>,
): void {
  const { logger } = handlers;
  const fields = {
    peer: routingKey(reply.routingId),
    type: reply.message.type,
  };
  (async function settle() {
    let sent: boolean;
    try {
      sent = await handlers.send(reply.routingId, reply.message);
    } catch (error) {
      logger.error("reply not sent", { ...fields, error });
      return;
    }
    if (sent) {
      reply.onDelivered?.();
      return;
    }
    await reply.onUndelivered?.();
  })().catch((error) =>
    logger.error("undelivered reply not undone", { ...fields, error })
  );
}

/**
 * One attempt at a turn: its replies once committed, else what made the
 * batch fail. Handling errors are logged only for a committed attempt.
 */
async function attemptTurn<M extends TurnMessage>(
  messages: M[],
  handlers: TurnHandlers<M>,
  optimistic: boolean,
): Promise<
  { replies: PendingReply[]; committed: (() => void)[] } | { error: unknown }
> {
  const replies: PendingReply[] = [];
  const committed: (() => void)[] = [];
  const failures: Failure[] = [];
  handlers.handlerLog?.hold();
  try {
    await handlers.store.batch(async (tx) => {
      const turn: Turn = {
        store: tx,
        reply: (reply) => replies.push(reply),
        afterCommit: (action) => committed.push(action),
      };
      for (const message of messages) {
        try {
          await handlers.handle(message, turn);
        } catch (error) {
          // One bad message, or one failing query, must not stop the rest.
          failures.push({ message, error });
        }
      }
      try {
        await handlers.finish?.(turn);
      } catch (error) {
        failures.push({ error });
      }
      // A write the database refused as a whole (read-only, full, gone)
      // is no fault of its message: the turn is undone, to be served again
      // once the database takes writes, rather than keep the rest.
      const unavailable = failures.find((f) => isDatabaseUnavailable(f.error));
      if (unavailable !== undefined) throw unavailable.error;
    }, { optimistic });
  } catch (error) {
    handlers.handlerLog?.drop();
    return { error };
  }
  handlers.handlerLog?.release();
  for (const { message, error } of failures) {
    const stack = (error as Error)?.stack;
    if (message === undefined) {
      handlers.logger.error("turn finish failed", { error, stack });
      continue;
    }
    handlers.logger.error("message handling failed", {
      peer: routingKey(message.routingId),
      address: message.peerAddress,
      error,
      stack,
    });
  }
  return { replies, committed };
}
