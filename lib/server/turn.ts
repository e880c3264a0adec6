// A dispatcher turn: every message already waiting, handled in one store
// batch so that they share one commit (group commit), and their replies
// sent only after it. A worker is never promised what is not yet on disk.

import type { Message } from "../protocol/messages.ts";
import type { RouterMessage, RouterSocket } from "../zmtp/router.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/types.ts";
import { routingKey } from "./worker_links.ts";

/**
 * Most messages in one turn: one commit for all of them, but each reply
 * waits for the whole turn.
 */
export const MAX_TURN_MESSAGES = 256;

/** A reply held until the turn's writes are committed. */
export interface PendingReply {
  routingId: Uint8Array;
  message: Message;
  onDelivered?: () => void;
  /** Undoes what the reply would have promised (on the store itself). */
  onUndelivered?: () => Promise<unknown>;
}

/** What handling one message may use during a turn. */
export interface Turn {
  /** The turn's batch: its writes commit together at the end. */
  store: Store;
  reply(reply: PendingReply): void;
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

export interface TurnHandlers {
  store: Store;
  logger: Logger;
  /** Handles one message; what it throws is logged and the turn goes on. */
  handle(message: RouterMessage, turn: Turn): Promise<void>;
  /** Sends a reply at once; false when the peer is gone. */
  send(routingId: Uint8Array, message: Message): Promise<boolean>;
}

/**
 * Handles `messages` in one batch, then sends their replies. Returns false
 * when the batch could not be committed: then nothing of the turn was
 * recorded and no reply went out.
 */
export async function serveTurn(
  messages: RouterMessage[],
  handlers: TurnHandlers,
): Promise<boolean> {
  const { store, logger } = handlers;
  const replies: PendingReply[] = [];
  try {
    await store.batch(async (tx) => {
      const turn: Turn = { store: tx, reply: (reply) => replies.push(reply) };
      for (const message of messages) {
        try {
          await handlers.handle(message, turn);
        } catch (error) {
          // One bad message, or one failing query, must not stop the rest.
          logger.error("message handling failed", {
            peer: routingKey(message.routingId),
            address: message.peerAddress,
            error,
            stack: (error as Error)?.stack,
          });
        }
      }
    });
  } catch (error) {
    logger.error("turn not committed", { messages: messages.length, error });
    return false;
  }
  for (const reply of replies) {
    if (await handlers.send(reply.routingId, reply.message)) {
      reply.onDelivered?.();
    } else {
      await reply.onUndelivered?.().catch((error) =>
        logger.error("undelivered reply not undone", {
          peer: routingKey(reply.routingId),
          type: reply.message.type,
          error,
        })
      );
    }
  }
  return true;
}
