// Reading a turn's messages from the workers' ROUTER: each decoded (a
// malformed one is logged and left out) and the superseded work requests
// marked; and how large a message the ROUTER should take in at all.

import {
  decodeMessage,
  DEFAULT_MAX_PAYLOAD_BYTES,
  type Message,
  ProtocolError,
} from "../protocol/messages.ts";
import type { RouterMessage } from "../zmtp/router.ts";
import type { Logger } from "../log.ts";
import { routingKey } from "./worker_links.ts";

/** How a turn's messages are read. */
export interface TurnMessagesOptions {
  /** The dispatcher's: what a turn logs is written only once it commits. */
  logger: Logger;
  /** Largest payload decoded; default DEFAULT_MAX_PAYLOAD_BYTES (64 KiB). */
  maxPayloadBytes?: number;
}

/** A message of a turn, decoded. */
export interface Received extends RouterMessage {
  message: Message;
  /**
   * False for a work request that a later one from the same connection and
   * name supersedes in this turn.
   */
  latest: boolean;
}

// Room beyond the payload for the frames around it (the empty delimiter,
// stray extra frames): a message a little too big still reaches the decoder,
// which logs it as dropped and keeps the connection.
const FRAMING_SLACK_BYTES = 64 * 1024;

/**
 * The largest message the workers' ROUTER should take in: what the
 * dispatcher decodes, plus framing slack. Anything bigger could only be
 * dropped after being buffered whole, so the ROUTER refuses it from its
 * frame header instead.
 */
export function routerMessageLimit(
  maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES,
): number {
  return maxPayloadBytes + FRAMING_SLACK_BYTES;
}

/**
 * Decodes a turn's messages (a malformed one is logged and left out) and
 * marks the work requests that a later one from the same connection and
 * name supersedes: queued while the server was away (case C03), only the
 * last of them is answered with a build.
 */
export function readTurnMessages(
  messages: RouterMessage[],
  options: TurnMessagesOptions,
): Received[] {
  const received: Received[] = [];
  for (const incoming of messages) {
    const message = decode(incoming, options);
    if (message !== null) {
      received.push({ ...incoming, message, latest: true });
    }
  }
  const seen = new Set<string>();
  for (let i = received.length - 1; i >= 0; i--) {
    const { message, routingId } = received[i];
    if (message.type !== "worker-request-work") continue;
    const key = `${routingKey(routingId)} ${message.name}`;
    if (seen.has(key)) received[i].latest = false;
    seen.add(key);
  }
  return received;
}

/** The message in `incoming`'s frames; null (logged) when there is none. */
function decode(
  incoming: RouterMessage,
  options: TurnMessagesOptions,
): Message | null {
  const { routingId, peerAddress, frames } = incoming;
  const sender = { peer: routingKey(routingId), address: peerAddress };
  if (frames.length !== 2 || frames[0].length !== 0) {
    options.logger.warn("message dropped", {
      ...sender,
      reason:
        `expected an empty delimiter and one payload, got ${frames.length} frames`,
    });
    return null;
  }
  try {
    const message = decodeMessage(frames[1], {
      maxBytes: options.maxPayloadBytes,
    });
    options.logger.debug("message received", { ...sender, type: message.type });
    return message;
  } catch (error) {
    options.logger.warn("message dropped", {
      ...sender,
      type: error instanceof ProtocolError ? error.tag : undefined,
      field: error instanceof ProtocolError ? error.field : undefined,
      reason: error,
    });
    return null;
  }
}
