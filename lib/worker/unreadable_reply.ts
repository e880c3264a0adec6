// A work reply the worker could not decode, kept as far as it could be
// read: a build whose derivation was read is refused rather than dropped,
// and one whose request id was read can still end the wait for it.

import { ProtocolError } from "../protocol/messages.ts";

/** What a worker could read of a `build` or `no-build` it cannot decode. */
export interface UnreadableReply {
  type: "unreadable-reply";
  /** The message's tag: "build" or "no-build". */
  tag: string;
  /** A build's derivation, when it could be read: the build is refusable. */
  drv?: string;
  requestId?: number;
  /** The field to blame, or the tag when none is named. */
  field: string;
  /** The decoding error's message, which quotes the offending value. */
  reason: string;
}

/** An unreadable build whose derivation is known: it can be refused. */
export type RefusableBuild = UnreadableReply & { drv: string };

/**
 * What `error`, thrown by decodeMessage, leaves of a work reply; null for
 * any other message (or none), which only the log can tell of.
 */
export function unreadableReply(error: unknown): UnreadableReply | null {
  if (
    !(error instanceof ProtocolError) ||
    (error.tag !== "build" && error.tag !== "no-build")
  ) return null;
  return {
    type: "unreadable-reply",
    tag: error.tag,
    ...(error.drv === undefined ? {} : { drv: error.drv }),
    ...(error.requestId === undefined ? {} : { requestId: error.requestId }),
    field: error.field ?? error.tag,
    reason: error.message,
  };
}

/** Whether `reply` names its build, which can then be refused. */
export function isRefusable(reply: UnreadableReply): reply is RefusableBuild {
  return reply.drv !== undefined;
}
