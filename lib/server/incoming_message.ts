// What a dispatcher handler knows of the worker message it handles: where
// it came from, in which turn, and when. Shared by the dispatcher and the
// modules that handle some of its messages for it.

import type { Message } from "../protocol/messages.ts";
import type { Store } from "../store/types.ts";
import type { Turn } from "./turn.ts";
import type { Sender } from "./turn_work.ts";
import type { WorkerLink } from "./worker_links.ts";

/** The message of type `T`. */
export type MessageOf<T extends Message["type"]> = Extract<
  Message,
  { type: T }
>;

/** Where a message came from, in which turn, and when. */
export interface Incoming {
  turn: Turn;
  /** The turn's store: its writes commit with the turn. */
  store: Store;
  routingId: Uint8Array;
  peerAddress: string;
  /** Log fields naming the connection. */
  sender: Sender;
  link: WorkerLink;
  now: number;
}
